namespace Peer.Tests.Ops;

public sealed class RandomTests
{
    static Device D => Devices.Cpu;

    [Test]
    public void SameSeedSameNumbersAnyWorkerCount()
    {
        using var s = Scope.Begin();
        var a = Peer.Ops.Normal(D, 42, 0, 1, 10007).ToArray();
        using var one = Device.Open("cpu", new DeviceOptions { CpuThreads = 1 });
        float[] b;
        using (Scope.Begin()) b = Peer.Ops.Normal(one, 42, 0, 1, 10007).ToArray();
        Assert.That(b, Is.EqualTo(a));
        var c = Peer.Ops.Normal(D, 43, 0, 1, 10007).ToArray();
        Assert.That(c, Is.Not.EqualTo(a));
    }

    [Test]
    public void UniformAndNormalMoments()
    {
        using var s = Scope.Begin();
        var u = Peer.Ops.Uniform(D, 7, -1, 3, 200000).ToArray();
        Assert.That(u.Min(), Is.GreaterThanOrEqualTo(-1f));
        Assert.That(u.Max(), Is.LessThan(3f));
        Assert.That(MathNet.Numerics.Statistics.Statistics.Mean(u.Select(v => (double)v)), Is.EqualTo(1.0).Within(0.02));
        var n = Peer.Ops.Normal(D, 7, 2, 0.5f, 200000).ToArray().Select(v => (double)v).ToArray();
        Assert.That(MathNet.Numerics.Statistics.Statistics.Mean(n), Is.EqualTo(2.0).Within(0.01));
        Assert.That(MathNet.Numerics.Statistics.Statistics.StandardDeviation(n), Is.EqualTo(0.5).Within(0.01));
        // Kolmogorov-Smirnov distance against the normal CDF
        var sorted = n.OrderBy(v => v).ToArray();
        double ks = 0;
        for (int i = 0; i < sorted.Length; i++)
            ks = Math.Max(ks, Math.Abs(MathNet.Numerics.Distributions.Normal.CDF(2, 0.5, sorted[i]) - (i + 0.5) / sorted.Length));
        Assert.That(ks, Is.LessThan(0.01));
    }
}
