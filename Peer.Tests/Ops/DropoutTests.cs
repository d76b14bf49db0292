namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class DropoutTests(string backend)
{
    Device D => Devices.Get(backend);

    [Test]
    public void DropsAboutPAndScalesTheRest()
    {
        using var s = Scope.Begin();
        int n = 200000;
        float p = 0.3f;
        var x = GradCheck.Rand(n, 1).Select(v => v + 2f).ToArray(); // never zero
        var y = Peer.Ops.Dropout(Tensor.FromArray(D, x, n), p, seed: 12345).ToArray();
        int dropped = y.Count(v => v == 0f);
        double sigma = Math.Sqrt(n * p * (1 - p));
        Assert.That(dropped, Is.EqualTo(n * p).Within(4 * sigma));
        for (int i = 0; i < n; i++)
            if (y[i] != 0f) Assert.That(y[i], Is.EqualTo(x[i] / (1.0 - p)).Within(1e-6));
        // mean is preserved in expectation: E[y] = E[x]
        Assert.That(y.Average(v => (double)v), Is.EqualTo(x.Average(v => (double)v)).Within(0.02));
    }

    [Test]
    public void MaskIsAFunctionOfSeedAndIndex()
    {
        using var s = Scope.Begin();
        int n = 1000;
        var x = Tensor.Full(D, 1f, n);
        ulong seed = 0xABCDEF0123456789UL;
        var a = Peer.Ops.Dropout(x, 0.5f, seed).ToArray();
        var b = Peer.Ops.Dropout(x, 0.5f, seed).ToArray();
        var c = Peer.Ops.Dropout(x, 0.5f, seed + 1).ToArray();
        Assert.That(b, Is.EqualTo(a));
        Assert.That(c, Is.Not.EqualTo(a));
        for (int i = 0; i < n; i++)
            Assert.That(a[i] != 0f, Is.EqualTo(Peer.Ops.UniformAt((uint)seed, (uint)(seed >> 32), (uint)i) >= 0.5f), $"element {i}");
    }

    [Test]
    public void BackwardUsesTheForwardMask()
    {
        using var s = Scope.Begin();
        int n = 500;
        var x = Tensor.FromArray(D, GradCheck.Rand(n, 2).Select(v => v + 2f).ToArray(), n);
        x.RequiresGrad = true;
        var y = Peer.Ops.Dropout(x, 0.25f, seed: 9);
        var g = GradCheck.Rand(n, 3);
        D.Tape.Backward(y, Tensor.FromArray(D, g, n));
        var kept = y.ToArray().Select(v => v != 0f).ToArray();
        var dx = x.Grad!.ToArray();
        for (int i = 0; i < n; i++)
            Assert.That(dx[i], Is.EqualTo(kept[i] ? g[i] / 0.75 : 0.0).Within(1e-6));
    }

    [Test]
    public void GradientMatchesFiniteDifferences() =>
        GradCheck.Check(D, x => Peer.Ops.Dropout(x[0], 0.4f, seed: 77), [(GradCheck.Rand(30, 4), [5, 6])]);

    [Test]
    public void EvalAndZeroPAreIdentityAndOneDropsAll()
    {
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, GradCheck.Rand(10, 5), 10);
        Assert.That(Peer.Ops.Dropout(x, 0.5f, 1, training: false), Is.SameAs(x));
        Assert.That(Peer.Ops.Dropout(x, 0f, 1), Is.SameAs(x));
        Assert.That(Peer.Ops.Dropout(x, 1f, 1).ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void BadProbabilityIsNamed()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Dropout(Tensor.Zeros(D, 3), 1.5f, 1))!;
        Assert.That(e.Message, Does.Contain("p = 1.5").And.Contain("[0, 1]"));
    }
}
