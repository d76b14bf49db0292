namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ReduceTests(string backend)
{
    Device D => Devices.Get(backend);

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(100003)]
    public void SumAndMeanOfAllMatchHost(int n)
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(n, n);
        double want = x.Sum(v => (double)v);
        var t = Tensor.FromArray(D, x);
        var sum = Peer.Ops.Sum(t);
        Assert.That(sum.Shape, Is.EqualTo(new[] { 1 }));
        // float32 accumulation over n terms of size <= 1: error grows like n * eps in the worst case
        Assert.That(sum.Item(), Is.EqualTo(want).Within(1e-6 * n));
        Assert.That(Peer.Ops.Mean(t).Item(), Is.EqualTo(want / n).Within(1e-6));
    }

    [Test]
    public void SumIsDeterministic()
    {
        using var s = Scope.Begin();
        var t = Tensor.FromArray(D, GradCheck.Rand(65537, 3, 100f));
        float first = Peer.Ops.Sum(t).Item();
        for (int i = 0; i < 5; i++) Assert.That(Peer.Ops.Sum(t).Item(), Is.EqualTo(first));
    }

    [Test]
    public void LastDimMatchesHost()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(2 * 3 * 7, 4);
        var t = Tensor.FromArray(D, x, 2, 3, 7);
        var sum = Peer.Ops.SumLastDim(t);
        var mean = Peer.Ops.MeanLastDim(t, keepDim: true);
        Assert.That(sum.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(mean.Shape, Is.EqualTo(new[] { 2, 3, 1 }));
        var gs = sum.ToArray();
        var gm = mean.ToArray();
        for (int r = 0; r < 6; r++)
        {
            double want = 0;
            for (int j = 0; j < 7; j++) want += x[r * 7 + j];
            Assert.That(gs[r], Is.EqualTo(want).Within(1e-6));
            Assert.That(gm[r], Is.EqualTo(want / 7).Within(1e-6));
        }
        Assert.That(Peer.Ops.SumLastDim(Tensor.FromArray(D, new[] { 1f, 2f, 3.5f })).Shape, Is.EqualTo(new[] { 1 }));
        Assert.That(Peer.Ops.SumLastDim(Tensor.FromArray(D, new[] { 1f, 2f, 3.5f })).Item(), Is.EqualTo(6.5f));
    }

    [Test]
    public void GradientsMatchFiniteDifferences()
    {
        (float[], int[])[] x = [(GradCheck.Rand(24, 5), [2, 3, 4])];
        GradCheck.Check(D, t => Peer.Ops.Sum(t[0]), x);
        GradCheck.Check(D, t => Peer.Ops.Mean(t[0]), x);
        GradCheck.Check(D, t => Peer.Ops.SumLastDim(t[0]), x);
        GradCheck.Check(D, t => Peer.Ops.MeanLastDim(t[0], keepDim: true), x);
    }

    [Test]
    public void BadInputsAreRefused()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Mean(Tensor.Zeros(D, 0)))!;
        Assert.That(e.Message, Does.Contain("x = [0]").And.Contain("non-empty"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.MeanLastDim(Tensor.Zeros(D, 3, 0)))!.Message, Does.Contain("x = [3, 0]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Sum(Tensor.ZerosInt(D, 3)))!.Message, Does.Contain("x has dtype I32"));
        Assert.That(Peer.Ops.Sum(Tensor.Zeros(D, 0)).Item(), Is.EqualTo(0f));
    }
}
