// Normalisation layers as fused kernels: LayerNorm and RMSNorm over the last dimension (one row per work
// item), BatchNorm1d over the rows of [N, C] (one column per work item). Means and reciprocal standard
// deviations are saved for the backward; parameter gradients are column sums in a fixed order. These kernels are the
// definition; on the CPU accelerator the launcher loads SIMD bodies for the row norms (Cpu/NormsCpu.cs).
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Layer normalisation over the last dimension: <c>y = (x - μ) / sqrt(σ² + eps) ⊙ weight + bias</c>, with μ and σ² the
    /// mean and biased variance of each row of <paramref name="x"/> <c>[.., C]</c>; <paramref name="weight"/>, <paramref name="bias"/> <c>[C]</c>.
    /// Differentiable in all three inputs.
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, shapes that disagree, or eps &lt;= 0.</exception>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(bias);
        return RowNorm(x, weight, bias, eps, center: true);
    }

    /// <summary>
    /// Root-mean-square normalisation over the last dimension: <c>y = x / sqrt(mean(x²) + eps) ⊙ weight</c>, for
    /// <paramref name="x"/> <c>[.., C]</c> and <paramref name="weight"/> <c>[C]</c>. Differentiable in both inputs.
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, shapes that disagree, or eps &lt;= 0.</exception>
    public static Tensor RMSNorm(Tensor x, Tensor weight, float eps = 1e-6f) => RowNorm(x, weight, null, eps, center: false);

    /// <summary>The host checks of a norm over the last dimension of <paramref name="x"/> (also the fused residual norms':
    /// ResidualNorm.cs); returns its rows and columns.</summary>
    static (int Rows, int Cols) CheckRowNorm(Tensor x, Tensor weight, Tensor? bias, float eps)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(weight, DType.F32, nameof(weight));
        Check.SameDevice(x, weight, nameof(weight));
        Check.That(x.Rank >= 1, nameof(x), x.Shape, "a tensor [.., C] of rank >= 1");
        int cols = x.Shape[^1];
        Check.Shape(weight, nameof(weight), cols);
        if (bias is not null)
        {
            Check.DType(bias, DType.F32, nameof(bias));
            Check.SameDevice(x, bias, nameof(bias));
            Check.Shape(bias, nameof(bias), cols);
        }
        Check.That(eps > 0 && float.IsFinite(eps), nameof(eps), eps, "a positive finite epsilon");
        return ((int)Tensor.Numel(x.Shape[..^1]), cols);
    }

    static Tensor RowNorm(Tensor x, Tensor weight, Tensor? bias, float eps, bool center)
    {
        var (rows, cols) = CheckRowNorm(x, weight, bias, eps);
        var d = x.Device;
        var shape = new NormShape(cols, eps, center, bias is not null);
        var k = d.Get(static d => new NormKernels(d));
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var mean = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var rstd = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var rowWork = d.Split(cols == 0 ? 0 : rows);
        var biasView = bias is null ? weight.View : bias.View; // unread when there is no bias
        if (rowWork.N > 0) k.RowForward(rowWork.Workers, rowWork, shape, x.View, weight.View, biasView, y.View, mean.View, rstd.View);
        Tensor[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        if (!d.Tape.Needs(inputs))
        {
            mean.Dispose();
            rstd.Dispose();
            return y;
        }
        d.Tape.Record(y, inputs, g =>
        {
            if (x.RequiresGrad)
            {
                var dx = Tensor.Empty(d, DType.F32, x.Shape);
                if (rowWork.N > 0) k.RowBackward(rowWork.Workers, rowWork, shape, x.View, weight.View, g.View, mean.View, rstd.View, dx.View);
                Tape.Accumulate(x, dx);
            }
            if (weight.RequiresGrad || (bias?.RequiresGrad ?? false))
            {
                var dw = Tensor.Empty(d, DType.F32, cols);
                var db = Tensor.Empty(d, DType.F32, cols);
                var colWork = d.Split(cols);
                if (cols > 0) k.RowParams(colWork.Workers, colWork, x.View, g.View, mean.View, rstd.View, dw.View, db.View, rows);
                Tape.Accumulate(weight, dw);
                if (bias is not null) Tape.Accumulate(bias, db);
                else db.Dispose();
            }
        }, mean, rstd);
        return y;
    }

    /// <summary>
    /// Batch normalisation of <paramref name="x"/> <c>[N, C]</c> per column: <c>y = (x - μ) / sqrt(σ² + eps) ⊙ weight + bias</c>.
    /// Training: μ and σ² are the column mean and biased variance of the batch, and the running statistics
    /// <c>[C]</c> are updated in place as PyTorch does, <c>running = (1 - momentum) running + momentum stat</c>, using the
    /// unbiased variance <c>σ² N / (N - 1)</c> for <paramref name="runningVar"/>. Evaluation: μ and σ² are the running
    /// statistics, which are left unchanged. Differentiable in x, weight and bias (the statistics are not).
    /// </summary>
    /// <exception cref="ArgumentException">Non-F32 operands, different devices, shapes that disagree, eps &lt;= 0, momentum
    /// outside [0, 1], or fewer than 2 rows in training.</exception>
    public static Tensor BatchNorm1d(Tensor x, Tensor weight, Tensor bias, Tensor runningMean, Tensor runningVar, bool training, float momentum = 0.1f, float eps = 1e-5f)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        int n = x.Shape[0], c = x.Shape[1];
        foreach (var (t, name) in new[] { (weight, nameof(weight)), (bias, nameof(bias)), (runningMean, nameof(runningMean)), (runningVar, nameof(runningVar)) })
        {
            Check.DType(t, DType.F32, name);
            Check.SameDevice(x, t, name);
            Check.Shape(t, name, c);
        }
        Check.That(eps > 0 && float.IsFinite(eps), nameof(eps), eps, "a positive finite epsilon");
        Check.That(momentum >= 0 && momentum <= 1, nameof(momentum), momentum, "a momentum in [0, 1]");
        Check.That(!training || n > 1, nameof(x), x.Shape, "more than one row per column in training (the batch variance needs two)");
        var d = x.Device;
        var k = d.Get(static d => new NormKernels(d));
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var mean = Tensor.Empty(d, DType.F32, Math.Max(c, 1));
        var rstd = Tensor.Empty(d, DType.F32, Math.Max(c, 1));
        var shape = new BatchNormShape(n, c, eps, momentum, training);
        var w = d.Split(c);
        if (c > 0) k.BatchForward(w.Workers, w, shape, x.View, weight.View, bias.View, runningMean.View, runningVar.View, y.View, mean.View, rstd.View);
        if (!d.Tape.Needs(x, weight, bias))
        {
            mean.Dispose();
            rstd.Dispose();
            return y;
        }
        d.Tape.Record(y, [x, weight, bias], g =>
        {
            var dx = Tensor.Empty(d, DType.F32, x.Shape);
            var dw = Tensor.Empty(d, DType.F32, c);
            var db = Tensor.Empty(d, DType.F32, c);
            if (c > 0) k.BatchBackward(w.Workers, w, shape, x.View, weight.View, g.View, mean.View, rstd.View, dx.View, dw.View, db.View);
            Tape.Accumulate(x, dx);
            Tape.Accumulate(weight, dw);
            Tape.Accumulate(bias, db);
        }, mean, rstd);
        return y;
    }
}

/// <summary>Row-norm settings passed to the kernels.</summary>
internal readonly struct NormShape(int cols, float eps, bool center, bool hasBias)
{
    public readonly int Cols = cols;
    public readonly float Eps = eps;
    public readonly int Center = center ? 1 : 0, HasBias = hasBias ? 1 : 0;
}

/// <summary>Batch-norm settings passed to the kernels.</summary>
internal readonly struct BatchNormShape(int rows, int cols, float eps, float momentum, bool training)
{
    public readonly int Rows = rows, Cols = cols;
    public readonly float Eps = eps, Momentum = momentum;
    public readonly int Training = training ? 1 : 0;
}

/// <summary>Kernels of the normalisation family: the portable kernels below (the definition), or for the three row kernels the
/// SIMD bodies' kernels (Cpu/NormsCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class NormKernels
{
    public readonly Action<Index1D, Work, NormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> RowForward;
    public readonly Action<Index1D, Work, NormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> RowBackward;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> RowParams;
    public readonly Action<Index1D, Work, BatchNormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BatchForward;
    public readonly Action<Index1D, Work, BatchNormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BatchBackward;

    public NormKernels(Device d)
    {
        RowForward = d.LoadKernel(RowForwardKernel, NormsCpu.RowForwardKernel, 256);
        RowBackward = d.LoadKernel(RowBackwardKernel, NormsCpu.RowBackwardKernel, 256);
        RowParams = d.LoadKernel(RowParamsKernel, NormsCpu.RowParamsKernel, 256);
        BatchForward = d.LoadKernel(BatchForwardKernel, NormsCpu.BatchForwardKernel, 256);
        BatchBackward = d.LoadKernel(BatchBackwardKernel, NormsCpu.BatchBackwardKernel, 256);
    }

    // x: [rows, C], weight, bias: [C] -> y: [rows, C], mean, rstd: [rows]. LayerNorm (Center = 1): mean and biased
    // variance of the row (two passes); RMSNorm (Center = 0): mean 0 and mean of squares.
    static void RowForwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++) ForwardRow(s, x, weight, bias, y, mean, rstd, r);
    }

    // Row r of the row-norm forward; also the fused residual norm's (ResidualNorm.cs), so that both compute the same bits.
    internal static void ForwardRow(NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int r)
    {
        int c = s.Cols, o = r * c;
        float mu = 0f;
        if (s.Center != 0)
        {
            for (int j = 0; j < c; j++) mu += x[o + j];
            mu /= c;
        }
        float var = 0f;
        for (int j = 0; j < c; j++) { float dv = x[o + j] - mu; var += dv * dv; }
        float rs = XMath.Rsqrt(var / c + s.Eps);
        mean[r] = mu;
        rstd[r] = rs;
        for (int j = 0; j < c; j++)
            y[o + j] = (x[o + j] - mu) * rs * weight[j] + (s.HasBias != 0 ? bias[j] : 0f);
    }

    // x, dy: [rows, C], weight: [C], mean, rstd: [rows] -> dx: [rows, C]. With xh = (x - mean) rstd and g = dy weight:
    // dx = rstd (g - mean(g) - xh mean(g xh)) for LayerNorm, rstd (g - xh mean(g xh)) for RMSNorm.
    static void RowBackwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++) BackwardRow(s, x, weight, dy, mean, rstd, dx, r);
    }

    // Row r of the row-norm input backward; also the fused residual norm's.
    internal static void BackwardRow(NormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, int r)
    {
        int c = s.Cols, o = r * c;
        float mu = mean[r], rs = rstd[r];
        float sumG = 0f, sumGx = 0f;
        for (int j = 0; j < c; j++)
        {
            float g = dy[o + j] * weight[j];
            sumG += g;
            sumGx += g * (x[o + j] - mu) * rs;
        }
        float meanG = s.Center != 0 ? sumG / c : 0f, meanGx = sumGx / c;
        for (int j = 0; j < c; j++)
        {
            float xh = (x[o + j] - mu) * rs;
            dx[o + j] = rs * (dy[o + j] * weight[j] - meanG - xh * meanGx);
        }
    }

    // x, dy: [rows, C], mean, rstd: [rows] -> dweight: [C] = Σ_rows dy xh, dbias: [C] = Σ_rows dy; one column per item
    static void RowParamsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> dWeight, ArrayView<float> dBias, int rows)
    {
        int c = work.N;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float dw = 0f, db = 0f;
                for (int r = 0; r < rows; r++)
                {
                    float g = dy[r * c + j];
                    dw += g * (x[r * c + j] - mean[r]) * rstd[r];
                    db += g;
                }
                dWeight[j] = dw;
                dBias[j] = db;
            }
    }

    // x: [N, C], weight, bias, runningMean, runningVar: [C] -> y: [N, C], mean, rstd: [C]; one column per item.
    // Training: batch statistics, running statistics updated in place; evaluation: running statistics.
    static void BatchForwardKernel(Index1D w, Work work, BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> runningMean, ArrayView<float> runningVar, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        int n = s.Rows, c = s.Cols;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float mu, var;
                if (s.Training != 0)
                {
                    mu = 0f;
                    for (int r = 0; r < n; r++) mu += x[r * c + j];
                    mu /= n;
                    var = 0f;
                    for (int r = 0; r < n; r++) { float dv = x[r * c + j] - mu; var += dv * dv; }
                    var /= n;
                    float m = s.Momentum;
                    runningMean[j] = (1f - m) * runningMean[j] + m * mu;
                    runningVar[j] = (1f - m) * runningVar[j] + m * var * n / (n - 1);
                }
                else
                {
                    mu = runningMean[j];
                    var = runningVar[j];
                }
                float rs = XMath.Rsqrt(var + s.Eps);
                mean[j] = mu;
                rstd[j] = rs;
                for (int r = 0; r < n; r++) y[r * c + j] = (x[r * c + j] - mu) * rs * weight[j] + bias[j];
            }
    }

    // x, dy: [N, C], weight, mean, rstd: [C] -> dx: [N, C], dweight, dbias: [C]; one column per item. With xh = (x - mean) rstd:
    // dweight = Σ dy xh, dbias = Σ dy; dx = rstd weight (dy - mean(dy) - xh mean(dy xh)) in training, rstd weight dy in evaluation.
    static void BatchBackwardKernel(Index1D w, Work work, BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, ArrayView<float> dWeight, ArrayView<float> dBias)
    {
        int n = s.Rows, c = s.Cols;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float mu = mean[j], rs = rstd[j];
                float sumG = 0f, sumGx = 0f;
                for (int r = 0; r < n; r++)
                {
                    float g = dy[r * c + j];
                    sumG += g;
                    sumGx += g * (x[r * c + j] - mu) * rs;
                }
                dWeight[j] = sumGx;
                dBias[j] = sumG;
                float meanG = s.Training != 0 ? sumG / n : 0f, meanGx = s.Training != 0 ? sumGx / n : 0f;
                float scale = rs * weight[j];
                for (int r = 0; r < n; r++)
                {
                    float xh = (x[r * c + j] - mu) * rs;
                    dx[r * c + j] = scale * (dy[r * c + j] - meanG - xh * meanGx);
                }
            }
    }
}
