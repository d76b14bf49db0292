// Stochastic gradient descent with optional momentum and L2 weight decay, as torch.optim.SGD computes it (no
// dampening, no Nesterov), as ILGPU kernels; a lazy sparse variant updates only the rows a RowSparseGrad lists.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>
/// SGD with PyTorch's semantics (<c>torch.optim.SGD</c>, dampening 0, nesterov off). For each parameter with gradient g:
/// <code>
/// d = g + weightDecay * p
/// b = momentum * b + d      (momentum != 0; b starts at 0, so the first step gives b = d as PyTorch's clone does)
/// p = p - lr * (momentum != 0 ? b : d)
/// </code>
/// With a <see cref="RowSparseGrad"/> the same update runs on the listed rows only: other rows keep their values and momentum
/// buffers unchanged (lazy: their buffers are not decayed and they receive no weight decay).
/// State (momentum only): <c>{name}.momentum_buffer</c>, the shape of the parameter.
/// </summary>
public sealed class Sgd : Optimizer
{
    /// <summary>Momentum factor (0: plain SGD).</summary>
    public float Momentum { get; }
    /// <summary>L2 penalty coefficient added to the gradient.</summary>
    public float WeightDecay { get; }

    SgdKernels? kernels;

    /// <summary>Creates SGD over named parameters (e.g. <c>module.NamedParameters()</c>).</summary>
    /// <exception cref="ArgumentException">No parameters, repeated names, a non-F32 parameter, or parameters on different devices.</exception>
    /// <exception cref="ArgumentOutOfRangeException">lr, momentum or weightDecay negative or not finite.</exception>
    public Sgd(IEnumerable<(string Name, Tensor Param)> parameters, float lr, float momentum = 0f, float weightDecay = 0f)
        : base(parameters, lr, momentum != 0f ? ["momentum_buffer"] : [], countsSteps: false)
    {
        if (!(momentum >= 0 && float.IsFinite(momentum))) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, $"momentum = {momentum}: expected a finite value >= 0.");
        if (!(weightDecay >= 0 && float.IsFinite(weightDecay))) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, $"weightDecay = {weightDecay}: expected a finite value >= 0.");
        Momentum = momentum;
        WeightDecay = weightDecay;
    }

    private protected override bool PacksDenseParameters => true;

    private protected override void UpdateDense(Tensor p, Tensor grad, Tensor[] state, long step)
    {
        if (p.Length == 0) return;
        kernels ??= Device.Get(static d => new SgdKernels(d));
        var w = Device.Split(p.Length);
        if (Momentum == 0f) kernels.Dense(w.Workers, w, Skip, p.View, grad.View, LearningRate, WeightDecay);
        else kernels.DenseMomentum(w.Workers, w, Skip, p.View, grad.View, state[0].View, LearningRate, WeightDecay, Momentum);
    }

    private protected override void UpdateSparse(Tensor p, RowSparseGrad grad, int cols, Tensor[] state, long step)
    {
        kernels ??= Device.Get(static d => new SgdKernels(d));
        var w = Device.Split(grad.Values.Length);
        if (Momentum == 0f) kernels.Sparse(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, LearningRate, WeightDecay);
        else kernels.SparseMomentum(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, state[0].View, LearningRate, WeightDecay, Momentum);
    }
}

/// <summary>SGD kernels, loaded once per device.</summary>
internal sealed class SgdKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, float, float> Dense;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float, float> DenseMomentum;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, float, float> Sparse;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, float, float, float> SparseMomentum;

    public SgdKernels(Device d)
    {
        Dense = d.LoadKernel(SgdKernel);
        DenseMomentum = d.LoadKernel(SgdMomentumKernel);
        Sparse = d.LoadKernel(SparseSgdKernel);
        SparseMomentum = d.LoadKernel(SparseSgdMomentumKernel);
    }

    // p, g: [n]; p -= lr * (g + wd * p)
    static void SgdKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, float lr, float wd)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                p[i] -= lr * (g[i] + wd * p[i]);
    }

    // p, g, b: [n]; b = mu * b + (g + wd * p); p -= lr * b
    static void SgdMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> b, float lr, float wd, float mu)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                float bi = mu * b[i] + (g[i] + wd * p[i]);
                b[i] = bi;
                p[i] -= lr * bi;
            }
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R * cols); p: [rows of p, cols]; only the listed rows change
    static void SparseSgdKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols, ArrayView<float> p, float lr, float wd)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int r = i / cols, row = rows[r];
                if ((uint)row >= (uint)(p.Length / cols)) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                int j = row * cols + (i - r * cols);
                p[j] -= lr * (values[i] + wd * p[j]);
            }
    }

    // as SparseSgdKernel, with the momentum buffer b: [rows of p, cols]
    static void SparseSgdMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> b, float lr, float wd, float mu)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int r = i / cols, row = rows[r];
                if ((uint)row >= (uint)(p.Length / cols)) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                int j = row * cols + (i - r * cols);
                float bj = mu * b[j] + (values[i] + wd * p[j]);
                b[j] = bj;
                p[j] -= lr * bj;
            }
    }
}
