// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_). The norm is reduced deterministically without
// atomics: every worker owns one compensated (Kahan) partial sum that it carries across all gradients in a fixed
// order, then one final pass adds the partials in index order. Dense grads and RowSparseGrad values both count.
// These kernels are the definition; on the CPU accelerator the launcher loads the SIMD bodies of Cpu/GradClipCpu.cs
// (Device.Choose; the same sum to rounding, the same scaling bit for bit).
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
        CheckMaxNorm(maxNorm);
        var grads = Gradients(parameters, null);
        if (grads.Count == 0) return 0f;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        lock (k)
        {
            float norm = Norm(d, k, grads);
            ScaleAll(d, k, grads, maxNorm / (norm + 1e-6f));
            return norm;
        }
    }

    /// <summary>
    /// <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> for a model split between the ranks of <paramref name="group"/>: the gradients of
    /// <paramref name="replicated"/> are the same on every rank (counted once), those of <paramref name="sharded"/> are this rank's part of tables
    /// split between the ranks, so <c>n = sqrt(|replicated|^2 + sum over ranks of |sharded|^2)</c>, the same on every rank. All ranks call it together.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNorm"/> is not a finite positive number.</exception>
    /// <exception cref="Distributed.CommunicationException">The all-reduce failed or timed out.</exception>
    public static float ClipGlobalNorm(IEnumerable<Tensor> replicated, IEnumerable<Tensor> sharded, Distributed.Communicator group, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(replicated);
        ArgumentNullException.ThrowIfNull(sharded);
        ArgumentNullException.ThrowIfNull(group);
        CheckMaxNorm(maxNorm);
        var rep = Gradients(replicated, null);
        var sh = Gradients(sharded, rep.Count > 0 ? rep[0] : null);
        var first = rep.Count > 0 ? rep[0] : sh.Count > 0 ? sh[0] : null;
        float nRep = 0f, nSh = 0f;
        ClipKernels? k = first is null ? null : first.Device.Get(static d => new ClipKernels(d));
        if (k is not null)
            lock (k)
            {
                nRep = rep.Count > 0 ? Norm(first!.Device, k, rep) : 0f;
                nSh = sh.Count > 0 ? Norm(first!.Device, k, sh) : 0f;
            }
        var squares = new[] { (double)nSh * nSh };
        group.AllReduce(squares.AsSpan());
        float norm = (float)Math.Sqrt((double)nRep * nRep + squares[0]);
        if (k is not null)
            lock (k) ScaleAll(first!.Device, k, rep.Concat(sh).ToList(), maxNorm / (norm + 1e-6f));
        return norm;
    }

    static void CheckMaxNorm(float maxNorm)
    {
        if (!(maxNorm > 0 && float.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"maxNorm = {maxNorm}: expected a finite value > 0.");
    }

    static List<Tensor> Gradients(IEnumerable<Tensor> parameters, Tensor? sameDeviceAs)
    {
        var grads = new List<Tensor>();
        foreach (var p in parameters)
        {
            ArgumentNullException.ThrowIfNull(p, nameof(parameters));
            var g = p.Grad ?? p.SparseGrad?.Values;
            if (g is null || g.Length == 0) continue;
            Check.Alive(g, $"gradient of {p.Name ?? "a parameter"}");
            Check.DType(g, DType.F32, $"gradient of {p.Name ?? "a parameter"}");
            var reference = grads.Count > 0 ? grads[0] : sameDeviceAs;
            if (reference is not null) Check.SameDevice(reference, g, $"gradient of {p.Name ?? "a parameter"}");
            grads.Add(g);
        }
        return grads;
    }

    // The L2 norm of the gradients: compensated per-worker partials carried across all of them in order, then one final pass.
    static float Norm(Device d, ClipKernels k, List<Tensor> grads)
    {
        int workers = k.Workers;
        var scratch = k.Scratch.View; // [0, W): partial sums, [W, 2W): their compensations, [2W]: the norm
        k.Zero(2 * workers + 1, new Work(2 * workers + 1, 2 * workers + 1, 1), scratch);
        foreach (var g in grads)
        {
            var w = Split(d, g.Length, workers);
            k.SumSquares(w.Workers, w, g.View, scratch, workers);
        }
        k.Final(1, new Work(1, 1, 1), scratch, workers);
        var host = k.Host;
        scratch.SubView(2 * workers, 1).CopyToCPU(ref host[0], 1);
        return host[0];
    }

    // Multiplies every gradient by scale when it is below 1 (or NaN, as PyTorch then scales too).
    static void ScaleAll(Device d, ClipKernels k, List<Tensor> grads, float scale)
    {
        if (scale >= 1f) return;
        foreach (var g in grads)
        {
            var w = d.Split(g.Length);
            k.Scale(w.Workers, w, g.View, scale);
        }
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

/// <summary>Clipping kernels and the per-device scratch of partial sums (callers lock the object while using the scratch): the
/// portable kernels below, or for the sum of squares and the scaling the SIMD bodies' kernels (Cpu/GradClipCpu.cs) where
/// <see cref="Device.Choose"/> picks them.</summary>
internal sealed class ClipKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>> Zero;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> SumSquares;
    public readonly Action<Index1D, Work, ArrayView<float>, int> Final;
    public readonly Action<Index1D, Work, ArrayView<float>, float> Scale;
    public readonly int Workers;
    public readonly Tensor Scratch;
    public readonly float[] Host = new float[1];

    public ClipKernels(Device d)
    {
        var acc = d.Accelerator;
        Zero = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>>(ZeroKernel);
        // The CPU bodies use Vector<float>, whatever width it has here (scalar without SIMD): they need no vector unit.
        SumSquares = acc.LoadAutoGroupedStreamKernel(d.Choose(SumSquaresKernel, GradClipCpu.SumSquaresKernel, 0));
        Final = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, int>(FinalKernel);
        Scale = acc.LoadAutoGroupedStreamKernel(d.Choose(ScaleKernel, GradClipCpu.ScaleKernel, 0));
        // A GPU's final pass is one thread, so keep its partials to a few thousand.
        Workers = d.IsCpu ? d.Workers : Math.Min(d.Workers, 4096);
        Scratch = Scope.Unscope(Tensor.Zeros(d, 2 * Workers + 1));
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
