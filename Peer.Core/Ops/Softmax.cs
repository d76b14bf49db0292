// Softmax and log-softmax over the last dimension, and cross-entropy on integer targets fused with its
// softmax. Every kernel takes one row per work item and subtracts the row maximum before exponentiating,
// so large logits neither overflow nor lose the small probabilities.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Softmax over the last dimension: <c>y[.., j] = exp(x[.., j] - m) / Σ_k exp(x[.., k] - m)</c> with <c>m</c> the row maximum.
    /// Differentiable: <c>dx = y ⊙ (dy - Σ_k dy_k y_k)</c>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="x"/> is not F32 or has rank 0.</exception>
    public static Tensor Softmax(Tensor x) => SoftmaxFamily(x, log: false);

    /// <summary>
    /// Log-softmax over the last dimension: <c>y[.., j] = x[.., j] - m - log Σ_k exp(x[.., k] - m)</c>.
    /// Differentiable: <c>dx = dy - exp(y) Σ_k dy_k</c>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="x"/> is not F32 or has rank 0.</exception>
    public static Tensor LogSoftmax(Tensor x) => SoftmaxFamily(x, log: true);

    static Tensor SoftmaxFamily(Tensor x, bool log)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(x.Rank >= 1, nameof(x), x.Shape, "a tensor of rank >= 1 (softmax runs over the last dimension)");
        var d = x.Device;
        int cols = x.Shape[^1], rows = cols == 0 ? 0 : x.Length / cols;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var k = d.Get(static d => new SoftmaxKernels(d));
        var w = d.Split(rows);
        if (rows > 0) k.Forward(w.Workers, w, x.View, y.View, cols, log ? 1 : 0);
        if (d.Tape.Needs(x))
        {
            var saved = y.Detach();
            d.Tape.Record(y, [x], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, x.Shape);
                if (rows > 0) k.Backward(w.Workers, w, saved.View, g.View, dx.View, cols, log ? 1 : 0);
                Tape.Accumulate(x, dx);
            }, saved);
        }
        return y;
    }

    /// <summary>
    /// Mean cross-entropy of <paramref name="logits"/> <c>[T, V]</c> against integer class <paramref name="targets"/> <c>[T]</c>:
    /// <c>loss = (1/N) Σ_{t : targets[t] ≠ ignoreIndex} (logsumexp(logits[t]) - logits[t, targets[t]])</c>, N the number of
    /// non-ignored rows. Result shape <c>[1]</c>. Softmax and loss are fused; the backward is
    /// <c>dlogits[t] = dloss · (softmax(logits[t]) - onehot(targets[t])) / N</c> (zero for ignored rows).
    /// </summary>
    /// <remarks>
    /// Targets live on the device and are not copied back for checking. A target outside [0, V) other than
    /// <paramref name="ignoreIndex"/> is never used as an index: its row's loss and gradient are NaN, so the mean is NaN
    /// and the mistake is visible. When every row is ignored the mean is 0/0 = NaN (as in PyTorch) and the gradient is zero.
    /// </remarks>
    /// <exception cref="ArgumentException">Wrong dtypes, ranks, devices, or a row count that differs between the arguments.</exception>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex = -100)
    {
        Check.DType(logits, DType.F32, nameof(logits));
        Check.DType(targets, DType.I32, nameof(targets));
        Check.SameDevice(logits, targets, nameof(targets));
        Check.Rank(logits, 2, nameof(logits));
        int rows = logits.Shape[0], cols = logits.Shape[1];
        Check.Shape(targets, nameof(targets), rows);
        Check.That(cols > 0, nameof(logits), logits.Shape, "at least one class (V > 0)");
        var d = logits.Device;
        var k = d.Get(static d => new SoftmaxKernels(d));
        var lse = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var rowLoss = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var loss = Tensor.Empty(d, DType.F32, 1);
        var count = Tensor.Empty(d, DType.F32, 1);
        var w = d.Split(rows);
        if (rows > 0) k.CrossEntropyRows(w.Workers, w, logits.View, targets.IntView, lse.View, rowLoss.View, cols, ignoreIndex);
        k.CrossEntropyMean(rowLoss.View, targets.IntView, loss.View, count.View, rows, ignoreIndex);
        rowLoss.Dispose();
        if (d.Tape.Needs(logits))
        {
            d.Tape.Record(loss, [logits], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, logits.Shape);
                if (rows > 0) k.CrossEntropyBackward(w.Workers, w, logits.View, targets.IntView, lse.View, count.View, g.View, dx.View, cols, ignoreIndex);
                Tape.Accumulate(logits, dx);
            }, lse, count);
        }
        else
        {
            lse.Dispose();
            count.Dispose();
        }
        return loss;
    }
}

/// <summary>Kernels of the softmax family.</summary>
internal sealed class SoftmaxKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int, int> Forward;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> Backward;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> CrossEntropyRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>? crossEntropyMean;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>? crossEntropyMeanGrouped;
    readonly int meanGroupSize;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> CrossEntropyBackward;

    /// <summary>Threads of the grouped mean on GPUs.</summary>
    public const int MeanGroup = 256;

    /// <summary>The kernels for <paramref name="d"/>: on GPUs whose groups hold <see cref="MeanGroup"/> threads the loss mean is one
    /// group's tree reduction, elsewhere one thread's sum in row order.</summary>
    public SoftmaxKernels(Device d) : this(d, !d.ChunksWork && d.MaxGroupSize >= MeanGroup) { }

    /// <summary>The kernels with the grouped mean or not (tests run the grouped one on CPU devices).</summary>
    internal SoftmaxKernels(Device d, bool groupedMean)
    {
        Forward = d.LoadKernel(ForwardKernel);
        Backward = d.LoadKernel(BackwardKernel);
        CrossEntropyRows = d.LoadKernel(CrossEntropyRowsKernel);
        if (groupedMean)
        {
            crossEntropyMeanGrouped = d.LoadGroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>>(
                CrossEntropyMeanGroupKernel);
            meanGroupSize = 1 << System.Numerics.BitOperations.Log2((uint)Math.Min(MeanGroup, d.MaxGroupSize)); // a power of two
        }
        else crossEntropyMean = d.LoadKernel(CrossEntropyMeanKernel);
        CrossEntropyBackward = d.LoadKernel(CrossEntropyBackwardKernel);
    }

    /// <summary>loss[0] = the mean of the row losses whose target is not ignored, count[0] = their number.</summary>
    public void CrossEntropyMean(ArrayView<float> rowLoss, ArrayView<int> targets, ArrayView<float> loss, ArrayView<float> count, int rows, int ignore)
    {
        if (crossEntropyMeanGrouped is not null) crossEntropyMeanGrouped(new KernelConfig(1, meanGroupSize), rowLoss, targets, loss, count, rows, ignore);
        else crossEntropyMean!(1, rowLoss, targets, loss, count, rows, ignore);
    }

    // x: [rows, cols] -> y: [rows, cols] = softmax(x) (log = 0) or log_softmax(x) (log = 1), row-wise
    static void ForwardKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, int cols, int log)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int o = r * cols;
                float m = float.NegativeInfinity;
                for (int j = 0; j < cols; j++) m = XMath.Max(m, x[o + j]);
                float sum = 0f;
                for (int j = 0; j < cols; j++) sum += XMath.Exp(x[o + j] - m);
                if (log != 0)
                {
                    float shift = m + XMath.Log(sum);
                    for (int j = 0; j < cols; j++) y[o + j] = x[o + j] - shift;
                }
                else
                {
                    float inv = 1f / sum;
                    for (int j = 0; j < cols; j++) y[o + j] = XMath.Exp(x[o + j] - m) * inv;
                }
            }
    }

    // y, dy: [rows, cols] -> dx: [rows, cols]; softmax: dx = y (dy - Σ dy y); log-softmax: dx = dy - exp(y) Σ dy
    static void BackwardKernel(Index1D w, Work work, ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int cols, int log)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int o = r * cols;
                float dot = 0f;
                if (log != 0)
                {
                    for (int j = 0; j < cols; j++) dot += dy[o + j];
                    for (int j = 0; j < cols; j++) dx[o + j] = dy[o + j] - XMath.Exp(y[o + j]) * dot;
                }
                else
                {
                    for (int j = 0; j < cols; j++) dot += dy[o + j] * y[o + j];
                    for (int j = 0; j < cols; j++) dx[o + j] = y[o + j] * (dy[o + j] - dot);
                }
            }
    }

    // logits: [T, V], targets: [T] -> lse: [T] = logsumexp(logits[t]), rowLoss: [T] = lse - logits[t, target]
    // (0 for ignored rows, NaN for a target outside [0, V): never used as an index)
    static void CrossEntropyRowsKernel(Index1D w, Work work, ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> lse, ArrayView<float> rowLoss, int cols, int ignore)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int o = r * cols;
                float m = float.NegativeInfinity;
                for (int j = 0; j < cols; j++) m = XMath.Max(m, logits[o + j]);
                float sum = 0f;
                for (int j = 0; j < cols; j++) sum += XMath.Exp(logits[o + j] - m);
                float l = m + XMath.Log(sum);
                lse[r] = l;
                int t = targets[r];
                rowLoss[r] = t == ignore ? 0f : (t < 0 || t >= cols) ? float.NaN : l - logits[o + t];
            }
    }

    // rowLoss, targets: [T] -> loss: [1] = Σ rowLoss / N, count: [1] = N (rows not ignored); one work item, fixed order
    static void CrossEntropyMeanKernel(Index1D w, ArrayView<float> rowLoss, ArrayView<int> targets, ArrayView<float> loss, ArrayView<float> count, int rows, int ignore)
    {
        float sum = 0f;
        int n = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == ignore) continue;
            sum += rowLoss[r];
            n++;
        }
        loss[0] = sum / n;
        count[0] = n;
    }

    // One group of G threads (a power of two), as CrossEntropyMeanKernel: thread l sums rows l, l + G, .., then the G partial
    // sums and counts meet in a tree in shared memory (log2 G steps), so no thread walks all the rows.
    static void CrossEntropyMeanGroupKernel(ArrayView<float> rowLoss, ArrayView<int> targets, ArrayView<float> loss, ArrayView<float> count, int rows, int ignore)
    {
        var sums = SharedMemory.Allocate<float>(MeanGroup);
        var counts = SharedMemory.Allocate<int>(MeanGroup);
        int l = Group.IdxX, size = Group.DimX;
        float sum = 0f;
        int n = 0;
        for (int r = l; r < rows; r += size)
        {
            if (targets[r] == ignore) continue;
            sum += rowLoss[r];
            n++;
        }
        sums[l] = sum;
        counts[l] = n;
        Group.Barrier();
        for (int half = size / 2; half > 0; half /= 2)
        {
            if (l < half)
            {
                sums[l] += sums[l + half];
                counts[l] += counts[l + half];
            }
            Group.Barrier();
        }
        if (l == 0)
        {
            loss[0] = sums[0] / counts[0];
            count[0] = counts[0];
        }
    }

    // logits: [T, V], targets: [T], lse: [T], count: [1], dloss: [1] -> dlogits: [T, V] = dloss (softmax - onehot) / N
    static void CrossEntropyBackwardKernel(Index1D w, Work work, ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> lse, ArrayView<float> count,
        ArrayView<float> dLoss, ArrayView<float> dLogits, int cols, int ignore)
    {
        float scale = dLoss[0] / count[0];
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int o = r * cols, t = targets[r];
                if (t == ignore)
                {
                    for (int j = 0; j < cols; j++) dLogits[o + j] = 0f;
                }
                else if (t < 0 || t >= cols)
                {
                    for (int j = 0; j < cols; j++) dLogits[o + j] = float.NaN;
                }
                else
                {
                    float l = lse[r];
                    for (int j = 0; j < cols; j++)
                        dLogits[o + j] = scale * (XMath.Exp(logits[o + j] - l) - (j == t ? 1f : 0f));
                }
            }
    }
}
