// Matrix multiplication with optional transposed operands and a batch dimension:
// C[b] = op(A[b]) @ op(B[b]), op = identity or transpose. The portable kernel is the definition
// (one index per block of output rows) and runs everywhere. Chosen per accelerator type beside it, where the
// launcher is built: on devices that chunk work over CPU cores under OpenCL (PoCL) a row kernel in i-k-j order that
// streams contiguous rows of B; on GPUs a shared-memory tiled kernel; on the CPU accelerator (Device.Choose) the SIMD
// micro-kernel of Cpu/MatMulCpu.cs (the portable kernel reaches ~2 GFLOP/s there, the micro-kernel ~60: docs/ilgpu.md).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Matrix product <c>op(a) @ op(b)</c> for rank-2 operands, or batched over the leading dimension for rank-3 operands
    /// (a rank-2 operand is broadcast over the batch). With <paramref name="transA"/> a is read as <c>[.., K, M]</c>,
    /// with <paramref name="transB"/> b as <c>[.., N, K]</c>. Result <c>[.., M, N]</c>. Differentiable.
    /// </summary>
    /// <exception cref="ArgumentException">Ranks other than 2 or 3, inner dimensions that differ, or batch sizes that differ.</exception>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        Check.DType(a, DType.F32, nameof(a));
        Check.DType(b, DType.F32, nameof(b));
        Check.SameDevice(a, b, nameof(b));
        Check.That(a.Rank is 2 or 3, nameof(a), a.Shape, "a rank-2 [M, K] or rank-3 [batch, M, K] tensor");
        Check.That(b.Rank is 2 or 3, nameof(b), b.Shape, "a rank-2 [K, N] or rank-3 [batch, K, N] tensor");
        int ba = a.Rank == 3 ? a.Shape[0] : 1, bb = b.Rank == 3 ? b.Shape[0] : 1;
        Check.That(a.Rank == 2 || b.Rank == 2 || ba == bb, nameof(b), b.Shape, $"batch size {ba} (as a)");
        int batch = Math.Max(ba, bb);
        int ar = a.Shape[^2], ac = a.Shape[^1], br = b.Shape[^2], bc = b.Shape[^1];
        int m = transA ? ac : ar, k = transA ? ar : ac;
        int kb = transB ? bc : br, n = transB ? br : bc;
        Check.That(k == kb, nameof(b), b.Shape, $"inner dimension {k} to match a {Tensor.FormatShape(a.Shape)}{(transA ? " (transposed)" : "")}{(transB ? " (b transposed)" : "")}");
        bool batched = a.Rank == 3 || b.Rank == 3;
        var d = a.Device;
        var c = Tensor.Empty(d, DType.F32, batched ? [batch, m, n] : [m, n]);
        MatMulInto(a, b, c, transA, transB, batch, m, n, k, ba > 1 || (a.Rank == 3), bb > 1 || (b.Rank == 3), accumulate: false);

        if (d.Tape.Needs(a, b))
        {
            d.Tape.Record(c, [a, b], g =>
            {
                if (a.RequiresGrad)
                {
                    // dA = g @ op(B)^T  (or its transpose when A was transposed)
                    var ga = transA ? MatMul(b, g, transB, true) : MatMul(g, b, false, !transB);
                    Tape.Accumulate(a, a.Rank == 2 && ga.Rank == 3 ? SumBatch(ga) : ga);
                }
                if (b.RequiresGrad)
                {
                    // dB = op(A)^T @ g  (or its transpose when B was transposed)
                    var gb = transB ? MatMul(g, a, true, transA) : MatMul(a, g, !transA, false);
                    Tape.Accumulate(b, b.Rank == 2 && gb.Rank == 3 ? SumBatch(gb) : gb);
                }
            });
        }
        return c;
    }

    // x: [batch, r, c] -> [r, c], summed over the batch (for gradients of an operand broadcast over the batch)
    static Tensor SumBatch(Tensor x)
    {
        var y = Tensor.Zeros(x.Device, x.Shape[1], x.Shape[2]);
        int plane = x.Shape[1] * x.Shape[2];
        using var flat = x.Detach();
        var rows = flat.Reshape(x.Shape[0], plane);
        var w = x.Device.Split(plane);
        x.Device.Get(static d => new MatMulKernels(d)).SumRows(w.Workers, w, rows.View, y.View, x.Shape[0]);
        rows.Dispose();
        x.Dispose();
        return y;
    }

    /// <summary>Launches <c>c (+)= op(a) @ op(b)</c> with shapes already validated by the caller.</summary>
    internal static void MatMulInto(Tensor a, Tensor b, Tensor c, bool transA, bool transB, int batch, int m, int n, int k, bool aBatched, bool bBatched, bool accumulate)
    {
        if (c.Length == 0) return;
        var d = a.Device;
        var shape = new MatMulShape(m, n, k, transA, transB, aBatched ? m * k : 0, bBatched ? k * n : 0, accumulate);
        var kernels = d.Get(static d => new MatMulKernels(d));
        if (kernels.Tiled)
        {
            int t = MatMulTiledKernels.Tile;
            var grid = new Index3D((n + t - 1) / t, (m + t - 1) / t, batch);
            d.Get(static d => new MatMulTiledKernels(d)).Tiled((grid, new Index3D(t, t, 1)), shape, a.View, b.View, c.View);
            return;
        }
        var w = d.Split(batch * m);
        kernels.Product(w.Workers, w, shape, a.View, b.View, c.View);
    }
}

/// <summary>Dimensions and layout of one (batched) matrix product, passed to the kernels.</summary>
internal readonly struct MatMulShape(int m, int n, int k, bool transA, bool transB, int strideA, int strideB, bool accumulate)
{
    public readonly int M = m, N = n, K = k;
    public readonly int TransA = transA ? 1 : 0, TransB = transB ? 1 : 0;
    public readonly int StrideA = strideA, StrideB = strideB;
    public readonly int Accumulate = accumulate ? 1 : 0;
}

/// <summary>Kernels of the matmul family, chosen once per device.</summary>
internal sealed class MatMulKernels
{
    /// <summary>The product this device runs, one index per chunk of output rows (unless <see cref="Tiled"/>).</summary>
    public readonly Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Product;
    /// <summary>Whether this device runs <see cref="MatMulTiledKernels"/> instead of <see cref="Product"/> (GPUs).</summary>
    public readonly bool Tiled;
    /// <summary>Which kernel the device runs, for reports: "cpu 512-bit", "cpu 256-bit", "rows", "tiled" or "portable".</summary>
    public readonly string Chosen;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> SumRows;

    public MatMulKernels(Device d)
    {
        // By accelerator type: GPUs whose groups hold Tile^2 threads run the tiled kernel, devices that chunk work over CPU
        // cores under OpenCL (PoCL) the row kernel, the rest the definition; on the CPU accelerator Device.Choose swaps in
        // the SIMD micro-kernel, 512 bits wide where the device allows it.
        Tiled = !d.ChunksWork && d.MaxGroupSize >= MatMulTiledKernels.Tile * MatMulTiledKernels.Tile;
        bool rows = d.ChunksWork && d.Backend != Backend.Cpu;
        var product = d.Choose(d.Choose(rows ? RowsKernel : PortableKernel, MatMulCpu.Rows256Kernel, 256), MatMulCpu.Rows512Kernel, 512);
        Product = d.LoadKernel(product);
        Chosen = product == MatMulCpu.Rows512Kernel ? "cpu 512-bit" : product == MatMulCpu.Rows256Kernel ? "cpu 256-bit"
            : Tiled ? "tiled" : rows ? "rows" : "portable";
        SumRows = d.LoadKernel(SumRowsKernel);
    }

    // a: [batch?, M, K] (or [K, M]), b: [batch?, K, N] (or [N, K]) -> c: [batch, M, N]; one work item per output row
    internal static void PortableKernel(Index1D w, Work work, MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
        {
            for (int row = st, end = work.End(st); row < end; row++)
            {
                int bi = row / s.M, i = row - bi * s.M;
                int cOff = row * s.N;
                // op(A)[i, p] = a[aRow + p * ap], op(B)[p, j] = b[bOff + p * bp + j * bj]
                int aRow = bi * s.StrideA + (s.TransA == 0 ? i * s.K : i), ap = s.TransA == 0 ? 1 : s.M;
                int bOff = bi * s.StrideB, bp = s.TransB == 0 ? s.N : 1, bj = s.TransB == 0 ? 1 : s.K;
                for (int j = 0; j < s.N; j++)
                {
                    float acc = 0f;
                    for (int p = 0; p < s.K; p++) acc += a[aRow + p * ap] * b[bOff + p * bp + j * bj];
                    c[cOff + j] = s.Accumulate != 0 ? c[cOff + j] + acc : acc;
                }
            }
        }
    }

    // a, b, c as PortableKernel. For devices that chunk work over CPU cores (PoCL): with B not transposed, each row of C is
    // accumulated over p (i-k-j order) while streaming contiguous rows of B, a loop the OpenCL compiler vectorises over j
    // (the j-outer order of PortableKernel reads B down a column); with B transposed, rows of op(A) and B are both
    // contiguous (when A is not transposed), so it keeps one dot product per element. Same sums, another rounding order.
    internal static void RowsKernel(Index1D w, Work work, MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
        {
            for (int row = st, end = work.End(st); row < end; row++)
            {
                int bi = row / s.M, i = row - bi * s.M;
                int cOff = row * s.N;
                int aRow = bi * s.StrideA + (s.TransA == 0 ? i * s.K : i), ap = s.TransA == 0 ? 1 : s.M;
                int bOff = bi * s.StrideB;
                if (s.TransB == 0)
                {
                    if (s.Accumulate == 0)
                        for (int j = 0; j < s.N; j++) c[cOff + j] = 0f;
                    for (int p = 0; p < s.K; p++)
                    {
                        float av = a[aRow + p * ap];
                        int bRow = bOff + p * s.N;
                        for (int j = 0; j < s.N; j++) c[cOff + j] += av * b[bRow + j];
                    }
                }
                else
                {
                    for (int j = 0; j < s.N; j++)
                    {
                        int bRow = bOff + j * s.K;
                        float acc = 0f;
                        for (int p = 0; p < s.K; p++) acc += a[aRow + p * ap] * b[bRow + p];
                        c[cOff + j] = s.Accumulate != 0 ? c[cOff + j] + acc : acc;
                    }
                }
            }
        }
    }

    // x: [rows, cols] -> y: [cols] = sum over rows (deterministic: one column per item)
    static void SumRowsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, int rows)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, end = work.End(st); j < end; j++)
            {
                float acc = 0f;
                for (int r = 0; r < rows; r++) acc += x[r * work.N + j];
                y[j] = acc;
            }
    }
}

/// <summary>Shared-memory tiled matmul for GPU backends: a Tile x Tile group computes a Tile x Tile block of C, staging
/// Tile-wide slices of op(A) and op(B) in shared memory. On the CPU accelerator its barriers make it very slow
/// (docs/ilgpu.md), so it is never chosen there; tests run it there on small sizes with a device of Tile^2 threads.</summary>
internal sealed class MatMulTiledKernels
{
    public const int Tile = 16;
    public readonly Action<KernelConfig, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Tiled;

    public MatMulTiledKernels(Device d) =>
        Tiled = d.LoadGroupedKernel<Action<KernelConfig, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>>(TiledKernel);

    // grid (ceil(N/T), ceil(M/T), batch) x group (T, T): c[bi, row, col] (+)= sum_p op(a)[row, p] op(b)[p, col]
    static void TiledKernel(MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        var sa = SharedMemory.Allocate<float>(Tile * Tile);
        var sb = SharedMemory.Allocate<float>(Tile * Tile);
        int tx = Group.IdxX, ty = Group.IdxY;
        int col = Grid.IdxX * Tile + tx, row = Grid.IdxY * Tile + ty, bi = Grid.IdxZ;
        int aOff = bi * s.StrideA, bOff = bi * s.StrideB;
        float acc = 0f;
        for (int t0 = 0; t0 < s.K; t0 += Tile)
        {
            int p = t0 + tx, q = t0 + ty;
            sa[ty * Tile + tx] = row < s.M && p < s.K ? (s.TransA == 0 ? a[aOff + row * s.K + p] : a[aOff + p * s.M + row]) : 0f;
            sb[ty * Tile + tx] = q < s.K && col < s.N ? (s.TransB == 0 ? b[bOff + q * s.N + col] : b[bOff + col * s.K + q]) : 0f;
            Group.Barrier();
            for (int kk = 0; kk < Tile; kk++) acc += sa[ty * Tile + kk] * sb[kk * Tile + tx];
            Group.Barrier();
        }
        if (row < s.M && col < s.N)
        {
            int ci = (bi * s.M + row) * s.N + col;
            c[ci] = s.Accumulate != 0 ? c[ci] + acc : acc;
        }
    }
}
