// The CPU accelerator's AdamW body, reached from an ILGPU kernel through [External] so that it runs as plain
// .NET code over raw pointers with Vector<float> (the portable kernel pays the view indexer's checks on every
// access; measured 7-8x slower on 2 cores: a sparse [16384 of 262144, 256] + dense [16384, 256] step took
// 390-490 ms portable, 53-59 ms here). Same IEEE operations in the same order as the portable
// kernel (no FMA: sqrt and division are correctly rounded in SIMD too), so the results are bit-identical;
// AdamWCpuTests hold it to the portable kernel. Never compiled for GPUs.
using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>AdamW over CPU memory and the kernels that call it, which <see cref="AdamKernels"/> loads in place of its portable
/// kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static unsafe class AdamWCpu
{
    // p, g, m, v: [n]; updates p, m, v in place, each worker's chunks through Dense
    internal static void DenseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Dense(p, g, m, v, a, s, work.End(s));
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R * cols); only the listed rows of p, m, v change; chunks through Sparse
    internal static void SparseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride) Sparse(rows, values, cols, p, m, v, a, s, work.End(s));
    }

    /// <summary>Elements <c>[start, end)</c> of the dense update (views are CPU memory of equal length).</summary>
    [External("peer_adamw_cpu_dense")]
    public static void Dense(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamArgs a, int start, int end)
    {
        if (end <= start) return;
        Run(Ptr(p) + start, Ptr(g) + start, Ptr(m) + start, Ptr(v) + start, end - start, a);
    }

    /// <summary>Flat elements <c>[start, end)</c> of the sparse update: element i is column <c>i % cols</c> of listed row <c>i / cols</c>.</summary>
    [External("peer_adamw_cpu_sparse")]
    public static void Sparse(ArrayView<int> rows, ArrayView<float> values, int cols, ArrayView<float> p, ArrayView<float> m, ArrayView<float> v,
        AdamArgs a, int start, int end)
    {
        if (end <= start) return;
        int* pr = (int*)Unsafe.AsPointer(ref rows[0]);
        float* pg = Ptr(values), pp = Ptr(p), pm = Ptr(m), pv = Ptr(v);
        int rowsOfP = p.IntLength / cols;
        for (int i = start; i < end;)
        {
            int r = i / cols, c = i - r * cols, n = Math.Min(cols - c, end - i);
            // A row outside p (padding, RowSparseGrad.NoRow) changes nothing, as in the portable kernel.
            if ((uint)pr[r] < (uint)rowsOfP)
            {
                long j = (long)pr[r] * cols + c;
                Run(pp + j, pg + i, pm + j, pv + j, n, a);
            }
            i += n;
        }
    }

    static float* Ptr(ArrayView<float> x) => (float*)Unsafe.AsPointer(ref x[0]);

    // n consecutive elements: the portable kernel's Update, vectorised.
    static void Run(float* p, float* g, float* m, float* v, int n, AdamArgs a)
    {
        int i = 0;
        int width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && n >= width)
        {
            var b1 = new Vector<float>(a.Beta1);
            var c1 = new Vector<float>(1f - a.Beta1);
            var b2 = new Vector<float>(a.Beta2);
            var c2 = new Vector<float>(1f - a.Beta2);
            var decay = new Vector<float>(a.Decay);
            var stepSize = new Vector<float>(a.StepSize);
            var bias2 = new Vector<float>(a.Bias2Sqrt);
            var eps = new Vector<float>(a.Eps);
            for (; i <= n - width; i += width)
            {
                var gi = Unsafe.ReadUnaligned<Vector<float>>(g + i);
                var mi = b1 * Unsafe.ReadUnaligned<Vector<float>>(m + i) + c1 * gi;
                var vi = b2 * Unsafe.ReadUnaligned<Vector<float>>(v + i) + c2 * gi * gi;
                Unsafe.WriteUnaligned(m + i, mi);
                Unsafe.WriteUnaligned(v + i, vi);
                var pi = Unsafe.ReadUnaligned<Vector<float>>(p + i);
                Unsafe.WriteUnaligned(p + i, pi * decay - stepSize * mi / (Vector.SquareRoot(vi) / bias2 + eps));
            }
        }
        for (; i < n; i++)
        {
            float mi = a.Beta1 * m[i] + (1f - a.Beta1) * g[i];
            float vi = a.Beta2 * v[i] + (1f - a.Beta2) * g[i] * g[i];
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * a.Decay - a.StepSize * mi / (MathF.Sqrt(vi) / a.Bias2Sqrt + a.Eps);
        }
    }
}
