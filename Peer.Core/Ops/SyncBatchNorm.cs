// Synchronised BatchNorm1d: training-mode statistics over the rows of every rank of a group, so that a batch split
// between ranks normalises exactly as the whole batch would in one process. Forward: column sums of x (and the row
// count) all-reduced give the mean, then column sums of (x - mean)^2 all-reduced give the biased variance (two passes,
// as the single-process kernel computes them); the running statistics take the global ones. Backward: the column sums
// of dy and dy * xh all-reduced give dx; the weight and bias gradients stay this rank's partial sums, which the
// data-parallel gradient all-reduce then sums (docs/distributed.md). Evaluation mode, or a group of one, is BatchNorm1d.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Peer.Distributed;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// <see cref="BatchNorm1d(Tensor, Tensor, Tensor, Tensor, Tensor, bool, float, float)"/> whose training statistics span the rows
    /// of every rank of <paramref name="group"/> (each rank passes its own rows; all ranks must call it together). The result on
    /// each rank is what one process would compute for its rows of the concatenated batch, to float rounding. Differentiable in x
    /// (exactly, across ranks), weight and bias (this rank's share: sum the gradients over ranks, as data parallelism does).
    /// </summary>
    /// <exception cref="ArgumentException">As BatchNorm1d, with fewer than 2 rows in the whole group in training.</exception>
    /// <exception cref="CommunicationException">A collective failed or timed out.</exception>
    public static Tensor SyncBatchNorm1d(Tensor x, Tensor weight, Tensor bias, Tensor runningMean, Tensor runningVar, bool training,
        float momentum, float eps, Communicator? group)
    {
        if (group is null || group.Size == 1 || !training) return BatchNorm1d(x, weight, bias, runningMean, runningVar, training, momentum, eps);
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
        var d = x.Device;
        var k = d.Get(static d => new SyncNormKernels(d));
        var w = d.Split(c);
        var host = new float[c + 1];

        // Pass 1: column sums and the row count -> the global mean.
        var mean = Tensor.Empty(d, DType.F32, Math.Max(c, 1));
        if (c > 0) k.ColumnSums(w.Workers, w, x.View, mean.View, n, c, 0);
        if (c > 0) mean.View.SubView(0, c).CopyToCPU(ref host[0], c);
        host[c] = n;
        group.AllReduce(host.AsSpan());
        float rows = host[c];
        Check.That(rows > 1, nameof(x), $"{rows} rows over {group.Size} ranks", "more than one row per column in training (the batch variance needs two)");
        for (int j = 0; j < c; j++) host[j] /= rows;
        if (c > 0) mean.View.SubView(0, c).CopyFromCPU(ref host[0], c);

        // Pass 2: column sums of squared deviations -> the global biased variance, then y, rstd and the running statistics.
        var rstd = Tensor.Empty(d, DType.F32, Math.Max(c, 1));
        if (c > 0) k.ColumnSums(w.Workers, w, x.View, rstd.View, n, c, 1, mean.View);
        if (c > 0) rstd.View.SubView(0, c).CopyToCPU(ref host[0], c);
        group.AllReduce(host.AsSpan(0, c));
        for (int j = 0; j < c; j++) host[j] /= rows;
        if (c > 0) rstd.View.SubView(0, c).CopyFromCPU(ref host[0], c);
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (c > 0) k.Apply(w.Workers, w, new BatchNormShape(n, c, eps, momentum, true), x.View, weight.View, bias.View, runningMean.View,
            runningVar.View, mean.View, rstd.View, y.View, rows);
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
            if (c > 0)
            {
                k.GradSums(w.Workers, w, x.View, g.View, mean.View, rstd.View, dw.View, db.View, n, c);
                var sums = new float[2 * c];
                db.View.SubView(0, c).CopyToCPU(ref sums[0], c);
                dw.View.SubView(0, c).CopyToCPU(ref sums[c], c);
                group.AllReduce(sums.AsSpan());
                using var global = Tensor.FromArray(d, sums, 2 * c);
                k.InputGrad(w.Workers, w, x.View, weight.View, g.View, mean.View, rstd.View, global.View, dx.View, n, c, rows);
            }
            Tape.Accumulate(x, dx);
            Tape.Accumulate(weight, dw);
            Tape.Accumulate(bias, db);
        }, mean, rstd);
        return y;
    }
}

/// <summary>Kernels of the synchronised BatchNorm (portable kernels; one column per item, rows summed in order).</summary>
internal sealed class SyncNormKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>> ColumnSumsCentered;
    public readonly Action<Index1D, Work, BatchNormShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, float> Apply;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> GradSums;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, int, int, float> InputGrad;

    public SyncNormKernels(Device d)
    {
        ColumnSumsCentered = d.LoadKernel(ColumnSumsKernel);
        Apply = d.LoadKernel(ApplyKernel);
        GradSums = d.LoadKernel(GradSumsKernel);
        InputGrad = d.LoadKernel(InputGradKernel);
    }

    /// <summary>Column sums of x (<paramref name="centered"/> 0) or of (x - mean)^2 (1) into <paramref name="sums"/> [C].</summary>
    public void ColumnSums(Index1D workers, Work work, ArrayView<float> x, ArrayView<float> sums, int n, int c, int centered, ArrayView<float> mean = default) =>
        ColumnSumsCentered(workers, work, x, sums, n, c, centered, centered != 0 ? mean : sums);

    // x: [N, C] -> sums: [C], sums[j] = sum_r x[r, j] or sum_r (x[r, j] - mean[j])^2; one column per item
    static void ColumnSumsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> sums, int n, int c, int centered, ArrayView<float> mean)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float s = 0f, mu = centered != 0 ? mean[j] : 0f;
                for (int r = 0; r < n; r++)
                {
                    float v = x[r * c + j];
                    if (centered != 0)
                    {
                        float dv = v - mu;
                        s += dv * dv;
                    }
                    else s += v;
                }
                sums[j] = s;
            }
    }

    // x: [N, C], weight, bias, mean, var: [C] (var overwritten by rstd) -> y: [N, C]; running statistics updated with the
    // global ones (unbiased variance over all `rows` of the group); one column per item
    static void ApplyKernel(Index1D w, Work work, BatchNormShape s, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> runningMean, ArrayView<float> runningVar, ArrayView<float> mean, ArrayView<float> varRstd, ArrayView<float> y, float rows)
    {
        int n = s.Rows, c = s.Cols;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float mu = mean[j], var = varRstd[j], m = s.Momentum;
                runningMean[j] = (1f - m) * runningMean[j] + m * mu;
                runningVar[j] = (1f - m) * runningVar[j] + m * var * rows / (rows - 1f);
                float rs = XMath.Rsqrt(var + s.Eps);
                varRstd[j] = rs;
                for (int r = 0; r < n; r++) y[r * c + j] = (x[r * c + j] - mu) * rs * weight[j] + bias[j];
            }
    }

    // x, dy: [N, C], mean, rstd: [C] -> dWeight = sum dy xh, dBias = sum dy over this rank's rows; one column per item
    static void GradSumsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> dWeight, ArrayView<float> dBias, int n, int c)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float mu = mean[j], rs = rstd[j], sumG = 0f, sumGx = 0f;
                for (int r = 0; r < n; r++)
                {
                    float g = dy[r * c + j];
                    sumG += g;
                    sumGx += g * (x[r * c + j] - mu) * rs;
                }
                dWeight[j] = sumGx;
                dBias[j] = sumG;
            }
    }

    // x, dy: [N, C], weight, mean, rstd: [C], global: [2C] (sum dy, then sum dy xh, over every rank) -> dx: [N, C];
    // dx = rstd weight (dy - mean(dy) - xh mean(dy xh)) with the means over all `rows` of the group; one column per item
    static void InputGradKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> global, ArrayView<float> dx, int n, int c, float rows)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int j = st, e = work.End(st); j < e; j++)
            {
                float mu = mean[j], rs = rstd[j], meanG = global[j] / rows, meanGx = global[c + j] / rows, scale = rs * weight[j];
                for (int r = 0; r < n; r++)
                {
                    float xh = (x[r * c + j] - mu) * rs;
                    dx[r * c + j] = scale * (dy[r * c + j] - meanG - xh * meanGx);
                }
            }
    }
}
