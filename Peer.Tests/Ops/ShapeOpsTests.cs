namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ShapeOpsTests(string backend)
{
    Device D => Devices.Get(backend);

    [Test]
    public void TransposeMatchesHost()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(2 * 3 * 5, 1);
        var y = Peer.Ops.Transpose(Tensor.FromArray(D, x, 2, 3, 5));
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 5, 3 }));
        var got = y.ToArray();
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 5; j++)
                    Assert.That(got[b * 15 + j * 3 + i], Is.EqualTo(x[b * 15 + i * 5 + j]));
        var m = GradCheck.Rand(7 * 4, 2);
        var mt = Peer.Ops.Transpose(Tensor.FromArray(D, m, 7, 4)).ToArray();
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 4; j++)
                Assert.That(mt[j * 7 + i], Is.EqualTo(m[i * 4 + j]));
    }

    [Test]
    public void PermuteBthdToBhtdAndBack()
    {
        using var s = Scope.Begin();
        const int B = 2, T = 3, H = 4, Dh = 5;
        var x = GradCheck.Rand(B * T * H * Dh, 3);
        var tx = Tensor.FromArray(D, x, B, T, H, Dh);
        var y = Peer.Ops.Permute(tx, 0, 2, 1, 3);
        Assert.That(y.Shape, Is.EqualTo(new[] { B, H, T, Dh }));
        var got = y.ToArray();
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                    for (int e = 0; e < Dh; e++)
                        Assert.That(got[((b * H + h) * T + t) * Dh + e], Is.EqualTo(x[((b * T + t) * H + h) * Dh + e]));
        Assert.That(Peer.Ops.Permute(y, 0, 2, 1, 3).ToArray(), Is.EqualTo(x));
        // A 3-cycle on rank 3: y[k, i, j] = x[i, j, k]
        var z = Peer.Ops.Permute(Tensor.FromArray(D, x.Take(24).ToArray(), 2, 3, 4), 2, 0, 1);
        Assert.That(z.Shape, Is.EqualTo(new[] { 4, 2, 3 }));
        var zg = z.ToArray();
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++)
                    Assert.That(zg[(k * 2 + i) * 3 + j], Is.EqualTo(x[(i * 3 + j) * 4 + k]));
    }

    [Test]
    public void SliceAndConcatMatchHost()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(3 * 6 * 2, 4);
        var tx = Tensor.FromArray(D, x, 3, 6, 2);
        var sl = Peer.Ops.Slice(tx, 1, 2, 3);
        Assert.That(sl.Shape, Is.EqualTo(new[] { 3, 3, 2 }));
        var got = sl.ToArray();
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 2; c++)
                    Assert.That(got[(a * 3 + b) * 2 + c], Is.EqualTo(x[(a * 6 + b + 2) * 2 + c]));
        // Slicing along dims 1 and the last, then concatenating, rebuilds the tensor.
        var parts = new[] { Peer.Ops.Slice(tx, 1, 0, 2), Peer.Ops.Slice(tx, 1, 2, 0), Peer.Ops.Slice(tx, -2, 2, 4) };
        Assert.That(Peer.Ops.Concat(parts, 1).ToArray(), Is.EqualTo(x));
        var cols = new[] { Peer.Ops.Slice(tx, -1, 0, 1), Peer.Ops.Slice(tx, 2, 1, 1) };
        Assert.That(Peer.Ops.Concat(cols, -1).ToArray(), Is.EqualTo(x));
        // Concat along dim 0 of different lengths: plain host concatenation.
        var a0 = GradCheck.Rand(2 * 3, 5);
        var b0 = GradCheck.Rand(4 * 3, 6);
        var c0 = Peer.Ops.Concat([Tensor.FromArray(D, a0, 2, 3), Tensor.FromArray(D, b0, 4, 3)], 0);
        Assert.That(c0.Shape, Is.EqualTo(new[] { 6, 3 }));
        Assert.That(c0.ToArray(), Is.EqualTo(a0.Concat(b0).ToArray()));
    }

    [Test]
    public void GradientsMatchFiniteDifferences()
    {
        (float[], int[])[] x4 = [(GradCheck.Rand(2 * 3 * 2 * 4, 7), [2, 3, 2, 4])];
        GradCheck.Check(D, t => Peer.Ops.Permute(t[0], 0, 2, 1, 3), x4);
        GradCheck.Check(D, t => Peer.Ops.Permute(t[0], 3, 0, 2, 1), x4);
        GradCheck.Check(D, t => Peer.Ops.Transpose(t[0]), [(GradCheck.Rand(12, 8), [3, 4])]);
        GradCheck.Check(D, t => Peer.Ops.Slice(t[0], 1, 1, 2), x4);
        GradCheck.Check(D, t => Peer.Ops.Concat([t[0], t[1], t[0]], 1),
            [(GradCheck.Rand(6, 9), [2, 3]), (GradCheck.Rand(4, 10), [2, 2])]);
    }

    [Test]
    public void BadInputsAreRefused()
    {
        using var s = Scope.Begin();
        var x = Tensor.Zeros(D, 2, 3, 4);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Permute(x, 0, 0, 1))!.Message, Does.Contain("perm = '[0, 0, 1]'").And.Contain("a permutation of 0..2"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Permute(Tensor.Zeros(D, 1, 1, 1, 1, 2), 0, 1, 2, 3, 4))!.Message, Does.Contain("rank 1 to 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Transpose(Tensor.Zeros(D, 3)))!.Message, Does.Contain("x = [3]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Slice(x, 3, 0, 1))!.Message, Does.Contain("dim = 3").And.Contain("[-3, 2]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Slice(x, 1, 2, 2))!.Message, Does.Contain("length = 2").And.Contain("[0, 1]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Slice(x, 1, -1, 1))!.Message, Does.Contain("start = -1"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Concat([x, Tensor.Zeros(D, 2, 5, 3)], 1))!.Message, Does.Contain("xs[1] has shape [2, 5, 3]").And.Contain("expected [2, 5, 4]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Concat([], 0))!.Message, Does.Contain("at least one tensor"));
    }
}
