// The CPU accelerator's row-wise AdamW body, reached from an ILGPU kernel through [External] (the portable kernel pays
// the view indexer's checks on every access: a sparse step over 16384 of [65536, 256] ran at 0.25 GB/s portable
// against 2.20 GB/s here, medians of 15 interleaved on the loaded 2-core machine, `Peer.Bench -- kernels --quick
// --repeats 15`). Same IEEE operations in the same order as the portable kernel (the row's sum of squares as
// RowWiseAdagradCpu.Squares, no FMA), so the results are bit-identical (RowWiseCpuTests hold it to the portable
// kernel). Never compiled for GPUs.
using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Row-wise AdamW over CPU memory and the kernels that call it, which <see cref="RowAdamKernels"/> loads in place of its
/// portable kernels on the CPU accelerator. A first-moment view of length 0 stands for "no first moment" (beta1 = 0).</summary>
internal static unsafe class RowWiseAdamWCpu
{
    // p, g, m: [rows, cols], v: [rows] (work.N = rows); chunks of rows through Dense
    internal static void DenseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, int cols, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Dense(p, g, m, v, cols, a, s, work.End(s));
    }

    // as DenseKernel with m = g
    internal static void DenseNoMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> v, int cols, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Dense(p, g, default, v, cols, a, s, work.End(s));
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R); only the listed rows change; chunks through Sparse
    internal static void SparseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Sparse(rows, values, cols, p, m, v, a, s, work.End(s));
    }

    // as SparseKernel with m = g
    internal static void SparseNoMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Sparse(rows, values, cols, p, default, v, a, s, work.End(s));
    }

    /// <summary>Rows <c>[start, end)</c> of the dense update; <paramref name="m"/> empty: no first moment.</summary>
    [External("peer_rowwise_adamw_cpu_dense")]
    public static void Dense(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, int cols, AdamArgs a, int start, int end)
    {
        if (end <= start) return;
        float* pp = RowWiseAdagradCpu.Ptr(p), pg = RowWiseAdagradCpu.Ptr(g), pv = RowWiseAdagradCpu.Ptr(v);
        float* pm = m.Length > 0 ? RowWiseAdagradCpu.Ptr(m) : null;
        for (int r = start; r < end; r++)
        {
            long at = (long)r * cols;
            Row(pp + at, pm is null ? null : pm + at, pv + r, pg + at, cols, a);
        }
    }

    /// <summary>Listed rows <c>[start, end)</c> of the sparse update; <paramref name="m"/> empty: no first moment.</summary>
    [External("peer_rowwise_adamw_cpu_sparse")]
    public static void Sparse(ArrayView<int> rows, ArrayView<float> values, int cols, ArrayView<float> p, ArrayView<float> m, ArrayView<float> v,
        AdamArgs a, int start, int end)
    {
        if (end <= start) return;
        int* pr = (int*)Unsafe.AsPointer(ref rows[0]);
        float* pg = RowWiseAdagradCpu.Ptr(values), pp = RowWiseAdagradCpu.Ptr(p), pv = RowWiseAdagradCpu.Ptr(v);
        float* pm = m.Length > 0 ? RowWiseAdagradCpu.Ptr(m) : null;
        for (int i = start; i < end; i++)
        {
            if ((uint)pr[i] >= (uint)v.IntLength) continue; // a row outside p (padding, RowSparseGrad.NoRow) changes nothing
            long at = (long)pr[i] * cols;
            Row(pp + at, pm is null ? null : pm + at, pv + pr[i], pg + (long)i * cols, cols, a);
        }
    }

    // One row: the portable kernel's Row (m null: RowNoMomentum), vectorised.
    static void Row(float* p, float* m, float* v, float* g, int cols, AdamArgs a)
    {
        float vr = a.Beta2 * *v + (1f - a.Beta2) * (RowWiseAdagradCpu.Squares(g, cols) / cols);
        *v = vr;
        float denom = MathF.Sqrt(vr) / a.Bias2Sqrt + a.Eps;
        int j = 0, width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && cols >= width)
        {
            var decay = new Vector<float>(a.Decay);
            var stepSize = new Vector<float>(a.StepSize);
            var d = new Vector<float>(denom);
            if (m is null)
                for (; j <= cols - width; j += width)
                    Unsafe.WriteUnaligned(p + j, Unsafe.ReadUnaligned<Vector<float>>(p + j) * decay - stepSize * Unsafe.ReadUnaligned<Vector<float>>(g + j) / d);
            else
            {
                var b1 = new Vector<float>(a.Beta1);
                var c1 = new Vector<float>(1f - a.Beta1);
                for (; j <= cols - width; j += width)
                {
                    var mj = b1 * Unsafe.ReadUnaligned<Vector<float>>(m + j) + c1 * Unsafe.ReadUnaligned<Vector<float>>(g + j);
                    Unsafe.WriteUnaligned(m + j, mj);
                    Unsafe.WriteUnaligned(p + j, Unsafe.ReadUnaligned<Vector<float>>(p + j) * decay - stepSize * mj / d);
                }
            }
        }
        for (; j < cols; j++)
        {
            float mj = g[j];
            if (m is not null) m[j] = mj = a.Beta1 * m[j] + (1f - a.Beta1) * g[j];
            p[j] = p[j] * a.Decay - a.StepSize * mj / denom;
        }
    }
}
