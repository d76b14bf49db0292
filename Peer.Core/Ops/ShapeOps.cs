// Data movement: permute (rank <= 4; transpose of the last two dims is one case, [B,T,H,D] <-> [B,H,T,D]
// for attention another), slice along a dimension and concat along a dimension. Every kernel maps one
// output element to one input element, so there are no overlapping writes and no atomics. These portable kernels are the
// definition; on the CPU accelerator the launcher loads the same copies as block copies (Cpu/ShapeOpsCpu.cs, identical bits).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Reorders dimensions: output dimension k is input dimension <c>perm[k]</c> (as <c>torch.permute</c>), for tensors of
    /// rank 1 to 4. The result is a new contiguous tensor. Differentiable (the gradient is permuted back).
    /// </summary>
    /// <exception cref="ArgumentException">x is not F32, its rank is not 1..4, or perm is not a permutation of 0..rank-1.</exception>
    public static Tensor Permute(Tensor x, params int[] perm)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(x.Rank is >= 1 and <= 4, nameof(x), x.Shape, "a tensor of rank 1 to 4");
        ArgumentNullException.ThrowIfNull(perm);
        Check.That(perm.Length == x.Rank && perm.Order().SequenceEqual(Enumerable.Range(0, x.Rank)), nameof(perm), $"[{string.Join(", ", perm)}]",
            $"a permutation of 0..{x.Rank - 1} (x has shape {Tensor.FormatShape(x.Shape)})");
        var d = x.Device;
        var shape = perm.Select(p => x.Shape[p]).ToArray();
        var y = Tensor.Empty(d, DType.F32, shape);
        if (y.Length > 0)
        {
            var inStride = new int[x.Rank];
            for (int k = x.Rank - 1, s = 1; k >= 0; s *= x.Shape[k], k--) inStride[k] = s;
            // Pad to rank 4 on the left: dimensions of size 1 with stride 0.
            int pad = 4 - x.Rank;
            int Dim(int k) => k < pad ? 1 : shape[k - pad];
            int Stride(int k) => k < pad ? 0 : inStride[perm[k - pad]];
            var p = new PermuteShape(Dim(1), Dim(2), Dim(3), Stride(0), Stride(1), Stride(2), Stride(3));
            var w = d.Split(y.Length);
            d.Get(static d => new ShapeKernels(d)).Permute(w.Workers, w, x.View, y.View, p);
        }
        if (d.Tape.Needs(x))
        {
            var inverse = new int[perm.Length];
            for (int k = 0; k < perm.Length; k++) inverse[perm[k]] = k;
            d.Tape.Record(y, [x], g => Tape.Accumulate(x, Permute(g, inverse)));
        }
        return y;
    }

    /// <summary>Swaps the last two dimensions: <c>[.., R, C] -> [.., C, R]</c> (rank 2 to 4). Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32 or its rank is not 2..4.</exception>
    public static Tensor Transpose(Tensor x)
    {
        Check.That(x.Rank is >= 2 and <= 4, nameof(x), x.Shape, "a tensor of rank 2 to 4");
        var perm = Enumerable.Range(0, x.Rank).ToArray();
        (perm[^1], perm[^2]) = (perm[^2], perm[^1]);
        return Permute(x, perm);
    }

    /// <summary>
    /// Elements <c>start .. start + length - 1</c> of dimension <paramref name="dim"/> (negative counts from the end), as a new
    /// contiguous tensor. Differentiable (the gradient is zero outside the slice).
    /// </summary>
    /// <exception cref="ArgumentException">x is not F32, dim is out of range, or the range does not lie inside the dimension.</exception>
    public static Tensor Slice(Tensor x, int dim, int start, int length)
    {
        Check.DType(x, DType.F32, nameof(x));
        dim = NormalizeDim(x, dim, nameof(dim));
        int size = x.Shape[dim];
        Check.That(start >= 0 && start <= size, nameof(start), start, $"a start in [0, {size}] (dimension {dim} of {Tensor.FormatShape(x.Shape)})");
        Check.That(length >= 0 && start + length <= size, nameof(length), length, $"a length in [0, {size - start}] (start {start}, dimension {dim} has size {size})");
        var d = x.Device;
        var shape = (int[])x.Shape.Clone();
        shape[dim] = length;
        var y = Tensor.Empty(d, DType.F32, shape);
        int inner = Inner(x.Shape, dim);
        if (y.Length > 0)
        {
            var w = d.Split(y.Length);
            var shape1 = new SliceShape(size, start, length, inner);
            d.Get(static d => new ShapeKernels(d)).Take(w.Workers, w, x.View, y.View, shape1);
        }
        if (d.Tape.Needs(x))
        {
            d.Tape.Record(y, [x], g =>
            {
                var dx = Tensor.Zeros(d, x.Shape);
                if (g.Length > 0)
                {
                    var w = d.Split(g.Length);
                    Put(d, w, g, dx, new SliceShape(size, start, length, inner));
                }
                Tape.Accumulate(x, dx);
            });
        }
        return y;
    }

    /// <summary>
    /// Joins tensors along dimension <paramref name="dim"/> (negative counts from the end); all other dimensions must agree.
    /// Differentiable (each input receives its slice of the gradient).
    /// </summary>
    /// <exception cref="ArgumentException">No tensors, a tensor that is not F32 or on another device, a dim out of range, or shapes that disagree.</exception>
    public static Tensor Concat(IReadOnlyList<Tensor> xs, int dim)
    {
        ArgumentNullException.ThrowIfNull(xs);
        Check.That(xs.Count > 0, nameof(xs), "an empty list", "at least one tensor");
        var first = xs[0];
        dim = NormalizeDim(first, dim, nameof(dim));
        int total = 0;
        for (int i = 0; i < xs.Count; i++)
        {
            var t = xs[i];
            Check.DType(t, DType.F32, $"xs[{i}]");
            Check.SameDevice(first, t, $"xs[{i}]");
            var want = (int[])first.Shape.Clone();
            if (t.Rank == want.Length) want[dim] = t.Shape[dim];
            Check.Shape(t, $"xs[{i}]", want);
            total += t.Shape[dim];
        }
        var d = first.Device;
        var shape = (int[])first.Shape.Clone();
        shape[dim] = total;
        var y = Tensor.Empty(d, DType.F32, shape);
        int inner = Inner(shape, dim);
        for (int i = 0, offset = 0; i < xs.Count; offset += xs[i].Shape[dim], i++)
        {
            if (xs[i].Length == 0) continue;
            var w = d.Split(xs[i].Length);
            Put(d, w, xs[i], y, new SliceShape(total, offset, xs[i].Shape[dim], inner));
        }
        var inputs = xs.ToArray();
        if (d.Tape.Needs(inputs))
        {
            d.Tape.Record(y, inputs, g =>
            {
                for (int i = 0, offset = 0; i < inputs.Length; offset += inputs[i].Shape[dim], i++)
                    if (inputs[i].RequiresGrad) Tape.Accumulate(inputs[i], Slice(g, dim, offset, inputs[i].Shape[dim]));
            });
        }
        return y;
    }

    // dst[:, Start:Start+Length, :] = src
    static void Put(Device d, Work w, Tensor src, Tensor dst, SliceShape s) =>
        d.Get(static d => new ShapeKernels(d)).Put(w.Workers, w, src.View, dst.View, s);

    static int NormalizeDim(Tensor x, int dim, string argument)
    {
        Check.That(x.Rank >= 1 && dim >= -x.Rank && dim < x.Rank, argument, dim, $"a dimension in [-{x.Rank}, {x.Rank - 1}] (x has shape {Tensor.FormatShape(x.Shape)})");
        return dim < 0 ? dim + x.Rank : dim;
    }

    static int Inner(int[] shape, int dim)
    {
        int inner = 1;
        for (int k = dim + 1; k < shape.Length; k++) inner *= shape[k];
        return inner;
    }
}

/// <summary>Output dimensions 1..3 (dimension 0 is implied) and input strides per output dimension, rank padded to 4.</summary>
internal readonly struct PermuteShape(int d1, int d2, int d3, int s0, int s1, int s2, int s3)
{
    public readonly int D1 = d1, D2 = d2, D3 = d3, S0 = s0, S1 = s1, S2 = s2, S3 = s3;
}

/// <summary>A range <c>[Start, Start + Length)</c> of a dimension of size <c>Size</c> whose elements are <c>Inner</c> apart.</summary>
internal readonly struct SliceShape(int size, int start, int length, int inner)
{
    public readonly int Size = size, Start = start, Length = length, Inner = inner;
}

/// <summary>Kernels of the shape ops: the portable kernels below, or the block-copy bodies' kernels (Cpu/ShapeOpsCpu.cs) where
/// <see cref="Device.Choose"/> picks them.</summary>
internal sealed class ShapeKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, PermuteShape> Permute;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, SliceShape> Take, Put;

    public ShapeKernels(Device d)
    {
        // The block copies need no vector unit.
        Permute = d.LoadKernel(PermuteKernel, ShapeOpsCpu.PermuteKernel, 0);
        Take = d.LoadKernel(TakeKernel, ShapeOpsCpu.TakeKernel, 0);
        Put = d.LoadKernel(PutKernel, ShapeOpsCpu.PutKernel, 0);
    }

    // x: [.. any order ..] -> y: [D0, D1, D2, D3], y[i0, i1, i2, i3] = x[i0 S0 + i1 S1 + i2 S2 + i3 S3]
    static void PermuteKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, PermuteShape p)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int r = i;
                int i3 = r % p.D3; r /= p.D3;
                int i2 = r % p.D2; r /= p.D2;
                int i1 = r % p.D1; r /= p.D1;
                y[i] = x[r * p.S0 + i1 * p.S1 + i2 * p.S2 + i3 * p.S3];
            }
    }

    // x: [outer, Size, Inner] -> y: [outer, Length, Inner] = x[:, Start:Start+Length, :]
    static void TakeKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, SliceShape s)
    {
        int block = s.Length * s.Inner;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int i = st, e = work.End(st); i < e; i++)
            {
                int o = i / block, r = i - o * block;
                y[i] = x[o * s.Size * s.Inner + s.Start * s.Inner + r];
            }
    }

    // src: [outer, Length, Inner] -> dst[:, Start:Start+Length, :] of dst: [outer, Size, Inner]
    static void PutKernel(Index1D w, Work work, ArrayView<float> src, ArrayView<float> dst, SliceShape s)
    {
        int block = s.Length * s.Inner;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int i = st, e = work.End(st); i < e; i++)
            {
                int o = i / block, r = i - o * block;
                dst[o * s.Size * s.Inner + s.Start * s.Inner + r] = src[i];
            }
    }
}
