// The CPU accelerator's row-wise AdaGrad body, reached from an ILGPU kernel through [External] so that it runs as plain
// .NET code over raw pointers with SIMD (the portable kernel pays the view indexer's checks on every access: a sparse
// step over 16384 of [65536, 256] ran at 0.42 GB/s portable against 2.60 GB/s here, medians of 15 interleaved on the
// loaded 2-core machine, `Peer.Bench -- kernels --quick --repeats 15`). Same IEEE operations in the same order as the
// portable kernel: the row's sum of squares in
// eight-float vectors, the lanes combined as RowAdagradKernels.Squares defines, no FMA; so the results are bit-identical
// (RowWiseCpuTests hold it to the portable kernel). Never compiled for GPUs.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Row-wise AdaGrad over CPU memory and the kernels that call it, which <see cref="RowAdagradKernels"/> loads in place of
/// its portable kernels on the CPU accelerator; also the row's sum of squares that the row-wise AdamW body shares.</summary>
internal static unsafe class RowWiseAdagradCpu
{
    // p, g: [rows, cols], sum: [rows] (work.N = rows); each worker's chunks of rows through Dense
    internal static void DenseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> sum, int cols, RowAdagradArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Dense(p, g, sum, cols, a, s, work.End(s));
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R); only the listed rows of p and sum change; chunks through Sparse
    internal static void SparseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> sum, RowAdagradArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Sparse(rows, values, cols, p, sum, a, s, work.End(s));
    }

    /// <summary>Rows <c>[start, end)</c> of the dense update.</summary>
    [External("peer_rowwise_adagrad_cpu_dense")]
    public static void Dense(ArrayView<float> p, ArrayView<float> g, ArrayView<float> sum, int cols, RowAdagradArgs a, int start, int end)
    {
        if (end <= start) return;
        float* pp = Ptr(p), pg = Ptr(g), ps = Ptr(sum);
        for (int r = start; r < end; r++) Row(pp + (long)r * cols, pg + (long)r * cols, ps + r, cols, a);
    }

    /// <summary>Listed rows <c>[start, end)</c> of the sparse update.</summary>
    [External("peer_rowwise_adagrad_cpu_sparse")]
    public static void Sparse(ArrayView<int> rows, ArrayView<float> values, int cols, ArrayView<float> p, ArrayView<float> sum,
        RowAdagradArgs a, int start, int end)
    {
        if (end <= start) return;
        int* pr = (int*)Unsafe.AsPointer(ref rows[0]);
        float* pg = Ptr(values), pp = Ptr(p), ps = Ptr(sum);
        for (int i = start; i < end; i++)
            if ((uint)pr[i] < (uint)sum.IntLength) Row(pp + (long)pr[i] * cols, pg + (long)i * cols, ps + pr[i], cols, a); // else padding (NoRow): skipped
    }

    internal static float* Ptr(ArrayView<float> x) => (float*)Unsafe.AsPointer(ref x[0]);

    // One row: the portable kernel's Row, vectorised.
    static void Row(float* p, float* g, float* sum, int cols, RowAdagradArgs a)
    {
        float total = *sum + Squares(g, cols) / cols;
        *sum = total;
        float multiplier = a.Lr / (MathF.Sqrt(total) + a.Eps);
        int j = 0, width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && cols >= width)
        {
            var decay = new Vector<float>(a.Decay);
            var m = new Vector<float>(multiplier);
            for (; j <= cols - width; j += width)
                Unsafe.WriteUnaligned(p + j, decay * Unsafe.ReadUnaligned<Vector<float>>(p + j) - m * Unsafe.ReadUnaligned<Vector<float>>(g + j));
        }
        for (; j < cols; j++) p[j] = a.Decay * p[j] - multiplier * g[j];
    }

    /// <summary><see cref="RowAdagradKernels.Squares"/> over <c>g[0 .. n)</c>: its eight partial sums are the lanes of one eight-float
    /// vector (whatever width the machine accelerates: the order, not the speed, must match), combined in its order.</summary>
    internal static float Squares(float* g, int n)
    {
        int j = 0;
        var acc = Vector256<float>.Zero;
        for (; j + 8 <= n; j += 8)
        {
            var v = Vector256.Load(g + j);
            acc += v * v;
        }
        var t = acc.GetLower() + acc.GetUpper(); // (s0 + s4, s1 + s5, s2 + s6, s3 + s7)
        float squares = (t.GetElement(0) + t.GetElement(1)) + (t.GetElement(2) + t.GetElement(3));
        for (; j < n; j++) squares += g[j] * g[j];
        return squares;
    }
}
