// The affine map of a fully connected layer, y = x @ W^T + b, as one differentiable op: the product runs
// on the matmul kernel (W read transposed, no copy), the bias is added by a fused row kernel, and the
// bias gradient is a column sum with one work item per column (fixed order, so deterministic). On the CPU
// accelerator the launcher loads SIMD bodies for both bias kernels, with the same operations (Cpu/LinearCpu.cs).
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
        var d = x.Device;
        int rows = (int)Tensor.Numel(x.Shape[..^1]);
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
                if (x.RequiresGrad)
                {
                    var dx = Tensor.Zeros(d, x.Shape);
                    if (dx.Length > 0 && outF > 0) MatMulInto(g, weight, dx, false, false, 1, rows, inF, outF, false, false, accumulate: false);
                    Tape.Accumulate(x, dx);
                }
                if (weight.RequiresGrad)
                {
                    var dw = Tensor.Zeros(d, outF, inF);
                    if (dw.Length > 0 && rows > 0) MatMulInto(g, x, dw, true, false, 1, outF, inF, rows, false, false, accumulate: false);
                    Tape.Accumulate(weight, dw);
                }
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
}

/// <summary>Kernels of the linear op: the portable kernels below (the definition), or the SIMD bodies' kernels
/// (Cpu/LinearCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class LinearKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> AddBias;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> ColumnSums;

    public LinearKernels(Device d)
    {
        AddBias = d.LoadKernel(AddBiasKernel, LinearCpu.AddBiasKernel, 256);
        ColumnSums = d.LoadKernel(ColumnSumsKernel, LinearCpu.ColumnSumsKernel, 256);
    }

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
}
