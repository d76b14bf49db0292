// The residual add fused with the row norm that follows it in a pre-norm transformer block: one kernel gives both
// the new residual stream s = x + r and its normalised rows LayerNorm(s) or RMSNorm(s), and one kernel gives the
// gradients of x and r from both outputs' gradients. Unfused, the same chain is an add, a norm, and in the backward a
// norm backward, an accumulate of it into the residual's gradient and two copies of that for x and r: six launches
// become two (the norm's parameter gradients, one more launch, in both). Each output element is computed by the same float
// operations in the same order as the unfused ops (Norms.cs's row helpers, their CPU bodies), so the values agree bit
// for bit on a backend (ResidualNormTests). On the CPU accelerator the launcher loads Cpu/ResidualNormCpu.cs's bodies.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// The residual add and the LayerNorm after it, fused: <c>sum = x + r</c> and <c>normed = LayerNorm(sum, weight, bias, eps)</c>
    /// over the last dimension, as <see cref="Add"/> then <see cref="LayerNorm"/> compute them. <paramref name="x"/> and
    /// <paramref name="r"/> <c>[.., C]</c> of one shape, <paramref name="weight"/>, <paramref name="bias"/> <c>[C]</c>. Differentiable
    /// in all four through either output or both; keep both outputs alive until the backward has run.
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, shapes that disagree, or eps &lt;= 0.</exception>
    public static (Tensor Sum, Tensor Normed) AddLayerNorm(Tensor x, Tensor r, Tensor weight, Tensor bias, float eps = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(bias);
        return ResidualNorm(x, r, weight, bias, eps, center: true);
    }

    /// <summary>
    /// The residual add and the RMSNorm after it, fused: <c>sum = x + r</c> and <c>normed = RMSNorm(sum, weight, eps)</c>, as
    /// <see cref="Add"/> then <see cref="RMSNorm"/> compute them; shapes as for <see cref="AddLayerNorm"/>. Differentiable in all
    /// three through either output or both; keep both outputs alive until the backward has run.
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, shapes that disagree, or eps &lt;= 0.</exception>
    public static (Tensor Sum, Tensor Normed) AddRMSNorm(Tensor x, Tensor r, Tensor weight, float eps = 1e-6f) =>
        ResidualNorm(x, r, weight, null, eps, center: false);

    static (Tensor Sum, Tensor Normed) ResidualNorm(Tensor x, Tensor r, Tensor weight, Tensor? bias, float eps, bool center)
    {
        var (rows, cols) = CheckRowNorm(x, weight, bias, eps);
        Check.DType(r, DType.F32, nameof(r));
        Check.SameDevice(x, r, nameof(r));
        Check.Shape(r, nameof(r), x.Shape);
        var d = x.Device;
        var shape = new NormShape(cols, eps, center, bias is not null);
        var k = d.Get(static d => new ResidualNormKernels(d));
        var sum = Tensor.Empty(d, DType.F32, x.Shape);
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var mean = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var rstd = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var rowWork = d.Split(cols == 0 ? 0 : rows);
        var biasView = bias is null ? weight.View : bias.View; // unread when there is no bias
        if (rowWork.N > 0) k.Forward(rowWork.Workers, rowWork, shape, x.View, r.View, weight.View, biasView, sum.View, y.View, mean.View, rstd.View);
        Tensor[] inputs = bias is null ? [x, r, weight] : [x, r, weight, bias];
        if (!d.Tape.Needs(inputs))
        {
            mean.Dispose();
            rstd.Dispose();
            return (sum, y);
        }

        // The gradients of x and r are the sum's gradient gs plus the norm's input gradient from gy; either may be absent.
        void Backward(Tensor? gs, Tensor? gy)
        {
            if (gy is not null && sum.IsDisposed)
                throw new InvalidOperationException("Backward: the normalised output of a fused residual norm takes a gradient, but its sum output " +
                    "was disposed, and the norm's backward reads it. Keep both outputs alive until Backward has run.");
            if (x.RequiresGrad || r.RequiresGrad)
            {
                var da = Tensor.Empty(d, DType.F32, x.Shape);
                var db = x.RequiresGrad && r.RequiresGrad ? Tensor.Empty(d, DType.F32, x.Shape) : null;
                var flags = new ResidualGrads(gy is not null, gs is not null, db is not null);
                if (rowWork.N > 0)
                    k.Backward(rowWork.Workers, rowWork, shape, flags, sum.View, weight.View, (gy ?? sum).View, (gs ?? sum).View, mean.View, rstd.View,
                        da.View, (db ?? da).View);
                if (x.RequiresGrad) Tape.Accumulate(x, da);
                if (r.RequiresGrad) Tape.Accumulate(r, db ?? da);
            }
            if (gy is not null && (weight.RequiresGrad || (bias?.RequiresGrad ?? false)))
            {
                var dw = Tensor.Empty(d, DType.F32, cols);
                var dbias = Tensor.Empty(d, DType.F32, cols);
                var colWork = d.Split(cols);
                if (cols > 0) d.Get(static d => new NormKernels(d)).RowParams(colWork.Workers, colWork, sum.View, gy.View, mean.View, rstd.View, dw.View, dbias.View, rows);
                Tape.Accumulate(weight, dw);
                if (bias is not null) Tape.Accumulate(bias, dbias);
                else dbias.Dispose();
            }
        }

        // Two entries, the normed output's first. The walk reaches the sum's entry first, once every consumer of either output
        // has added its gradient (they all come later on the tape), and runs the whole backward, taking the normed output's
        // gradient too; the normed output's entry then runs only when the sum took no gradient. Its saved statistics outlive both.
        d.Tape.Record(y, inputs, gy => Backward(null, gy), mean, rstd);
        d.Tape.Record(sum, inputs, gs =>
        {
            var gy = y.Grad;
            y.Grad = null;
            using (gy) Backward(gs, gy);
        });
        return (sum, y);
    }
}

/// <summary>Which gradients the fused residual norm's backward has and writes (0 or 1 each, for the kernels).</summary>
internal readonly struct ResidualGrads(bool normGrad, bool sumGrad, bool second)
{
    /// <summary>The normalised output has a gradient (gy is read).</summary>
    public readonly int NormGrad = normGrad ? 1 : 0;
    /// <summary>The sum has a gradient (gs is read).</summary>
    public readonly int SumGrad = sumGrad ? 1 : 0;
    /// <summary>Both x and r take the gradient: it is written twice (da, db), since each input owns its gradient.</summary>
    public readonly int Second = second ? 1 : 0;
}

/// <summary>Kernels of the fused residual norm: the portable kernels below (the definition), or the SIMD bodies' kernels
/// (Cpu/ResidualNormCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class ResidualNormKernels
{
    public readonly Action<Index1D, Work, NormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> Forward;
    public readonly Action<Index1D, Work, NormShape, ResidualGrads, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> Backward;

    public ResidualNormKernels(Device d)
    {
        Forward = d.LoadKernel(ForwardKernel, ResidualNormCpu.ForwardKernel, 256);
        Backward = d.LoadKernel(BackwardKernel, ResidualNormCpu.BackwardKernel, 256);
    }

    // x, r: [rows, C], weight, bias: [C] -> sum: [rows, C] = x + r, y: [rows, C] = norm(sum), mean, rstd: [rows]; rows per item
    static void ForwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> r, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> sum, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        int c = s.Cols;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int row = st, e = work.End(st); row < e; row++)
            {
                for (int j = row * c; j < (row + 1) * c; j++) sum[j] = x[j] + r[j];
                NormKernels.ForwardRow(s, sum, weight, bias, y, mean, rstd, row);
            }
    }

    // sum, gy, gs: [rows, C], weight: [C], mean, rstd: [rows] -> da (and db when Second): [rows, C] = gs + normBackward(gy),
    // either term only when its gradient is present; the norm's part is written to da first, then gs added (as an accumulate would).
    static void BackwardKernel(Index1D w, Work work, NormShape s, ResidualGrads f, ArrayView<float> sum, ArrayView<float> weight, ArrayView<float> gy,
        ArrayView<float> gs, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> da, ArrayView<float> db)
    {
        int c = s.Cols;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int row = st, e = work.End(st); row < e; row++)
            {
                if (f.NormGrad != 0) NormKernels.BackwardRow(s, sum, weight, gy, mean, rstd, da, row);
                for (int j = row * c; j < (row + 1) * c; j++)
                {
                    float v = f.NormGrad == 0 ? gs[j] : f.SumGrad != 0 ? gs[j] + da[j] : da[j];
                    da[j] = v;
                    if (f.Second != 0) db[j] = v;
                }
            }
    }
}
