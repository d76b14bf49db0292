// The CPU accelerator's bodies for the row norms (LayerNorm, RMSNorm: forward, input backward, parameter
// gradients), reached through [External] so that they run as plain .NET Vector256 code. Measured reason:
// seven LayerNorms per tiny-preset step took ~24 ms forward + backward through the ArrayView indexer, ~5% of
// the step once attention had its own body. Same formulas as the portable kernels in Norms.cs (the definition);
// the row sums are taken in eight lanes (rounding differs), the parameter column sums in the same row order
// (identical bits). Batch norm's bodies sweep the rows of a chunk of columns, eight columns per vector, each lane doing
// one column's portable arithmetic in the portable order (identical bits); measured reason: the portable kernels read one
// column per item, a stride of C floats per access, and took 16 % of a PEER layer step (d = 256, h*dq = 2048, T = 1024).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD row-norm bodies over CPU memory and the kernels that call them, which <see cref="NormKernels"/> loads in place
/// of its kernels on the CPU accelerator with 256-bit vectors (the bodies cannot compile for GPUs).</summary>
internal static class NormsCpu
{
    // x: [N, C], weight, bias, runningMean, runningVar: [C] -> y: [N, C], mean, rstd: [C]; worker w's chunks of columns
    internal static void BatchForwardKernel(Index1D w, Work work, BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> runningMean, ArrayView<float> runningVar, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) BatchForward(s, x, weight, bias, runningMean, runningVar, y, mean, rstd, st, work.End(st));
    }

    // x, dy: [N, C], weight, mean, rstd: [C] -> dx: [N, C], dweight, dbias: [C]; worker w's chunks of columns
    internal static void BatchBackwardKernel(Index1D w, Work work, BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, ArrayView<float> dWeight, ArrayView<float> dBias)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) BatchBackward(s, x, weight, dy, mean, rstd, dx, dWeight, dBias, st, work.End(st));
    }

    /// <summary>Columns <c>[from, to)</c> of the batch-norm forward (see NormKernels.BatchForwardKernel); mean and rstd hold the
    /// columns' running sums while they are taken. Cols &gt; 0 (rows may be 0 in evaluation).</summary>
    [External("peer_batch_norm_forward_cpu")]
    public static void BatchForward(BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias, ArrayView<float> runningMean,
        ArrayView<float> runningVar, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int from, int to)
    {
        int n = s.Rows, c = s.Cols, k = to - from;
        ref float x0 = ref Unsafe.Add(ref CpuView.First(x), from), y0 = ref Unsafe.Add(ref CpuView.First(y), from), mu = ref Unsafe.Add(ref mean[0], from);
        ref float rs = ref Unsafe.Add(ref rstd[0], from), wt = ref Unsafe.Add(ref weight[0], from), b = ref Unsafe.Add(ref bias[0], from);
        ref float rm = ref Unsafe.Add(ref runningMean[0], from), rv = ref Unsafe.Add(ref runningVar[0], from);
        if (s.Training != 0)
        {
            Zero(ref mu, k);
            for (int r = 0; r < n; r++) AddInto(ref mu, ref Unsafe.Add(ref x0, (nint)r * c), k);
            for (int j = 0; j < k; j++) Unsafe.Add(ref mu, j) /= n;
            Zero(ref rs, k); // the variance's sums, for now
            for (int r = 0; r < n; r++) AddSquaredDeviation(ref rs, ref Unsafe.Add(ref x0, (nint)r * c), ref mu, k);
            float m = s.Momentum;
            for (int j = 0; j < k; j++)
            {
                float var = Unsafe.Add(ref rs, j) / n;
                Unsafe.Add(ref rm, j) = (1f - m) * Unsafe.Add(ref rm, j) + m * Unsafe.Add(ref mu, j);
                Unsafe.Add(ref rv, j) = (1f - m) * Unsafe.Add(ref rv, j) + m * var * n / (n - 1);
                Unsafe.Add(ref rs, j) = ILGPU.Algorithms.XMath.Rsqrt(var + s.Eps);
            }
        }
        else
            for (int j = 0; j < k; j++)
            {
                Unsafe.Add(ref mu, j) = Unsafe.Add(ref rm, j);
                Unsafe.Add(ref rs, j) = ILGPU.Algorithms.XMath.Rsqrt(Unsafe.Add(ref rv, j) + s.Eps);
            }
        for (int r = 0; r < n; r++)
        {
            ref float xr = ref Unsafe.Add(ref x0, (nint)r * c), yr = ref Unsafe.Add(ref y0, (nint)r * c);
            int j = 0;
            for (; j <= k - 8; j += 8)
            {
                var v = (Vector256.LoadUnsafe(ref xr, (nuint)j) - Vector256.LoadUnsafe(ref mu, (nuint)j)) * Vector256.LoadUnsafe(ref rs, (nuint)j);
                (v * Vector256.LoadUnsafe(ref wt, (nuint)j) + Vector256.LoadUnsafe(ref b, (nuint)j)).StoreUnsafe(ref yr, (nuint)j);
            }
            for (; j < k; j++)
                Unsafe.Add(ref yr, j) = (Unsafe.Add(ref xr, j) - Unsafe.Add(ref mu, j)) * Unsafe.Add(ref rs, j) * Unsafe.Add(ref wt, j) + Unsafe.Add(ref b, j);
        }
    }

    /// <summary>Columns <c>[from, to)</c> of the batch-norm backward (see NormKernels.BatchBackwardKernel). Cols &gt; 0.</summary>
    [External("peer_batch_norm_backward_cpu")]
    public static void BatchBackward(BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> dx, ArrayView<float> dWeight, ArrayView<float> dBias, int from, int to)
    {
        int n = s.Rows, c = s.Cols, k = to - from;
        ref float x0 = ref Unsafe.Add(ref CpuView.First(x), from), g0 = ref Unsafe.Add(ref CpuView.First(dy), from), dx0 = ref Unsafe.Add(ref CpuView.First(dx), from);
        ref float mu = ref Unsafe.Add(ref mean[0], from), rs = ref Unsafe.Add(ref rstd[0], from), wt = ref Unsafe.Add(ref weight[0], from);
        ref float sumG = ref Unsafe.Add(ref dBias[0], from), sumGx = ref Unsafe.Add(ref dWeight[0], from);
        Zero(ref sumG, k);
        Zero(ref sumGx, k);
        for (int r = 0; r < n; r++)
        {
            ref float xr = ref Unsafe.Add(ref x0, (nint)r * c), gr = ref Unsafe.Add(ref g0, (nint)r * c);
            int j = 0;
            for (; j <= k - 8; j += 8)
            {
                var g = Vector256.LoadUnsafe(ref gr, (nuint)j);
                (Vector256.LoadUnsafe(ref sumG, (nuint)j) + g).StoreUnsafe(ref sumG, (nuint)j);
                var gx = g * (Vector256.LoadUnsafe(ref xr, (nuint)j) - Vector256.LoadUnsafe(ref mu, (nuint)j)) * Vector256.LoadUnsafe(ref rs, (nuint)j);
                (Vector256.LoadUnsafe(ref sumGx, (nuint)j) + gx).StoreUnsafe(ref sumGx, (nuint)j);
            }
            for (; j < k; j++)
            {
                float g = Unsafe.Add(ref gr, j);
                Unsafe.Add(ref sumG, j) += g;
                Unsafe.Add(ref sumGx, j) += g * (Unsafe.Add(ref xr, j) - Unsafe.Add(ref mu, j)) * Unsafe.Add(ref rs, j);
            }
        }
        var pool = System.Buffers.ArrayPool<float>.Shared;
        float[] meanG = pool.Rent(k), meanGx = pool.Rent(k), scale = pool.Rent(k);
        try
        {
            for (int j = 0; j < k; j++)
            {
                meanG[j] = s.Training != 0 ? Unsafe.Add(ref sumG, j) / n : 0f;
                meanGx[j] = s.Training != 0 ? Unsafe.Add(ref sumGx, j) / n : 0f;
                scale[j] = Unsafe.Add(ref rs, j) * Unsafe.Add(ref wt, j);
            }
            ref float mg = ref meanG[0], mgx = ref meanGx[0], sc = ref scale[0];
            for (int r = 0; r < n; r++)
            {
                ref float xr = ref Unsafe.Add(ref x0, (nint)r * c), gr = ref Unsafe.Add(ref g0, (nint)r * c), dr = ref Unsafe.Add(ref dx0, (nint)r * c);
                int j = 0;
                for (; j <= k - 8; j += 8)
                {
                    var xh = (Vector256.LoadUnsafe(ref xr, (nuint)j) - Vector256.LoadUnsafe(ref mu, (nuint)j)) * Vector256.LoadUnsafe(ref rs, (nuint)j);
                    var inner = Vector256.LoadUnsafe(ref gr, (nuint)j) - Vector256.LoadUnsafe(ref mg, (nuint)j) - xh * Vector256.LoadUnsafe(ref mgx, (nuint)j);
                    (Vector256.LoadUnsafe(ref sc, (nuint)j) * inner).StoreUnsafe(ref dr, (nuint)j);
                }
                for (; j < k; j++)
                {
                    float xh = (Unsafe.Add(ref xr, j) - Unsafe.Add(ref mu, j)) * Unsafe.Add(ref rs, j);
                    Unsafe.Add(ref dr, j) = Unsafe.Add(ref sc, j) * (Unsafe.Add(ref gr, j) - Unsafe.Add(ref mg, j) - xh * Unsafe.Add(ref mgx, j));
                }
            }
        }
        finally
        {
            pool.Return(meanG);
            pool.Return(meanGx);
            pool.Return(scale);
        }
    }

    static void Zero(ref float a, int n)
    {
        for (int j = 0; j < n; j++) Unsafe.Add(ref a, j) = 0f;
    }

    // acc += x, element by element.
    static void AddInto(ref float acc, ref float x, int n)
    {
        int j = 0;
        for (; j <= n - 8; j += 8) (Vector256.LoadUnsafe(ref acc, (nuint)j) + Vector256.LoadUnsafe(ref x, (nuint)j)).StoreUnsafe(ref acc, (nuint)j);
        for (; j < n; j++) Unsafe.Add(ref acc, j) += Unsafe.Add(ref x, j);
    }

    // acc += (x - mu)^2, element by element (a difference, a product, a sum, each rounded).
    static void AddSquaredDeviation(ref float acc, ref float x, ref float mu, int n)
    {
        int j = 0;
        for (; j <= n - 8; j += 8)
        {
            var dv = Vector256.LoadUnsafe(ref x, (nuint)j) - Vector256.LoadUnsafe(ref mu, (nuint)j);
            (Vector256.LoadUnsafe(ref acc, (nuint)j) + dv * dv).StoreUnsafe(ref acc, (nuint)j);
        }
        for (; j < n; j++)
        {
            float dv = Unsafe.Add(ref x, j) - Unsafe.Add(ref mu, j);
            Unsafe.Add(ref acc, j) += dv * dv;
        }
    }

    // x: [rows, C], weight, bias: [C] -> y: [rows, C], mean, rstd: [rows]; one index per worker, whose chunks of rows the body processes
    internal static void RowForwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) RowForward(s, x, weight, bias, y, mean, rstd, st, work.End(st));
    }

    // x, dy: [rows, C], weight: [C], mean, rstd: [rows] -> dx: [rows, C]; worker w's chunks of rows
    internal static void RowBackwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) RowBackward(s, x, weight, dy, mean, rstd, dx, st, work.End(st));
    }

    // x, dy: [rows, C], mean, rstd: [rows] -> dweight, dbias: [C]; worker w's chunks of columns
    internal static void RowParamsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> dWeight, ArrayView<float> dBias, int rows)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) RowParams(x, dy, mean, rstd, dWeight, dBias, rows, work.N, st, work.End(st));
    }

    /// <summary>Rows <c>[start, end)</c> of the row-norm forward (see <see cref="NormKernels"/>). Rows, Cols &gt; 0.</summary>
    [External("peer_row_norm_forward_cpu")]
    public static void RowForward(NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int start, int end)
    {
        int c = s.Cols;
        ref float x0 = ref x[0], w0 = ref weight[0], b0 = ref bias[0], y0 = ref y[0];
        var zero = Vector256<float>.Zero;
        for (int r = start; r < end; r++)
        {
            ref float xr = ref Unsafe.Add(ref x0, (nint)r * c);
            ref float yr = ref Unsafe.Add(ref y0, (nint)r * c);
            float mu = 0f;
            if (s.Center != 0)
            {
                var acc = zero;
                int j = 0;
                for (; j <= c - 8; j += 8) acc += Vector256.LoadUnsafe(ref xr, (nuint)j);
                mu = Vector256.Sum(acc);
                for (; j < c; j++) mu += Unsafe.Add(ref xr, j);
                mu /= c;
            }
            var m = Vector256.Create(mu);
            var sq = zero;
            int k = 0;
            for (; k <= c - 8; k += 8)
            {
                var dv = Vector256.LoadUnsafe(ref xr, (nuint)k) - m;
                sq += dv * dv;
            }
            float var = Vector256.Sum(sq);
            for (; k < c; k++) { float dv = Unsafe.Add(ref xr, k) - mu; var += dv * dv; }
            float rs = 1f / MathF.Sqrt(var / c + s.Eps);
            mean[r] = mu;
            rstd[r] = rs;
            var rv = Vector256.Create(rs);
            bool hasBias = s.HasBias != 0;
            int i = 0;
            for (; i <= c - 8; i += 8)
            {
                var v = (Vector256.LoadUnsafe(ref xr, (nuint)i) - m) * rv * Vector256.LoadUnsafe(ref w0, (nuint)i);
                (hasBias ? v + Vector256.LoadUnsafe(ref b0, (nuint)i) : v).StoreUnsafe(ref yr, (nuint)i);
            }
            for (; i < c; i++)
                Unsafe.Add(ref yr, i) = (Unsafe.Add(ref xr, i) - mu) * rs * Unsafe.Add(ref w0, i) + (hasBias ? Unsafe.Add(ref b0, i) : 0f);
        }
    }

    /// <summary>Rows <c>[start, end)</c> of the row-norm input backward (see <see cref="NormKernels"/>). Rows, Cols &gt; 0.</summary>
    [External("peer_row_norm_backward_cpu")]
    public static void RowBackward(NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, int start, int end)
    {
        int c = s.Cols;
        ref float x0 = ref x[0], w0 = ref weight[0], dy0 = ref dy[0], dx0 = ref dx[0];
        for (int r = start; r < end; r++)
        {
            ref float xr = ref Unsafe.Add(ref x0, (nint)r * c);
            ref float gr = ref Unsafe.Add(ref dy0, (nint)r * c);
            ref float dxr = ref Unsafe.Add(ref dx0, (nint)r * c);
            float mu = mean[r], rs = rstd[r];
            Vector256<float> m = Vector256.Create(mu), rv = Vector256.Create(rs), sg = default, sgx = default;
            int j = 0;
            for (; j <= c - 8; j += 8)
            {
                var g = Vector256.LoadUnsafe(ref gr, (nuint)j) * Vector256.LoadUnsafe(ref w0, (nuint)j);
                sg += g;
                sgx += g * (Vector256.LoadUnsafe(ref xr, (nuint)j) - m) * rv;
            }
            float sumG = Vector256.Sum(sg), sumGx = Vector256.Sum(sgx);
            for (; j < c; j++)
            {
                float g = Unsafe.Add(ref gr, j) * Unsafe.Add(ref w0, j);
                sumG += g;
                sumGx += g * (Unsafe.Add(ref xr, j) - mu) * rs;
            }
            float meanG = s.Center != 0 ? sumG / c : 0f, meanGx = sumGx / c;
            Vector256<float> mg = Vector256.Create(meanG), mgx = Vector256.Create(meanGx);
            int i = 0;
            for (; i <= c - 8; i += 8)
            {
                var xh = (Vector256.LoadUnsafe(ref xr, (nuint)i) - m) * rv;
                (rv * (Vector256.LoadUnsafe(ref gr, (nuint)i) * Vector256.LoadUnsafe(ref w0, (nuint)i) - mg - xh * mgx)).StoreUnsafe(ref dxr, (nuint)i);
            }
            for (; i < c; i++)
            {
                float xh = (Unsafe.Add(ref xr, i) - mu) * rs;
                Unsafe.Add(ref dxr, i) = rs * (Unsafe.Add(ref gr, i) * Unsafe.Add(ref w0, i) - meanG - xh * meanGx);
            }
        }
    }

    /// <summary>Columns <c>[start, end)</c> of the parameter gradients (see <see cref="NormKernels"/>): each column summed over
    /// the rows in row order, eight columns at a time, with the portable kernel's operations (no FMA), so the bits match it
    /// (zeros when there are no rows). Cols &gt; 0.</summary>
    [External("peer_row_norm_params_cpu")]
    public static void RowParams(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> dWeight, ArrayView<float> dBias, int rows, int cols, int start, int end)
    {
        ref float x0 = ref CpuView.First(x), dy0 = ref CpuView.First(dy), mean0 = ref mean[0], rstd0 = ref rstd[0], dw0 = ref dWeight[0], db0 = ref dBias[0];
        int j = start;
        for (; j <= end - 8; j += 8)
        {
            Vector256<float> dw = default, db = default;
            for (int r = 0; r < rows; r++)
            {
                nuint o = (nuint)((nint)r * cols + j);
                var g = Vector256.LoadUnsafe(ref dy0, o);
                dw += g * (Vector256.LoadUnsafe(ref x0, o) - Vector256.Create(Unsafe.Add(ref mean0, r))) * Vector256.Create(Unsafe.Add(ref rstd0, r));
                db += g;
            }
            dw.StoreUnsafe(ref dw0, (nuint)j);
            db.StoreUnsafe(ref db0, (nuint)j);
        }
        for (; j < end; j++)
        {
            float dw = 0f, db = 0f;
            for (int r = 0; r < rows; r++)
            {
                nint o = (nint)r * cols + j;
                float g = Unsafe.Add(ref dy0, o);
                dw += g * (Unsafe.Add(ref x0, o) - Unsafe.Add(ref mean0, r)) * Unsafe.Add(ref rstd0, r);
                db += g;
            }
            Unsafe.Add(ref dw0, j) = dw;
            Unsafe.Add(ref db0, j) = db;
        }
    }
}
