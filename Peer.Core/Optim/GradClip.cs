// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_). The norm is reduced deterministically without
// atomics: every worker owns one compensated (Kahan) partial sum that it carries across all gradients in a fixed
// order, then a final pass adds the partials (in index order on one thread where work is chunked over CPU cores; on
// GPUs by one group, each thread a strided share and then a tree in shared memory). The final pass also computes the
// clipping factor, which the scaling kernels read on the device: clipping never waits for the device. Dense grads and
// RowSparseGrad values both count. These kernels are the definition; on the CPU accelerator the launcher loads the SIMD
// bodies of Cpu/GradClipCpu.cs (Device.Choose; the same sum to rounding, the same scaling bit for bit).
// Each gradient's elements are split between the workers by its length alone (as if it were launched by itself; gradients
// lying side by side in one buffer share one launch that walks them in order), so the norm has the same bits wherever the
// gradients lie (a resumed trainer lays them out differently from the one it continues). The scaling, exact element by element, reads gradients lying side by side in one buffer (an
// optimizer's parameter arena, ParameterArena.cs) as one tensor: a launch per run instead of per parameter.
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
        var grads = Gradients(parameters, maxNorm);
        if (grads.Count == 0) return 0f;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        using var phase = d.Profiler?.Enter(ProfilePhase.Optimizer);
        lock (k)
        {
            Clip(d, k, grads, maxNorm);
            k.Scratch.View.SubView(2 * k.Workers, 1).CopyToCPU(k.Host.AsSpan()); // waits for the device; the span overload pins
            return k.Host[0];
        }
    }

    /// <summary>
    /// As <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/>, but writes the norm n into <paramref name="norm"/>[0] on the device
    /// instead of returning it, so that nothing waits for the device (a training loop reads it when it reads the loss).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNorm"/> is not a finite positive number.</exception>
    /// <exception cref="ArgumentException">Parameters on different devices, or <paramref name="norm"/> not a live F32 tensor on theirs.</exception>
    public static void ClipGlobalNorm(IEnumerable<Tensor> parameters, float maxNorm, Tensor norm)
    {
        var grads = GradientsFor(parameters, maxNorm, norm);
        if (grads is null) return;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        using var phase = d.Profiler?.Enter(ProfilePhase.Optimizer);
        lock (k)
        {
            Clip(d, k, grads, maxNorm);
            norm.View.SubView(0, 1).CopyFrom(k.Scratch.View.SubView(2 * k.Workers, 1));
        }
    }

    /// <summary>
    /// The global L2 norm of all gradients as <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> computes it (same
    /// reduction, same value), without changing them: one read of every gradient. NaN or infinity when a gradient holds one.
    /// Waits for the device.
    /// </summary>
    /// <exception cref="ArgumentException">Parameters on different devices.</exception>
    public static float GlobalNorm(IEnumerable<Tensor> parameters)
    {
        var grads = Gradients(parameters, 1f);
        if (grads.Count == 0) return 0f;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        lock (k)
        {
            Clip(d, k, grads, 1f, scale: false);
            k.Scratch.View.SubView(2 * k.Workers, 1).CopyToCPU(k.Host.AsSpan()); // waits for the device; the span overload pins
            return k.Host[0];
        }
    }

    /// <summary>
    /// As <see cref="GlobalNorm(IEnumerable{Tensor})"/>, but writes the norm into <paramref name="norm"/>[0] on the device, so that
    /// nothing waits for the device (a training loop checks it when it reads the loss, as with clipping).
    /// </summary>
    /// <exception cref="ArgumentException">Parameters on different devices, or <paramref name="norm"/> not a live F32 tensor on theirs.</exception>
    public static void GlobalNorm(IEnumerable<Tensor> parameters, Tensor norm)
    {
        var grads = GradientsFor(parameters, 1f, norm);
        if (grads is null) return;
        var d = grads[0].Device;
        var k = d.Get(static d => new ClipKernels(d));
        lock (k)
        {
            Clip(d, k, grads, 1f, scale: false);
            norm.View.SubView(0, 1).CopyFrom(k.Scratch.View.SubView(2 * k.Workers, 1));
        }
    }

    // The gradients to clip, validated; maxNorm checked.
    /// <summary>The gradients whose norm goes into <paramref name="norm"/>[0] (the overloads that leave it on the device), after checking
    /// <paramref name="norm"/>; null, with the norm set to 0, when no parameter has a gradient.</summary>
    static List<Tensor>? GradientsFor(IEnumerable<Tensor> parameters, float maxNorm, Tensor norm)
    {
        ArgumentNullException.ThrowIfNull(norm);
        Check.Alive(norm, nameof(norm));
        Check.DType(norm, DType.F32, nameof(norm));
        Check.That(norm.Length >= 1, nameof(norm), norm.Shape, "at least one element (the norm goes to the first)");
        var grads = Gradients(parameters, maxNorm);
        if (grads.Count == 0)
        {
            norm.View.SubView(0, 1).MemSetToZero();
            return null;
        }
        Check.SameDevice(grads[0], norm, nameof(norm));
        return grads;
    }

    static List<Tensor> Gradients(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        CheckMaxNorm(maxNorm);
        return Gradients(parameters, null);
    }

    static void CheckMaxNorm(float maxNorm)
    {
        if (!(maxNorm > 0 && float.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"maxNorm = {maxNorm}: expected a finite value > 0.");
    }

    // The gradients of the parameters that have one, validated, all on the device of the first (or of sameDeviceAs).
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

    // Launches the norm over the gradients (a launch per run of them, Adjacent) and, unless scale is false, the scaling over
    // the same runs; the caller holds the lock on k.
    static void Clip(Device d, ClipKernels k, List<Tensor> gradients, float maxNorm, bool scale = true)
    {
        SumSquares(d, k, gradients);
        k.RunFinal(k.Scratch.View, k.Workers, maxNorm);
        if (!scale) return;
        var runs = Adjacent(gradients).Select(r => r.Count == 1 ? gradients[r.First] : Flat(r)).ToList();
        try
        {
            Scale(d, k, runs, k.Scratch.View.SubView(2 * k.Workers + 1, 1));
        }
        finally
        {
            foreach (var r in runs) if (!gradients.Contains(r)) r.Dispose();
        }
    }

    /// <summary>A run of gradients lying side by side in one buffer (each next one starting where the last ends): the first's
    /// index, how many, and the elements they cover.</summary>
    readonly record struct Run(int First, int Count, Storage Buffer, long At, int Length);

    // The gradients cut into maximal runs, in order (a run of one where a gradient has no neighbour).
    static IEnumerable<Run> Adjacent(List<Tensor> grads)
    {
        for (int i = 0; i < grads.Count;)
        {
            var (buffer, at) = grads[i].Place;
            long length = grads[i].Length;
            int j = i + 1;
            while (j < grads.Count && grads[j].Place == (buffer, at + length) && length + grads[j].Length <= int.MaxValue) length += grads[j++].Length;
            yield return new Run(i, j - i, buffer, at, (int)length);
            i = j;
        }
    }

    // A flat view of a run's elements, outside any scope (the caller disposes it).
    static Tensor Flat(Run r) => Scope.Unscope(Tensor.ViewOf(r.Buffer, r.At, [r.Length], DType.F32));

    // The compensated per-worker partial sums of squares of every gradient, carried across all of them in order: a launch per
    // run of gradients (Adjacent), each gradient split between the workers by its own length, as if launched alone.
    static void SumSquares(Device d, ClipKernels k, List<Tensor> grads)
    {
        int workers = k.Workers, chunked = d.ChunksWork ? 1 : 0;
        var scratch = k.Scratch.View; // [0, W): partial sums, [W, 2W): their compensations, [2W]: the norm, [2W + 1]: the factor
        k.Zero(2 * workers + 2, new Work(2 * workers + 2, 2 * workers + 2, 1), scratch);
        foreach (var r in Adjacent(grads))
        {
            if (r.Count == 1)
            {
                var w = ClipKernels.Chunks(r.Length, workers, chunked);
                k.SumSquares(w.Workers, w, grads[r.First].View, scratch, workers);
                continue;
            }
            var offsets = new int[r.Count + 1];
            for (int g = 0; g < r.Count; g++) offsets[g + 1] = offsets[g] + grads[r.First + g].Length;
            using var run = Flat(r);
            using var bounds = Scope.Unscope(Tensor.FromArray(d, offsets));
            k.SumSquaresRun(workers, run.View, bounds.IntView, r.Count, scratch, workers, chunked);
        }
    }

    // Multiplies every gradient by factor[0] on the device (the kernel skips a factor of exactly 1).
    static void Scale(Device d, ClipKernels k, List<Tensor> grads, ArrayView<float> factor)
    {
        foreach (var g in grads)
        {
            var w = d.Split(g.Length);
            k.Scale(w.Workers, w, g.View, factor);
        }
    }

    /// <summary>
    /// <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> for a model split between the ranks of <paramref name="group"/>: the gradients of
    /// <paramref name="replicated"/> are the same on every rank (counted once), those of <paramref name="sharded"/> are this rank's part of tables
    /// split between the ranks, so <c>n = sqrt(|replicated|^2 + sum over ranks of |sharded|^2)</c>, the same on every rank. All ranks call it together.
    /// The two partial norms are read on the host (the all-reduce runs there); the factor goes back to the device for the scaling.
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
        float scale = maxNorm / (norm + 1e-6f);
        if (k is not null && !(scale >= 1f)) // as WriteNorm: scaled when below 1 or not a number
            lock (k)
            {
                var factor = k.Scratch.View.SubView(2 * k.Workers + 1, 1);
                k.Host[0] = scale;
                factor.CopyFromCPU(k.Host.AsSpan());
                Scale(first!.Device, k, rep.Concat(sh).ToList(), factor);
            }
        return norm;
    }

    // The L2 norm of the gradients, read on the host (the caller holds the lock on k).
    static float Norm(Device d, ClipKernels k, List<Tensor> grads)
    {
        SumSquares(d, k, grads);
        k.RunFinal(k.Scratch.View, k.Workers, float.MaxValue);
        k.Scratch.View.SubView(2 * k.Workers, 1).CopyToCPU(k.Host.AsSpan()); // waits for the device; the span overload pins
        return k.Host[0];
    }

    /// <summary>Same as <see cref="ClipGlobalNorm(IEnumerable{Tensor}, float)"/> for named parameters (e.g. <c>module.NamedParameters()</c>).</summary>
    public static float ClipGlobalNorm(IEnumerable<(string Name, Tensor Param)> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return ClipGlobalNorm(parameters.Select(p => p.Param), maxNorm);
    }

}
