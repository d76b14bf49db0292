// Row-wise AdaGrad for tables looked up by row, as large embedding-table trainers use it (FBGEMM's rowwise_adagrad,
// TorchRec's EXACT_ROWWISE_ADAGRAD): one float of state per row, the running sum of the row's mean squared gradient,
// so a [N, d] table costs N floats of state instead of AdamW's 2 N d. As ILGPU kernels: a dense kernel over every
// row, and a lazy sparse kernel over only the rows a RowSparseGrad lists (untouched rows keep values and state bit for
// bit). One kernel index takes whole rows: the row's mean needs all its elements before any of them is updated.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>
/// Row-wise AdaGrad: FBGEMM's <c>rowwise_adagrad</c> with decoupled weight decay (its <c>weight_decay_mode</c> 2,
/// DECOUPLE; mode 0 when <c>weightDecay</c> is 0). The rows of a parameter are its first dimension: a parameter of shape
/// <c>[R, ...]</c> has R rows of <c>c = Length / R</c> elements (a vector <c>[n]</c> is n rows of one element, which is
/// plain AdaGrad). For each row r with gradient row <c>g</c> (<c>c</c> elements), at every step where it has a gradient:
/// <code>
/// G[r] = G[r] + (g[0]^2 + ... + g[c-1]^2) / c
/// w[r, j] = (1 - lr * weightDecay) * w[r, j] - lr / (sqrt(G[r]) + eps) * g[j]
/// </code>
/// G starts at 0 (FBGEMM's, and TorchRec's <c>initial_accumulator_value</c> 0); eps is added after the square root, as both do.
/// With a dense gradient every row takes the update (a row whose gradient is zero keeps G and is only decayed). With a
/// <see cref="RowSparseGrad"/> only the listed rows do (lazy, as FBGEMM's fused backward): other rows keep their values and
/// G bit for bit and receive no weight decay. The sparse gradient's rows must be the parameter's rows (values
/// <c>[R', c]</c>). State: <c>{name}.sum</c>, F32 <c>[R]</c>, G per row, addressed by row index. No step count is kept:
/// the update does not use one.
/// </summary>
public sealed class RowWiseAdagrad : Optimizer
{
    /// <summary>Added to <c>sqrt(G)</c> for numerical stability.</summary>
    public float Eps { get; }
    /// <summary>Decoupled weight decay coefficient (multiplies <c>lr</c>).</summary>
    public float WeightDecay { get; }

    RowAdagradKernels? kernels;

    /// <summary>Creates row-wise AdaGrad over named parameters (e.g. the tables of <c>module.NamedParameters()</c>).</summary>
    /// <param name="parameters">The parameters, by name.</param>
    /// <param name="lr">Learning rate (TorchRec's default 0.01; the rate of a table that AdamW would step at <c>lr</c> is typically
    /// several times larger, since the accumulated G only grows).</param>
    /// <param name="eps">Added to <c>sqrt(G)</c>.</param>
    /// <param name="weightDecay">Decoupled weight decay.</param>
    /// <exception cref="ArgumentException">No parameters, repeated names, a non-F32 parameter, or parameters on different devices.</exception>
    /// <exception cref="ArgumentOutOfRangeException">lr or weightDecay negative or not finite, eps not positive.</exception>
    public RowWiseAdagrad(IEnumerable<(string Name, Tensor Param)> parameters, float lr = 1e-2f, float eps = 1e-8f, float weightDecay = 0f)
        : base(parameters, lr, ["sum"], countsSteps: false)
    {
        if (!(eps > 0 && float.IsFinite(eps))) throw new ArgumentOutOfRangeException(nameof(eps), eps, $"eps = {eps}: expected a finite value > 0.");
        if (!(weightDecay >= 0 && float.IsFinite(weightDecay))) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, $"weightDecay = {weightDecay}: expected a finite value >= 0.");
        Eps = eps;
        WeightDecay = weightDecay;
    }

    private protected override int[] StateShape(int k, Tensor p) => [Rows(p)];

    private protected override bool RowWise => true;

    RowAdagradArgs Args => new(LearningRate, 1f - LearningRate * WeightDecay, Eps);

    private protected override void UpdateDense(Tensor p, Tensor grad, Tensor[] state, long step)
    {
        if (p.Length == 0) return;
        kernels ??= Device.Get(static d => new RowAdagradKernels(d));
        var w = Device.Split(Rows(p));
        kernels.Dense(w.Workers, w, Skip, p.View, grad.View, state[0].View, RowWidth(p), Args);
    }

    private protected override void UpdateSparse(Tensor p, RowSparseGrad grad, int cols, Tensor[] state, long step)
    {
        kernels ??= Device.Get(static d => new RowAdagradKernels(d));
        var w = Device.Split(grad.Rows.Length);
        kernels.Sparse(w.Workers, w, Skip, grad.Rows.IntView, grad.Values.View, cols, p.View, state[0].View, Args);
    }
}

/// <summary>Per-step constants of a row-wise AdaGrad update.</summary>
internal readonly struct RowAdagradArgs(float lr, float decay, float eps)
{
    public readonly float Lr = lr;
    public readonly float Decay = decay; // 1 - lr * weightDecay
    public readonly float Eps = eps;
}

/// <summary>Row-wise AdaGrad kernels, loaded once per device: the portable kernels below (the definition, every backend), or the
/// SIMD bodies' kernels (Cpu/RowWiseAdagradCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class RowAdagradKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, RowAdagradArgs> Dense;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, RowAdagradArgs> Sparse;

    public RowAdagradKernels(Device d)
    {
        // The CPU bodies' eight-float vectors are emulated where the CPU does not accelerate them: they need no vector unit.
        Dense = d.LoadKernel(d.Choose(DenseKernel, RowWiseAdagradCpu.DenseKernel, 0));
        Sparse = d.LoadKernel(d.Choose(SparseKernel, RowWiseAdagradCpu.SparseKernel, 0));
    }

    // p, g: [rows, cols], sum: [rows] (work.N = rows); every row updated in place
    static void DenseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<float> p, ArrayView<float> g, ArrayView<float> sum, int cols, RowAdagradArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
                Row(p, g, sum, r, r * cols, cols, a);
    }

    // rows: [R] distinct, values: [R, cols] (work.N = R); p: [rows of p, cols], sum: [rows of p]; only the listed rows change
    static void SparseKernel(Index1D w, Work work, ArrayView<int> skip, ArrayView<int> rows, ArrayView<float> values, int cols,
        ArrayView<float> p, ArrayView<float> sum, RowAdagradArgs a)
    {
        if (skip[0] != 0) return; // a skipped step (Optimizer.SkipFlag) changes nothing
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int row = rows[i];
                if ((uint)row >= (uint)sum.Length) continue; // a row outside p (unchecked on GPUs: Optimizer.Validate) changes nothing
                Row(p, values, sum, row, i * cols, cols, a);
            }
    }

    // Row r of p (and of sum) from the cols gradient elements at g[at..]
    static void Row(ArrayView<float> p, ArrayView<float> g, ArrayView<float> sum, int r, int at, int cols, RowAdagradArgs a)
    {
        float total = sum[r] + Squares(g, at, cols) / cols;
        sum[r] = total;
        float multiplier = a.Lr / (MathF.Sqrt(total) + a.Eps);
        int first = r * cols;
        for (int j = 0; j < cols; j++) p[first + j] = a.Decay * p[first + j] - multiplier * g[at + j];
    }

    /// <summary>
    /// The sum of squares of <c>g[at .. at + n)</c> in the one order every row-wise kernel uses, so that the CPU bodies
    /// (Cpu/RowWiseAdagradCpu.cs, eight-float vectors) give the same bits: eight interleaved partial sums <c>s0..s7</c> over the
    /// first <c>n - n % 8</c> elements (<c>s_l</c> takes the elements <c>j = l mod 8</c>), combined as
    /// <c>((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))</c>, then the last <c>n % 8</c> elements one by one.
    /// </summary>
    internal static float Squares(ArrayView<float> g, int at, int n)
    {
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, s4 = 0f, s5 = 0f, s6 = 0f, s7 = 0f;
        int j = 0;
        for (; j + 8 <= n; j += 8)
        {
            float g0 = g[at + j], g1 = g[at + j + 1], g2 = g[at + j + 2], g3 = g[at + j + 3];
            float g4 = g[at + j + 4], g5 = g[at + j + 5], g6 = g[at + j + 6], g7 = g[at + j + 7];
            s0 += g0 * g0;
            s1 += g1 * g1;
            s2 += g2 * g2;
            s3 += g3 * g3;
            s4 += g4 * g4;
            s5 += g5 * g5;
            s6 += g6 * g6;
            s7 += g7 * g7;
        }
        float squares = ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7));
        for (; j < n; j++)
        {
            float gj = g[at + j];
            squares += gj * gj;
        }
        return squares;
    }
}
