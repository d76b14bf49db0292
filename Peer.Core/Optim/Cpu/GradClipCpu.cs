// The CPU accelerator's bodies of the clipping kernels, reached through [External]: raw pointers and Vector<float>.
// The sum of squares keeps one compensated (Kahan) sum per vector lane, folds the lanes into the worker's partial
// in lane order, so it stays deterministic for a given worker split; it agrees with the portable kernel to
// rounding (a different summation order), and the scaling is the same single multiply, bit for bit.
// GradClipCpuTests hold both to the portable kernels. Never compiled for GPUs.
using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Clipping over CPU memory and the kernels that call it, which <see cref="ClipKernels"/> loads in place of its
/// portable kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static unsafe class GradClipCpu
{
    // g: [n]; partial[w] (+ compensation partial[W + w]) += sum over worker w's chunks of g^2
    internal static void SumSquaresKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> partial, int workers)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) SumSquares(g, s, work.End(s), partial, workers, w);
    }

    // run: gradients side by side at offsets [count + 1]; for each in order, worker w's chunks (ClipKernels.Chunks) into partial w
    internal static void SumSquaresRunKernel(Index1D w, ArrayView<float> run, ArrayView<int> offsets, int count, ArrayView<float> partial, int workers, int chunked)
    {
        for (int g = 0; g < count; g++)
        {
            int a = offsets[g];
            var work = ClipKernels.Chunks(offsets[g + 1] - a, workers, chunked);
            if (w >= work.Workers) continue;
            for (int s = work.Start(w); s < work.N; s += work.Stride) SumSquares(run, a + s, a + work.End(s), partial, workers, w);
        }
    }

    // g: [n] *= scale, worker w's chunks
    internal static void ScaleKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> factor)
    {
        float scale = factor[0];
        if (scale == 1f) return;
        for (int s = work.Start(w); s < work.N; s += work.Stride) Scale(g, s, work.End(s), scale);
    }

    /// <summary>Adds the squares of <c>g[start, end)</c> into worker <paramref name="w"/>'s compensated partial
    /// (<c>partial[w]</c>, compensation <c>partial[workers + w]</c>).</summary>
    [External("peer_clip_cpu_sum_squares")]
    public static void SumSquares(ArrayView<float> g, int start, int end, ArrayView<float> partial, int workers, int w)
    {
        float* pp = (float*)Unsafe.AsPointer(ref partial[0]);
        float sum = pp[w], comp = pp[workers + w];
        if (end > start)
        {
            float* pg = (float*)Unsafe.AsPointer(ref g[0]) + start;
            int n = end - start, i = 0, width = Vector<float>.Count;
            if (Vector.IsHardwareAccelerated && n >= width)
            {
                var vs = Vector<float>.Zero;
                var vc = Vector<float>.Zero;
                for (; i <= n - width; i += width)
                {
                    var x = Unsafe.ReadUnaligned<Vector<float>>(pg + i);
                    var y = x * x - vc;
                    var t = vs + y;
                    vc = (t - vs) - y;
                    vs = t;
                }
                for (int l = 0; l < width; l++) Add(ref sum, ref comp, vs[l] - vc[l]);
            }
            for (; i < n; i++) Add(ref sum, ref comp, pg[i] * pg[i]);
        }
        pp[w] = sum;
        pp[workers + w] = comp;
    }

    /// <summary><c>g[start, end) *= scale</c>.</summary>
    [External("peer_clip_cpu_scale")]
    public static void Scale(ArrayView<float> g, int start, int end, float scale)
    {
        if (end <= start) return;
        float* pg = (float*)Unsafe.AsPointer(ref g[0]) + start;
        int n = end - start, i = 0, width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            var s = new Vector<float>(scale);
            for (; i <= n - width; i += width) Unsafe.WriteUnaligned(pg + i, Unsafe.ReadUnaligned<Vector<float>>(pg + i) * s);
        }
        for (; i < n; i++) pg[i] *= scale;
    }

    static void Add(ref float sum, ref float comp, float x)
    {
        float y = x - comp;
        float t = sum + y;
        comp = (t - sum) - y;
        sum = t;
    }
}
