// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_). The norm is reduced deterministically without
// atomics: every worker owns one compensated (Kahan) partial sum that it carries across all gradients in a fixed
// order, then one final pass adds the partials in index order. Dense grads and RowSparseGrad values both count.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Gradient clipping.</summary>
public static class GradClip
{
    /// <summary>
    /// Computes the global L2 norm of all gradients, <c>n = sqrt(sum over parameters of sum g^2)</c> (dense <see cref="Tensor.Grad"/>
    /// and the values of <see cref="Tensor.SparseGrad"/>; parameters without gradient are skipped), then, as PyTorch, multiplies
    /// every gradient by <c>min(1, maxNorm / (n + 1e-6))</c> when that factor is below 1. Returns n, the norm before clipping.
    /// A non-finite n is returned as is and, as PyTorch (error_if_nonfinite off), the gradients are scaled by the resulting factor.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNorm"/> is not a finite positive number.</exception>
    /// <exception cref="ArgumentException">Parameters on different devices.</exception>
    public static float ClipGlobalNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(maxNorm > 0 && float.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"maxNorm = {maxNorm}: expected a finite value > 0.");
        return NormAndClip(parameters, maxNorm);
    }

    /// <summary>
    /// The global L2 norm of all gradients as <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> computes it (same
    /// reduction, same value), without changing them: one read of every gradient. NaN or infinity when a gradient holds one.
    /// </summary>
    /// <exception cref="ArgumentException">Parameters on different devices.</exception>
    public static float GlobalNorm(IEnumerable<Tensor> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return NormAndClip(parameters, float.NaN);
    }

    // maxNorm NaN: the norm only.
    static float NormAndClip(IEnumerable<Tensor> parameters, float maxNorm)
    {
        var grads = new List<Tensor>();
        foreach (var p in parameters)
        {
            ArgumentNullException.ThrowIfNull(p, nameof(parameters));
            var g = p.Grad ?? p.SparseGrad?.Values;
            if (g is null || g.Length == 0) continue;
            Check.Alive(g, $"gradient of {p.Name ?? "a parameter"}");
            Check.DType(g, DType.F32, $"gradient of {p.Name ?? "a parameter"}");
            if (grads.Count > 0) Check.SameDevice(grads[0], g, $"gradient of {p.Name ?? "a parameter"}");
            grads.Add(g);
        }
        if (grads.Count == 0) return 0f;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        lock (k) return Clip(d, k, grads, maxNorm);
    }

    static float Clip(Device d, ClipKernels k, List<Tensor> grads, float maxNorm)
    {
        int workers = k.Workers;
        var scratch = k.Scratch.View; // [0, W): partial sums, [W, 2W): their compensations, [2W]: the norm
        k.Zero(2 * workers + 1, new Work(2 * workers + 1, 2 * workers + 1, 1), scratch);
        foreach (var g in grads)
        {
            var w = Split(d, g.Length, workers);
            (k.UseCpu ? k.SumSquaresCpu! : k.SumSquares)(w.Workers, w, g.View, scratch, workers);
        }
        k.Final(1, new Work(1, 1, 1), scratch, workers);
        var host = k.Host;
        scratch.SubView(2 * workers, 1).CopyToCPU(host.AsSpan()); // a span, which ILGPU pins (see Optimizer.Validate)
        float norm = host[0];
        if (float.IsNaN(maxNorm)) return norm;
        float scale = maxNorm / (norm + 1e-6f);
        if (!(scale >= 1f))
            foreach (var g in grads)
            {
                var w = d.Split(g.Length);
                (k.UseCpu ? k.ScaleCpu! : k.Scale)(w.Workers, w, g.View, scale);
            }
        return norm;
    }

    /// <summary>Same as <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> for named parameters (e.g. <c>module.NamedParameters()</c>).</summary>
    public static float ClipGlobalNorm(IEnumerable<(string Name, Tensor Param)> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return ClipGlobalNorm(parameters.Select(p => p.Param), maxNorm);
    }

    // At most `workers` indices, each a contiguous chunk where the device chunks work (CPU accelerator, PoCL) and
    // grid-stride on GPUs, so index w only ever writes partial w.
    static Work Split(Device d, int n, int workers)
    {
        int w = Math.Min(workers, n);
        return d.ChunksWork ? new Work(n, w, (n + w - 1) / w) : new Work(n, w, 1);
    }
}

/// <summary>Clipping kernels and the per-device scratch of partial sums (callers lock the object while using the scratch).</summary>
internal sealed class ClipKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>> Zero;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> SumSquares;
    public readonly Action<Index1D, Work, ArrayView<float>, int> Final;
    public readonly Action<Index1D, Work, ArrayView<float>, float> Scale;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int>? SumSquaresCpu;
    public readonly Action<Index1D, Work, ArrayView<float>, float>? ScaleCpu;
    public readonly int Workers;
    public readonly Tensor Scratch;
    public readonly float[] Host = new float[1];
    readonly bool isCpu;

    /// <summary>Run the portable kernels even on the CPU accelerator (tests compare the two paths).</summary>
    public static bool PreferPortable { get; set; }

    /// <summary>Whether the <see cref="GradClipCpu"/> kernels are used.</summary>
    public bool UseCpu => isCpu && !PreferPortable;

    public ClipKernels(Device d)
    {
        var acc = d.Accelerator;
        Zero = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>>(ZeroKernel);
        SumSquares = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, int>(SumSquaresKernel);
        Final = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, int>(FinalKernel);
        Scale = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, float>(ScaleKernel);
        // A GPU's final pass is one thread, so keep its partials to a few thousand.
        Workers = d.IsCpu ? d.Workers : Math.Min(d.Workers, 4096);
        Scratch = Scope.Unscope(Tensor.Zeros(d, 2 * Workers + 1));
        isCpu = d.IsCpu;
        if (!isCpu) return;
        SumSquaresCpu = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, int>(SumSquaresCpuKernel);
        ScaleCpu = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, float>(ScaleCpuKernel);
    }

    // as SumSquaresKernel; each chunk computed by GradClipCpu.SumSquares (CPU accelerator only)
    static void SumSquaresCpuKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> partial, int workers)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) GradClipCpu.SumSquares(g, s, work.End(s), partial, workers, w);
    }

    // as ScaleKernel; each chunk computed by GradClipCpu.Scale (CPU accelerator only)
    static void ScaleCpuKernel(Index1D w, Work work, ArrayView<float> g, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) GradClipCpu.Scale(g, s, work.End(s), scale);
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

    // partial: [2W + 1]; partial[2W] <- sqrt(sum of the W compensated partials, in index order)
    static void FinalKernel(Index1D w, Work work, ArrayView<float> partial, int workers)
    {
        float sum = 0f, comp = 0f;
        for (int i = 0; i < workers; i++)
        {
            float y = partial[i] - partial[workers + i] - comp;
            float t = sum + y;
            comp = (t - sum) - y;
            sum = t;
        }
        partial[2 * workers] = MathF.Sqrt(sum);
    }

    // g: [n] *= scale
    static void ScaleKernel(Index1D w, Work work, ArrayView<float> g, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) g[i] *= scale;
    }
}
