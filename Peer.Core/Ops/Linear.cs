// The affine map of a fully connected layer, y = x @ W^T + b, as one differentiable op: the product runs
// on the matmul kernel (W read transposed, no copy), the bias is added by a fused row kernel, and the
// bias gradient is a column sum with one work item per column (fixed order, so deterministic). On the CPU
// accelerator the launcher loads SIMD bodies for both bias kernels, with the same operations (Cpu/LinearCpu.cs).
// LinearGelu/LinearRelu/LinearSilu fuse the bias with the activation that follows it (the dense FFW's first layer).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Fully connected map <c>y = x @ weightᵀ + bias</c>: <paramref name="x"/> <c>[.., in]</c>, <paramref name="weight"/>
    /// <c>[out, in]</c>, <paramref name="bias"/> <c>[out]</c> or null; result <c>[.., out]</c>. Differentiable:
    /// <c>dx = dy @ weight</c>, <c>dweight = dyᵀ @ x</c>, <c>dbias = Σ_rows dy</c> (leading dimensions flattened into rows).
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, rank-0 <paramref name="x"/>, or shapes that disagree.</exception>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        var (rows, outF, inF) = CheckLinear(x, weight, bias);
        var d = x.Device;
        int[] yShape = [.. x.Shape[..^1], outF];
        var y = Tensor.Empty(d, DType.F32, yShape);
        if (y.Length > 0)
        {
            if (inF == 0) Fill(y, 0f);
            else MatMulInto(x, weight, y, false, true, 1, rows, outF, inF, false, false, accumulate: false);
            if (bias is not null)
            {
                var w = d.Split(rows);
                d.Get(static d => new LinearKernels(d)).AddBias(w.Workers, w, y.View, bias.View, outF);
            }
        }
        Tensor[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        if (d.Tape.Needs(inputs))
        {
            d.Tape.Record(y, inputs, g =>
            {
                LinearMatMulGradients(g, x, weight, rows, outF, inF);
                if (bias is not null && bias.RequiresGrad)
                {
                    var db = Tensor.Empty(d, DType.F32, outF);
                    if (outF > 0)
                    {
                        var w = d.Split(outF);
                        d.Get(static d => new LinearKernels(d)).ColumnSums(w.Workers, w, g.View, db.View, rows);
                    }
                    Tape.Accumulate(bias, db);
                }
            });
        }
        return y;
    }

    // dx = g @ weight, dweight = gᵀ @ x, accumulated into x and weight where they take gradients (g: [rows, out]).
    static void LinearMatMulGradients(Tensor g, Tensor x, Tensor weight, int rows, int outF, int inF)
    {
        var d = g.Device;
        if (x.RequiresGrad)
        {
            bool product = x.Length > 0 && outF > 0; // the product writes every element; otherwise the gradient is zero
            var dx = product ? Tensor.Empty(d, DType.F32, x.Shape) : Tensor.Zeros(d, x.Shape);
            if (product) MatMulInto(g, weight, dx, false, false, 1, rows, inF, outF, false, false, accumulate: false);
            Tape.Accumulate(x, dx);
        }
        if (weight.RequiresGrad)
        {
            Tensor dw;
            if (d.ChunksWork && rows > 0 && outF > 0 && outF < inF)
            {
                // Chunked over cores by rows of the product, each worker packs all of the right operand: with few outputs and
                // many inputs (a patch embedding's 64 x 784) that is the [rows, in] input twice over. The transposed product
                // xᵀ g packs only g (the same products in the same order), and a transpose of the small result follows.
                using var dwT = Tensor.Empty(d, DType.F32, inF, outF);
                MatMulInto(x, g, dwT, true, false, 1, inF, outF, rows, false, false, accumulate: false);
                dw = Transpose(dwT);
            }
            else
            {
                bool product = outF * inF > 0 && rows > 0;
                dw = product ? Tensor.Empty(d, DType.F32, outF, inF) : Tensor.Zeros(d, outF, inF);
                if (product) MatMulInto(g, x, dw, true, false, 1, outF, inF, rows, false, false, accumulate: false);
            }
            Tape.Accumulate(weight, dw);
        }
    }

    /// <summary>
    /// <see cref="Linear"/> then <see cref="Gelu"/>, fused: <c>y = gelu(x @ weightᵀ + bias)</c> with one kernel for the bias and the
    /// activation, and one for the activation's gradient and the bias gradient. Shapes as for <see cref="Linear"/> (bias required).
    /// Differentiable in all three inputs.
    /// </summary>
    /// <exception cref="ArgumentException">As for <see cref="Linear"/>.</exception>
    public static Tensor LinearGelu(Tensor x, Tensor weight, Tensor bias, GeluApproximation approximate = GeluApproximation.None) =>
        LinearActivation(x, weight, bias, approximate == GeluApproximation.Tanh ? Activation.GeluTanh : Activation.GeluExact);

    /// <summary><see cref="Linear"/> then <see cref="Relu"/>, fused as <see cref="LinearGelu"/> is. Differentiable.</summary>
    /// <exception cref="ArgumentException">As for <see cref="Linear"/>.</exception>
    public static Tensor LinearRelu(Tensor x, Tensor weight, Tensor bias) => LinearActivation(x, weight, bias, Activation.Relu);

    /// <summary><see cref="Linear"/> then <see cref="Silu"/>, fused as <see cref="LinearGelu"/> is. Differentiable.</summary>
    /// <exception cref="ArgumentException">As for <see cref="Linear"/>.</exception>
    public static Tensor LinearSilu(Tensor x, Tensor weight, Tensor bias) => LinearActivation(x, weight, bias, Activation.Silu);

    // Unfused, the chain is matmul, bias add, activation; backward activation gradient, bias column sums, two matmuls. Fused, the
    // bias add and the activation are one pass over the rows, and the activation's gradient and the bias gradient one pass over
    // the columns: 7 launches become 5. The pre-activation z = x Wᵀ + b is kept for the backward, as the unfused activation keeps it.
    static Tensor LinearActivation(Tensor x, Tensor weight, Tensor bias, Activation act)
    {
        ArgumentNullException.ThrowIfNull(bias);
        var (rows, outF, inF) = CheckLinear(x, weight, bias);
        var d = x.Device;
        int[] yShape = [.. x.Shape[..^1], outF];
        var z = Tensor.Empty(d, DType.F32, yShape);
        var y = Tensor.Empty(d, DType.F32, yShape);
        var k = d.Get(static d => new LinearKernels(d));
        if (y.Length > 0)
        {
            if (inF == 0) Fill(z, 0f);
            else MatMulInto(x, weight, z, false, true, 1, rows, outF, inF, false, false, accumulate: false);
            var w = d.Split(rows);
            k.BiasActivation[(int)act](w.Workers, w, z.View, bias.View, y.View, outF);
        }
        if (!d.Tape.Needs(x, weight, bias))
        {
            z.Dispose();
            return y;
        }
        d.Tape.Record(y, [x, weight, bias], g =>
        {
            using var dz = Tensor.Empty(d, DType.F32, yShape);
            var db = Tensor.Empty(d, DType.F32, outF);
            if (outF > 0)
            {
                // The fused kernel gives each worker a chunk of columns: with fewer than NarrowColumns per worker (a stem's 16
                // channels over 100k pixels) it leaves workers idle or pays per row for a few floats, so the gradient runs as
                // the unfused pair instead, an element-wise map over all of dz and the column sums (the same values).
                var w = d.Split(outF);
                if (outF >= NarrowColumns * w.Workers)
                    k.BiasActivationBackward[(int)act](w.Workers, w, z.View, g.View, dz.View, db.View, rows);
                else
                {
                    var we = d.Split(rows * outF);
                    if (we.N > 0) d.Get(static d => new ActivationKernels(d)).Backward[(int)act](we.Workers, we, z.View, g.View, dz.View);
                    k.ColumnSums(w.Workers, w, dz.View, db.View, rows);
                }
            }
            LinearMatMulGradients(dz, x, weight, rows, outF, inF);
            Tape.Accumulate(bias, db);
        }, z);
        return y;
    }

    /// <summary>Columns per worker below which <see cref="LinearActivation"/>'s gradient runs as two launches (see there).</summary>
    internal const int NarrowColumns = 32;

    // Validates Linear's operands (bias optional) and returns (rows, out, in).
    static (int Rows, int Out, int In) CheckLinear(Tensor x, Tensor weight, Tensor? bias)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(weight, DType.F32, nameof(weight));
        Check.SameDevice(x, weight, nameof(weight));
        Check.That(x.Rank >= 1, nameof(x), x.Shape, "a tensor [.., in] of rank >= 1");
        Check.Rank(weight, 2, nameof(weight));
        int outF = weight.Shape[0], inF = weight.Shape[1];
        Check.That(x.Shape[^1] == inF, nameof(x), x.Shape, $"last dimension {inF} (in features of weight {Tensor.FormatShape(weight.Shape)})");
        if (bias is not null)
        {
            Check.DType(bias, DType.F32, nameof(bias));
            Check.SameDevice(x, bias, nameof(bias));
            Check.Shape(bias, nameof(bias), outF);
        }
        return ((int)Tensor.Numel(x.Shape[..^1]), outF, inF);
    }
}

/// <summary>Kernels of the linear op: the portable kernels below (the definition), or the SIMD bodies' kernels
/// (Cpu/LinearCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class LinearKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> AddBias;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> ColumnSums;
    // Indexed by the activation's number (Ops.Activation: GeluExact, GeluTanh, Relu, Silu), as ActivationKernels is.
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>[] BiasActivation;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>[] BiasActivationBackward;

    public LinearKernels(Device d)
    {
        AddBias = d.LoadKernel(AddBiasKernel, LinearCpu.AddBiasKernel, 256);
        ColumnSums = d.LoadKernel(ColumnSumsKernel, LinearCpu.ColumnSumsKernel, 256);
        BiasActivation = [LoadForward<GeluExactAct>(d), LoadForward<GeluTanhAct>(d), LoadForward<ReluAct>(d), LoadForward<SiluAct>(d)];
        BiasActivationBackward = [LoadBackward<GeluExactAct>(d), LoadBackward<GeluTanhAct>(d), LoadBackward<ReluAct>(d), LoadBackward<SiluAct>(d)];
    }

    static Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> LoadForward<TAct>(Device d) where TAct : struct, IActivation =>
        d.LoadKernel(BiasActivationKernel<TAct>, LinearCpu.BiasActivationKernel<TAct>, 256);

    static Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> LoadBackward<TAct>(Device d) where TAct : struct, IActivation =>
        d.LoadKernel(BiasActivationBackwardKernel<TAct>, LinearCpu.BiasActivationBackwardKernel<TAct>, 256);

    // y: [rows, cols] += bias: [cols], one row per item
    static void AddBiasKernel(Index1D w, Work work, ArrayView<float> y, ArrayView<float> bias, int cols)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
                for (int j = 0; j < cols; j++) y[r * cols + j] += bias[j];
    }

    // g: [rows, cols] -> db: [cols] = Σ_rows g, one column per item, rows summed in order
    static void ColumnSumsKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> db, int rows)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int j = s, e = work.End(s); j < e; j++)
            {
                float acc = 0f;
                for (int r = 0; r < rows; r++) acc += g[r * work.N + j];
                db[j] = acc;
            }
    }

    // z: [rows, cols] += bias: [cols], then y: [rows, cols] = act(z); one row per item (the sum and the map of the unfused ops)
    static void BiasActivationKernel<TAct>(Index1D w, Work work, ArrayView<float> z, ArrayView<float> bias, ArrayView<float> y, int cols)
        where TAct : struct, IActivation
    {
        var act = default(TAct);
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
                for (int j = 0; j < cols; j++)
                {
                    float v = z[r * cols + j] + bias[j];
                    z[r * cols + j] = v;
                    y[r * cols + j] = act.F(v);
                }
    }

    // z, g: [rows, cols] -> dz: [rows, cols] = g * act'(z), db: [cols] = Σ_rows dz; one column per item, rows summed in order
    static void BiasActivationBackwardKernel<TAct>(Index1D w, Work work, ArrayView<float> z, ArrayView<float> g, ArrayView<float> dz, ArrayView<float> db, int rows)
        where TAct : struct, IActivation
    {
        var act = default(TAct);
        int cols = work.N;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int j = s, e = work.End(s); j < e; j++)
            {
                float acc = 0f;
                for (int r = 0; r < rows; r++)
                {
                    float v = g[r * cols + j] * act.D(z[r * cols + j]);
                    dz[r * cols + j] = v;
                    acc += v;
                }
                db[j] = acc;
            }
    }
}
