// AdamW (Loshchilov and Hutter) exactly as torch.optim.AdamW computes it, as ILGPU kernels: a dense kernel over
// the whole parameter, and a lazy sparse kernel over only the rows a RowSparseGrad lists (as torch's SparseAdam:
// untouched rows keep their moments and values bit for bit), so a sparse step costs O(R * cols), not O(N * cols).
// These kernels are the definition; on the CPU accelerator the launcher loads the SIMD bodies of Cpu/AdamWCpu.cs
// (Device.Choose; bit-identical results).
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>
/// Adam with decoupled weight decay and bias correction (PyTorch's <c>torch.optim.AdamW</c>, amsgrad off). For each parameter
/// with a gradient g, at its step t (counted per parameter, from 1, on the steps where it had a gradient):
/// <code>
/// p = p * (1 - lr * weightDecay)
/// m = beta1 * m + (1 - beta1) * g
/// v = beta2 * v + (1 - beta2) * g * g
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// </code>
/// A parameter whose gradient is a <see cref="RowSparseGrad"/> gets the same update on the listed rows only (lazy, as
/// <c>torch.optim.SparseAdam</c>): rows not listed keep their values and moments unchanged (moments are not decayed) and
/// receive no weight decay. The bias correction uses the parameter's step count t, as SparseAdam does (no per-row counts).
/// The per-row formula is AdamW's above (eps added after the bias correction), so a sparse step on fresh state equals the
/// dense step on those rows. State: <c>{name}.exp_avg</c>, <c>{name}.exp_avg_sq</c> (shape of the parameter), <c>{name}.step</c> (I32 [1]).
/// </summary>
public sealed class AdamW : Optimizer
{
    /// <summary>Decay rate of the first moment.</summary>
    public float Beta1 { get; }
    /// <summary>Decay rate of the second moment.</summary>
    public float Beta2 { get; }
    /// <summary>Added to the denominator for numerical stability.</summary>
    public float Eps { get; }
    /// <summary>Decoupled weight decay coefficient (multiplies <c>lr</c>).</summary>
    public float WeightDecay { get; }

    AdamKernels? kernels;

    /// <summary>Creates AdamW over named parameters (e.g. <c>module.NamedParameters()</c>).</summary>
    /// <exception cref="ArgumentException">No parameters, repeated names, a non-F32 parameter, or parameters on different devices.</exception>
    /// <exception cref="ArgumentOutOfRangeException">lr or weightDecay negative, a beta outside [0, 1), eps not positive.</exception>
    public AdamW(IEnumerable<(string Name, Tensor Param)> parameters, float lr = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0.01f)
        : base(parameters, lr, ["exp_avg", "exp_avg_sq"], countsSteps: true)
    {
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, $"beta1 = {beta1}: expected a value in [0, 1).");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, $"beta2 = {beta2}: expected a value in [0, 1).");
        if (!(eps > 0 && float.IsFinite(eps))) throw new ArgumentOutOfRangeException(nameof(eps), eps, $"eps = {eps}: expected a finite value > 0.");
        if (!(weightDecay >= 0 && float.IsFinite(weightDecay))) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, $"weightDecay = {weightDecay}: expected a finite value >= 0.");
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    private protected override bool PacksDenseParameters => true;

    AdamArgs Args(long step) => AdamArgs.At(LearningRate, WeightDecay, Beta1, Beta2, Eps, step);

    private protected override void UpdateDense(Tensor p, Tensor grad, Tensor[] state, long step)
    {
        if (p.Length == 0) return;
        kernels ??= Device.Get(static d => new AdamKernels(d));
        var w = Device.Split(p.Length);
        kernels.Dense(w.Workers, w, Skip, p.View, grad.View, state[0].View, state[1].View, Args(step));
    }

    private protected override void UpdateSparse(Tensor p, RowSparseGrad grad, int cols, Tensor[] state, long step)
    {
        kernels ??= Device.Get(static d => new AdamKernels(d));
        var w = Device.Split(grad.Values.Length);
        kernels.Sparse(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, state[0].View, state[1].View, Args(step));
    }
}

/// <summary>Per-step constants of an AdamW update.</summary>
internal readonly struct AdamArgs(float decay, float beta1, float beta2, float stepSize, float bias2Sqrt, float eps)
{
    public readonly float Decay = decay;         // 1 - lr * weightDecay
    public readonly float Beta1 = beta1;
    public readonly float Beta2 = beta2;
    public readonly float StepSize = stepSize;   // lr / (1 - beta1^t)
    public readonly float Bias2Sqrt = bias2Sqrt; // sqrt(1 - beta2^t)
    public readonly float Eps = eps;

    /// <summary>The constants of step <paramref name="step"/> (1-based), with the bias corrections in double on the host, as PyTorch
    /// computes them in Python floats.</summary>
    public static AdamArgs At(float lr, float weightDecay, float beta1, float beta2, float eps, long step)
    {
        double bias1 = 1 - Math.Pow(beta1, step);
        double bias2 = 1 - Math.Pow(beta2, step);
        return new AdamArgs(1f - lr * weightDecay, beta1, beta2, (float)(lr / bias1), (float)Math.Sqrt(bias2), eps);
    }
}

/// <summary>AdamW kernels, loaded once per device: the portable kernels below (the definition, every backend), or the SIMD
/// bodies' kernels (Cpu/AdamWCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class AdamKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamArgs> Dense;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamArgs> Sparse;

    public AdamKernels(Device d)
    {
        // The CPU bodies use Vector<float>, whatever width it has here (scalar without SIMD): they need no vector unit.
        Dense = d.LoadKernel(AdamWKernel, AdamWCpu.DenseKernel, 0);
        Sparse = d.LoadKernel(SparseAdamWKernel, AdamWCpu.SparseKernel, 0);
    }

    // p, g, m, v: [n]; updates p, m, v in place
    static void AdamWKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                Update(p, m, v, i, g[i], a);
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R * cols); p, m, v: [rows of p, cols]; only the listed rows change
    static void SparseAdamWKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int r = i / cols, row = rows[r];
                if ((uint)row >= (uint)(p.Length / cols)) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                int j = row * cols + (i - r * cols);
                Update(p, m, v, j, values[i], a);
            }
    }

    // One element j of p, m, v with gradient g
    static void Update(ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, int j, float g, AdamArgs a)
    {
        float mj = a.Beta1 * m[j] + (1f - a.Beta1) * g;
        float vj = a.Beta2 * v[j] + (1f - a.Beta2) * g * g;
        m[j] = mj;
        v[j] = vj;
        p[j] = p[j] * a.Decay - a.StepSize * mj / (MathF.Sqrt(vj) / a.Bias2Sqrt + a.Eps);
    }
}
