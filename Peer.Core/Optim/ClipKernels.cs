// The kernels of GradClip.cs (its header says how the norm is reduced and why it is deterministic) and the per-device
// scratch of partial sums they share.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Clipping kernels and the per-device scratch of partial sums (callers lock the object while using the scratch): the
/// portable kernels below, or for the sum of squares and the scaling the SIMD bodies' kernels (Cpu/GradClipCpu.cs) where
/// <see cref="Device.Choose"/> picks them, and on GPUs the grouped final pass.</summary>
internal sealed class ClipKernels
{
    /// <summary>Threads of the grouped final pass on GPUs.</summary>
    public const int FinalGroup = 256;

    public readonly Action<Index1D, Work, ArrayView<float>> Zero;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> SumSquares;
    /// <summary>The sum of squares of gradients lying side by side, one launch for all of them: (run, offsets, count, partial,
    /// workers, chunked), launched with <see cref="Workers"/> indices.</summary>
    public readonly Action<Index1D, ArrayView<float>, ArrayView<int>, int, ArrayView<float>, int, int> SumSquaresRun;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>> Scale;
    readonly Action<Index1D, ArrayView<float>, int, float>? final;
    readonly Action<KernelConfig, ArrayView<float>, int, float>? finalGrouped;
    readonly int finalGroupSize;
    public readonly int Workers;
    public readonly Tensor Scratch;
    public readonly float[] Host = new float[1];

    /// <summary>The kernels for <paramref name="d"/>: the grouped final pass on GPUs whose groups hold <see cref="FinalGroup"/> threads.</summary>
    public ClipKernels(Device d) : this(d, !d.ChunksWork && d.MaxGroupSize >= FinalGroup) { }

    /// <summary>The kernels with the final pass grouped or not (tests run the grouped one on CPU devices).</summary>
    internal ClipKernels(Device d, bool groupedFinal)
    {
        Zero = d.LoadKernel(ZeroKernel);
        // The CPU bodies use Vector<float>, whatever width it has here (scalar without SIMD): they need no vector unit.
        SumSquares = d.LoadKernel(SumSquaresKernel, GradClipCpu.SumSquaresKernel, 0);
        SumSquaresRun = d.LoadKernel(SumSquaresRunKernel, GradClipCpu.SumSquaresRunKernel, 0);
        Scale = d.LoadKernel(ScaleKernel, GradClipCpu.ScaleKernel, 0);
        if (groupedFinal)
        {
            finalGrouped = d.LoadGroupedKernel<Action<KernelConfig, ArrayView<float>, int, float>>(FinalGroupKernel);
            finalGroupSize = 1 << System.Numerics.BitOperations.Log2((uint)Math.Min(FinalGroup, d.MaxGroupSize)); // a power of two
        }
        else final = d.LoadKernel(FinalKernel);
        // Partials per worker; on a GPU a few thousand, so that the final pass stays short.
        Workers = d.IsCpu ? d.Workers : Math.Min(d.Workers, 4096);
        Scratch = Scope.Unscope(Tensor.Zeros(d, 2 * Workers + 2));
    }

    /// <summary>The final pass over the scratch: the norm into [2W], the clipping factor into [2W + 1].</summary>
    public void RunFinal(ArrayView<float> scratch, int workers, float maxNorm)
    {
        if (finalGrouped is not null) finalGrouped(new KernelConfig(1, finalGroupSize), scratch, workers, maxNorm);
        else final!(1, scratch, workers, maxNorm);
    }

    // scratch: [m] <- 0
    static void ZeroKernel(Index1D w, Work work, ArrayView<float> scratch)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) scratch[i] = 0f;
    }

    // g: [n]; partial[w] (+ compensation partial[W + w]) += sum over worker w's items of g^2
    static void SumSquaresKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> partial, int workers)
    {
        float sum = partial[w], comp = partial[workers + w];
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                float y = g[i] * g[i] - comp;
                float t = sum + y;
                comp = (t - sum) - y;
                sum = t;
            }
        partial[w] = sum;
        partial[workers + w] = comp;
    }

    /// <summary>How one gradient of n elements is split between the partials: as <see cref="SumSquaresKernel"/> is launched for it alone,
    /// min(workers, n) indices, each a contiguous chunk where work is chunked (<paramref name="chunked"/> 1), else grid-stride.</summary>
    public static Work Chunks(int n, int workers, int chunked)
    {
        int w = workers < n ? workers : n;
        return chunked != 0 ? new Work(n, w, (n + w - 1) / w) : new Work(n, w, 1);
    }

    // run: gradients side by side, gradient i at [offsets[i], offsets[i + 1]); for each in order, index w adds the elements
    // Chunks gives it into partial w, exactly as a launch of SumSquaresKernel per gradient would (the same bits, fewer launches)
    static void SumSquaresRunKernel(Index1D w, ArrayView<float> run, ArrayView<int> offsets, int count, ArrayView<float> partial, int workers, int chunked)
    {
        float sum = partial[w], comp = partial[workers + w];
        for (int g = 0; g < count; g++)
        {
            int a = offsets[g];
            var work = Chunks(offsets[g + 1] - a, workers, chunked);
            if (w >= work.Workers) continue;
            for (int s = work.Start(w); s < work.N; s += work.Stride)
                for (int i = s, e = work.End(s); i < e; i++)
                {
                    float x = run[a + i];
                    float y = x * x - comp;
                    float t = sum + y;
                    comp = (t - sum) - y;
                    sum = t;
                }
        }
        partial[w] = sum;
        partial[workers + w] = comp;
    }

    // partial: [2W + 2]; partial[2W] <- n = sqrt(sum of the W compensated partials, in index order), partial[2W + 1] <- the factor
    static void FinalKernel(Index1D w, ArrayView<float> partial, int workers, float maxNorm)
    {
        float sum = 0f, comp = 0f;
        for (int i = 0; i < workers; i++)
        {
            float y = partial[i] - partial[workers + i] - comp;
            float t = sum + y;
            comp = (t - sum) - y;
            sum = t;
        }
        WriteNorm(partial, workers, MathF.Sqrt(sum), maxNorm);
    }

    // One group of G threads (a power of two), as FinalKernel: thread l sums partials l, l + G, .. compensated, then the G sums
    // meet in a tree in shared memory (log2 G steps).
    static void FinalGroupKernel(ArrayView<float> partial, int workers, float maxNorm)
    {
        var sums = SharedMemory.Allocate<float>(FinalGroup);
        int l = Group.IdxX, size = Group.DimX;
        float sum = 0f, comp = 0f;
        for (int i = l; i < workers; i += size)
        {
            float y = partial[i] - partial[workers + i] - comp;
            float t = sum + y;
            comp = (t - sum) - y;
            sum = t;
        }
        sums[l] = sum;
        Group.Barrier();
        for (int half = size / 2; half > 0; half /= 2)
        {
            if (l < half) sums[l] += sums[l + half];
            Group.Barrier();
        }
        if (l == 0) WriteNorm(partial, workers, MathF.Sqrt(sums[0]), maxNorm);
    }

    // As PyTorch: the gradients are scaled by maxNorm / (n + 1e-6) when that is below 1 (or not a number); factor 1 means no scaling.
    static void WriteNorm(ArrayView<float> partial, int workers, float norm, float maxNorm)
    {
        float scale = maxNorm / (norm + 1e-6f);
        partial[2 * workers] = norm;
        partial[2 * workers + 1] = !(scale >= 1f) ? scale : 1f;
    }

    // g: [n] *= factor[0], unless the factor is exactly 1
    static void ScaleKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> factor)
    {
        float scale = factor[0];
        if (scale == 1f) return;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) g[i] *= scale;
    }
}
