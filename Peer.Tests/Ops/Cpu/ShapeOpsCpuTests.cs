namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU block-copy shape bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator: they only move floats, so the
/// outputs must be identical bits. The public ops are checked against host references in ShapeOpsTests.</summary>
public sealed class ShapeOpsCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    // The splits to launch with: the device's own, and small chunks that start and end inside rows (partial runs).
    static IEnumerable<Work> Splits(int n) => [D.Split(n), new Work(n, 3, 5), new Work(n, 2, 1), new Work(n, 4, 13)];

    // The permute kernel as device d's launcher loads it, over chunks w.
    static float[] Permute(Device d, Work w, float[] hx, int[] shape, int[] outShape, PermuteShape p)
    {
        using var s = Scope.Begin();
        var (x, y) = (Tensor.FromArray(d, hx, shape), Tensor.Empty(d, DType.F32, outShape));
        d.Get(static d => new ShapeKernels(d)).Permute(w.Workers, w, x.View, y.View, p);
        return y.ToArray();
    }

    // Take of x into [outer, length, inner], and Put of src into a copy of x, as device d's launcher loads them.
    static (float[] Taken, float[] Put) TakeAndPut(Device d, Work w, float[] hx, float[] hsrc, int outer, int size, int length, int inner, SliceShape sh)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new ShapeKernels(d));
        var (x, y, src) = (Tensor.FromArray(d, hx, outer, size, inner), Tensor.Empty(d, DType.F32, outer, length, inner), Tensor.FromArray(d, hsrc, outer, length, inner));
        k.Take(w.Workers, w, x.View, y.View, sh);
        // Put writes only the slice: the destination starts as the full x, so the rest must stay as it was too.
        var dst = Tensor.FromArray(d, hx, outer, size, inner);
        k.Put(w.Workers, w, src.View, dst.View, sh);
        return (y.ToArray(), dst.ToArray());
    }

    // Odd shapes of rank 1..4 and every kind of permutation: identity, last-two swap, [B,T,H,D] <-> [B,H,T,D], full reversal.
    [TestCase(new[] { 7 }, new[] { 0 })]
    [TestCase(new[] { 5, 3 }, new[] { 1, 0 })]
    [TestCase(new[] { 3, 7, 5 }, new[] { 0, 2, 1 })]
    [TestCase(new[] { 3, 7, 5 }, new[] { 2, 0, 1 })]
    [TestCase(new[] { 3, 5, 7, 9 }, new[] { 0, 2, 1, 3 })]
    [TestCase(new[] { 2, 9, 6, 5 }, new[] { 0, 2, 1, 3 })]
    [TestCase(new[] { 3, 5, 7, 9 }, new[] { 3, 2, 1, 0 })]
    [TestCase(new[] { 3, 5, 7, 9 }, new[] { 0, 1, 2, 3 })]
    [TestCase(new[] { 1, 1, 1, 1 }, new[] { 0, 2, 1, 3 })]
    public void PermuteBodyIsBitIdentical(int[] shape, int[] perm)
    {
        using var s = Scope.Begin();
        var hx = GradCheck.Rand(shape.Aggregate(1, (a, b) => a * b), shape.Sum(), 3f);
        var x = Tensor.FromArray(D, hx, shape);
        // The kernel's shape argument as Ops.Permute builds it: output dims 1..3 and input strides, rank padded to 4.
        var outShape = perm.Select(p => shape[p]).ToArray();
        var inStride = new int[shape.Length];
        for (int k = shape.Length - 1, st = 1; k >= 0; st *= shape[k], k--) inStride[k] = st;
        int pad = 4 - shape.Length;
        int Dim(int k) => k < pad ? 1 : outShape[k - pad];
        int Stride(int k) => k < pad ? 0 : inStride[perm[k - pad]];
        var p = new PermuteShape(Dim(1), Dim(2), Dim(3), Stride(0), Stride(1), Stride(2), Stride(3));
        foreach (var w in Splits(x.Length))
            Assert.That(GradCheck.Bits(Permute(D, w, hx, shape, outShape, p)), Is.EqualTo(GradCheck.Bits(Permute(P, w, hx, shape, outShape, p))), $"workers {w.Workers}, chunk {w.Chunk}");
        // The public op takes the block-copy path on the CPU accelerator and gives the portable result.
        Assert.That(GradCheck.Bits(Peer.Ops.Permute(x, perm).ToArray()), Is.EqualTo(GradCheck.Bits(Permute(P, P.Split(x.Length), hx, shape, outShape, p))), "Ops.Permute");
    }

    // [outer, Size, Inner] with a slice [Start, Start + Length) of the middle dimension, including empty outer/inner runs of 1.
    [TestCase(1, 7, 0, 7, 1)]
    [TestCase(3, 12, 4, 4, 16)]
    [TestCase(5, 9, 2, 5, 3)]
    [TestCase(7, 5, 4, 1, 1)]
    [TestCase(2, 13, 0, 6, 11)]
    [TestCase(4, 3, 1, 2, 37)]
    public void TakeAndPutBodiesAreBitIdentical(int outer, int size, int start, int length, int inner)
    {
        var hx = GradCheck.Rand(outer * size * inner, size + inner, 2f);
        var hsrc = GradCheck.Rand(outer * length * inner, 3 * size + inner, 2f);
        var sh = new SliceShape(size, start, length, inner);
        foreach (var w in Splits(outer * length * inner))
        {
            var fast = TakeAndPut(D, w, hx, hsrc, outer, size, length, inner, sh);
            var portable = TakeAndPut(P, w, hx, hsrc, outer, size, length, inner, sh);
            Assert.That(GradCheck.Bits(fast.Taken), Is.EqualTo(GradCheck.Bits(portable.Taken)), $"take: workers {w.Workers}, chunk {w.Chunk}");
            Assert.That(GradCheck.Bits(fast.Put), Is.EqualTo(GradCheck.Bits(portable.Put)), $"put: workers {w.Workers}, chunk {w.Chunk}");
        }
    }

    [Test]
    public void SliceConcatAndTheirGradientsMatchHostOnTheCpuPath()
    {
        using var s = Scope.Begin();
        // The tiny preset's q/k/v split at odd sizes: [B, 3H, T, Dh] sliced along dimension 1, then joined back.
        int b = 3, h = 5, t = 7, dh = 9;
        var hx = GradCheck.Rand(b * 3 * h * t * dh, 11, 2f);
        var x = Tensor.FromArray(D, hx, b, 3 * h, t, dh);
        x.RequiresGrad = true;
        var parts = new[] { Peer.Ops.Slice(x, 1, 0, h), Peer.Ops.Slice(x, 1, h, h), Peer.Ops.Slice(x, 1, 2 * h, h) };
        int inner = t * dh;
        for (int p = 0; p < 3; p++)
        {
            var got = parts[p].ToArray();
            for (int o = 0; o < b; o++)
                for (int r = 0; r < h * inner; r++)
                    Assert.That(got[o * h * inner + r], Is.EqualTo(hx[o * 3 * h * inner + p * h * inner + r]), $"part {p}");
        }
        // Concat in another order, then backward a gradient: each slice's gradient lands back in its own place.
        var y = Peer.Ops.Concat([parts[2], parts[0], parts[1]], 1);
        var hg = GradCheck.Rand(y.Length, 12);
        var yh = y.ToArray();
        D.Tape.Backward(y, Tensor.FromArray(D, hg, y.Shape));
        var dx = x.Grad!.ToArray();
        int[] order = [2, 0, 1];
        for (int o = 0; o < b; o++)
            for (int q = 0; q < 3; q++)
                for (int r = 0; r < h * inner; r++)
                {
                    int yi = o * 3 * h * inner + q * h * inner + r, xi = o * 3 * h * inner + order[q] * h * inner + r;
                    Assert.That(yh[yi], Is.EqualTo(hx[xi]), "concat");
                    Assert.That(dx[xi], Is.EqualTo(hg[yi]), "gradient");
                }
    }
}
