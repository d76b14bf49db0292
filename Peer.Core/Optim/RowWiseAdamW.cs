// AdamW whose second moment is kept per row of a table (FBGEMM's partial_rowwise_adam, with AdamW's decoupled weight
// decay): one float of second moment per row instead of one per element, and the first moment per element or, with
// beta1 = 0, not at all. As ILGPU kernels: dense over every row, and lazy sparse over only the rows a RowSparseGrad
// lists (untouched rows keep values and moments bit for bit). One kernel index takes whole rows: the row's mean
// squared gradient is needed before any of its elements is updated.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>
/// AdamW with a row-wise second moment: FBGEMM's <c>partial_rowwise_adam</c> (first moment per element, second per row),
/// written as <see cref="AdamW"/> writes it (eps added after the bias correction, decoupled weight decay). The rows of a
/// parameter are its first dimension: shape <c>[R, ...]</c> gives R rows of <c>c = Length / R</c> elements (a vector
/// <c>[n]</c> is n rows of one element, which is plain AdamW). For each row r with gradient row <c>g</c>, at the
/// parameter's step t (counted from 1 on the steps where it had a gradient, as AdamW and SparseAdam count it):
/// <code>
/// m[r, j] = beta1 * m[r, j] + (1 - beta1) * g[j]                   (per element; with beta1 = 0, m = g and no m is kept)
/// v[r]    = beta2 * v[r] + (1 - beta2) * (g[0]^2 + ... + g[c-1]^2) / c
/// w[r, j] = w[r, j] * (1 - lr * weightDecay) - lr / (1 - beta1^t) * m[r, j] / (sqrt(v[r]) / sqrt(1 - beta2^t) + eps)
/// </code>
/// The first moment is kept per element by default, as FBGEMM does: momentum is what the step direction is made of, and a
/// per-row mean of it would mix the row's coordinates; it costs c floats per row, so the state is <c>c + 1</c> floats per
/// row (about half of AdamW's <c>2 c</c>). Pass <c>beta1 = 0</c> to keep none (RMSProp with Adam's bias correction): one float
/// per row, as <see cref="RowWiseAdagrad"/>. With a dense gradient every row takes the update (a row whose gradient is zero
/// still decays its moments and moves by its momentum); with a <see cref="RowSparseGrad"/> only the listed rows do (lazy:
/// other rows keep values and moments bit for bit and receive no weight decay). The sparse gradient's rows must be the
/// parameter's rows (values <c>[R', c]</c>). State: <c>{name}.exp_avg</c> (shape of the parameter; absent when beta1 = 0),
/// <c>{name}.exp_avg_sq</c> (F32 <c>[R]</c>, addressed by row index), <c>{name}.step</c> (I32 [1]).
/// </summary>
public sealed class RowWiseAdamW : Optimizer
{
    /// <summary>Decay rate of the first moment; 0 keeps no first moment.</summary>
    public float Beta1 { get; }
    /// <summary>Decay rate of the row-wise second moment.</summary>
    public float Beta2 { get; }
    /// <summary>Added to the denominator for numerical stability.</summary>
    public float Eps { get; }
    /// <summary>Decoupled weight decay coefficient (multiplies <c>lr</c>).</summary>
    public float WeightDecay { get; }
    /// <summary>Whether a first moment is kept (<see cref="Beta1"/> above 0).</summary>
    public bool HasFirstMoment => Beta1 != 0f;

    RowAdamKernels? kernels;

    /// <summary>Creates row-wise AdamW over named parameters (e.g. the tables of <c>module.NamedParameters()</c>).</summary>
    /// <exception cref="ArgumentException">No parameters, repeated names, a non-F32 parameter, or parameters on different devices.</exception>
    /// <exception cref="ArgumentOutOfRangeException">lr or weightDecay negative, a beta outside [0, 1), eps not positive.</exception>
    public RowWiseAdamW(IEnumerable<(string Name, Tensor Param)> parameters, float lr = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0.01f)
        : base(parameters, lr, beta1 == 0f ? ["exp_avg_sq"] : ["exp_avg", "exp_avg_sq"], countsSteps: true)
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

    // exp_avg (when kept) has the parameter's shape; exp_avg_sq, always last, one element per row.
    private protected override int[] StateShape(int k, Tensor p) => HasFirstMoment && k == 0 ? p.Shape : [Rows(p)];

    private protected override bool RowWise => true;

    AdamArgs Args(long step) => AdamArgs.At(LearningRate, WeightDecay, Beta1, Beta2, Eps, step); // AdamW's step constants

    private protected override void UpdateDense(Tensor p, Tensor grad, Tensor[] state, long step)
    {
        if (p.Length == 0) return;
        kernels ??= Device.Get(static d => new RowAdamKernels(d));
        var w = Device.Split(Rows(p));
        int cols = RowWidth(p);
        if (HasFirstMoment) kernels.Dense(w.Workers, w, Skip, p.View, grad.View, state[0].View, state[1].View, cols, Args(step));
        else kernels.DenseNoMomentum(w.Workers, w, Skip, p.View, grad.View, state[0].View, cols, Args(step));
    }

    private protected override void UpdateSparse(Tensor p, RowSparseGrad grad, int cols, Tensor[] state, long step)
    {
        kernels ??= Device.Get(static d => new RowAdamKernels(d));
        var w = Device.Split(grad.Rows.Length);
        if (HasFirstMoment) kernels.Sparse(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, state[0].View, state[1].View, Args(step));
        else kernels.SparseNoMomentum(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, state[0].View, Args(step));
    }
}

/// <summary>Row-wise AdamW kernels, loaded once per device (they take <see cref="AdamArgs"/> as AdamW's do): the portable kernels
/// below (the definition, every backend), or the SIMD bodies' kernels (Cpu/RowWiseAdamWCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class RowAdamKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, AdamArgs> Dense;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, AdamArgs> DenseNoMomentum;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamArgs> Sparse;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, AdamArgs> SparseNoMomentum;

    public RowAdamKernels(Device d)
    {
        // The CPU bodies' eight-float vectors are emulated where the CPU does not accelerate them: they need no vector unit.
        Dense = d.LoadKernel(d.Choose(DenseKernel, RowWiseAdamWCpu.DenseKernel, 0));
        DenseNoMomentum = d.LoadKernel(d.Choose(DenseNoMomentumKernel, RowWiseAdamWCpu.DenseNoMomentumKernel, 0));
        Sparse = d.LoadKernel(d.Choose(SparseKernel, RowWiseAdamWCpu.SparseKernel, 0));
        SparseNoMomentum = d.LoadKernel(d.Choose(SparseNoMomentumKernel, RowWiseAdamWCpu.SparseNoMomentumKernel, 0));
    }

    // p, g, m: [rows, cols], v: [rows] (work.N = rows); every row updated in place
    static void DenseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, int cols, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
                Row(p, m, v, g, r, r * cols, cols, a);
    }

    // p, g: [rows, cols], v: [rows] (work.N = rows); as DenseKernel with m = g
    static void DenseNoMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> v, int cols, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
                RowNoMomentum(p, v, g, r, r * cols, cols, a);
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R); p, m: [rows of p, cols], v: [rows of p]; only the listed rows change
    static void SparseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int row = rows[i];
                if ((uint)row >= (uint)v.Length) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                Row(p, m, v, values, row, i * cols, cols, a);
            }
    }

    // as SparseKernel with m = g
    static void SparseNoMomentumKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> v, AdamArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int row = rows[i];
                if ((uint)row >= (uint)v.Length) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                RowNoMomentum(p, v, values, row, i * cols, cols, a);
            }
    }

    // The row's second moment from the cols gradient elements at g[at..], then the denominator of its update
    static float Denominator(ArrayView<float> v, ArrayView<float> g, int r, int at, int cols, AdamArgs a)
    {
        float vr = a.Beta2 * v[r] + (1f - a.Beta2) * (RowAdagradKernels.Squares(g, at, cols) / cols);
        v[r] = vr;
        return MathF.Sqrt(vr) / a.Bias2Sqrt + a.Eps;
    }

    static void Row(ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, ArrayView<float> g, int r, int at, int cols, AdamArgs a)
    {
        float denom = Denominator(v, g, r, at, cols, a);
        int first = r * cols;
        for (int j = 0; j < cols; j++)
        {
            float mj = a.Beta1 * m[first + j] + (1f - a.Beta1) * g[at + j];
            m[first + j] = mj;
            p[first + j] = p[first + j] * a.Decay - a.StepSize * mj / denom;
        }
    }

    static void RowNoMomentum(ArrayView<float> p, ArrayView<float> v, ArrayView<float> g, int r, int at, int cols, AdamArgs a)
    {
        float denom = Denominator(v, g, r, at, cols, a);
        int first = r * cols;
        for (int j = 0; j < cols; j++) p[first + j] = p[first + j] * a.Decay - a.StepSize * g[at + j] / denom;
    }
}
