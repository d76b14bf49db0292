// Sum and mean over all elements or over the last dimension, and the reductions that gradients of
// broadcast operands need. Deterministic without atomics: each work item owns one output (a row, a
// column, or a worker's partial sum in a fixed order), and partials are summed by a further pass.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>Sum of all elements, shape <c>[1]</c> (0 for an empty tensor). Differentiable (<c>dx = g</c> everywhere).</summary>
    /// <exception cref="ArgumentException">x is not F32.</exception>
    public static Tensor Sum(Tensor x) => SumAll(x, 1f);

    /// <summary>Mean of all elements, shape <c>[1]</c>. Differentiable (<c>dx = g / x.Length</c>).</summary>
    /// <exception cref="ArgumentException">x is not F32, or is empty.</exception>
    public static Tensor Mean(Tensor x)
    {
        Check.That(x.Length > 0, nameof(x), x.Shape, "a non-empty tensor (the mean of nothing is undefined)");
        return SumAll(x, 1f / x.Length);
    }

    /// <summary>
    /// Sum over the last dimension: <c>x [.., n] -> [..]</c>, or <c>[.., 1]</c> with <paramref name="keepDim"/>
    /// (a rank-1 x gives <c>[1]</c>). Differentiable.
    /// </summary>
    /// <exception cref="ArgumentException">x is not F32 or has rank 0.</exception>
    public static Tensor SumLastDim(Tensor x, bool keepDim = false) => ReduceLast(x, 1f, keepDim);

    /// <summary>Mean over the last dimension: <c>x [.., n] -> [..]</c> (or <c>[.., 1]</c> with <paramref name="keepDim"/>). Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32, has rank 0, or its last dimension is 0.</exception>
    public static Tensor MeanLastDim(Tensor x, bool keepDim = false)
    {
        Check.That(x.Rank >= 1 && x.Shape[^1] > 0, nameof(x), x.Shape, "a last dimension of at least 1 (the mean of nothing is undefined)");
        return ReduceLast(x, 1f / x.Shape[^1], keepDim);
    }

    static Tensor SumAll(Tensor x, float scale)
    {
        Check.DType(x, DType.F32, nameof(x));
        var d = x.Device;
        var k = d.Get(static d => new ReduceKernels(d));
        var y = Tensor.Zeros(d, 1);
        if (x.Length > 0)
        {
            // Level 1: each worker sums its share in a fixed order. Further levels: contiguous chunks of the
            // partials, until one worker is left; that last pass applies the scale.
            var w = d.Split(x.Length);
            var partial = Tensor.Empty(d, DType.F32, w.Workers);
            k.Partial(w.Workers, w, x.View, partial.View, w.Workers == 1 ? scale : 1f);
            if (w.Workers == 1) { y.Dispose(); y = partial; }
            while (partial.Length > 1)
            {
                int len = partial.Length;
                int workers = len > 1024 ? (int)Math.Ceiling(Math.Sqrt(len)) : 1;
                var lw = new Work(len, workers, (len + workers - 1) / workers);
                var next = workers == 1 ? y : Tensor.Empty(d, DType.F32, workers);
                k.Partial(workers, lw, partial.View, next.View, workers == 1 ? scale : 1f);
                partial.Dispose();
                partial = next;
            }
        }
        if (d.Tape.Needs(x))
            d.Tape.Record(y, [x], g => Tape.Accumulate(x, Expand(g, x.Shape, 0, scale)));
        return y;
    }

    static Tensor ReduceLast(Tensor x, float scale, bool keepDim)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(x.Rank >= 1, nameof(x), x.Shape, "a tensor of rank 1 or more");
        var d = x.Device;
        int n = x.Shape[^1];
        int[] shape = keepDim ? [.. x.Shape[..^1], 1] : x.Rank == 1 ? [1] : x.Shape[..^1];
        var y = RowSums(x, n, shape, scale);
        if (d.Tape.Needs(x))
            d.Tape.Record(y, [x], g => Tape.Accumulate(x, Expand(g, x.Shape, n, scale)));
        return y;
    }

    // x: [rows, n] -> y: shape (rows elements) = scale * sum over n
    static Tensor RowSums(Tensor x, int n, int[] shape, float scale)
    {
        var d = x.Device;
        var y = Tensor.Zeros(d, shape);
        if (y.Length > 0 && n > 0)
        {
            var w = d.Split(y.Length);
            d.Get(static d => new ReduceKernels(d)).Rows(w.Workers, w, x.View, y.View, n, scale);
        }
        return y;
    }

    // g: [rows] (perRow = n) or [1] (perRow = 0) -> [shape] with every element of row r = scale * g[r]
    static Tensor Expand(Tensor g, int[] shape, int perRow, float scale)
    {
        var d = g.Device;
        var dx = Tensor.Empty(d, DType.F32, shape);
        if (dx.Length > 0)
        {
            var w = d.Split(dx.Length);
            d.Get(static d => new ReduceKernels(d)).Expand(w.Workers, w, g.View, dx.View, perRow, scale);
        }
        return dx;
    }

    /// <summary>The gradient of a broadcast operand: <paramref name="g"/> (the output's shape) summed over the broadcast
    /// dimensions into <paramref name="shape"/>, times <paramref name="scale"/>.</summary>
    internal static Tensor SumToOperand(Tensor g, Broadcast mode, int[] shape, float scale)
    {
        if (mode == Broadcast.Same) return Scale(g, scale);
        int n = g.Shape[^1];
        if (mode == Broadcast.Column) return RowSums(g, n, shape, scale);
        var d = g.Device;
        var y = Tensor.Zeros(d, shape);
        if (n > 0)
        {
            var w = d.Split(n);
            d.Get(static d => new ReduceKernels(d)).Columns(w.Workers, w, g.View, y.View, g.Length / n, scale);
        }
        return y;
    }
}

/// <summary>Kernels of the reductions.</summary>
internal sealed class ReduceKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, float> Partial;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int, float> Rows, Columns, Expand;

    public ReduceKernels(Device d)
    {
        Partial = d.LoadKernel(PartialKernel);
        Rows = d.LoadKernel(RowsKernel);
        Columns = d.LoadKernel(ColumnsKernel);
        Expand = d.LoadKernel(ExpandKernel);
    }

    // x: [N] -> partial: [workers], partial[w] = scale * sum of worker w's items (in its fixed order)
    static void PartialKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> partial, float scale)
    {
        float acc = 0f;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) acc += x[i];
        partial[w] = scale * acc;
    }

    // x: [rows, n] -> y: [rows] = scale * sum over n; one row per item
    static void RowsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, int n, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                float acc = 0f;
                for (int j = 0, o = r * n; j < n; j++) acc += x[o + j];
                y[r] = scale * acc;
            }
    }

    // x: [rows, n] -> y: [n] = scale * sum over rows; one column per item (n = work.N)
    static void ColumnsKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, int rows, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int j = s, e = work.End(s); j < e; j++)
            {
                float acc = 0f;
                for (int r = 0; r < rows; r++) acc += x[r * work.N + j];
                y[j] = scale * acc;
            }
    }

    // g: [rows] (perRow > 0) or [1] (perRow = 0) -> dx: [rows * perRow] = scale * g[i / perRow]
    static void ExpandKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> dx, int perRow, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                dx[i] = scale * g[perRow == 0 ? 0 : i / perRow];
    }
}
