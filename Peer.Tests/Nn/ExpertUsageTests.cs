// Expert usage statistics against a host computation in double precision of the paper's definitions.
namespace Peer.Tests.Nn;

using Peer.Nn;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ExpertUsageTests(string backend)
{
    Device D => Devices.Get(backend);

    [Test]
    public void MatchesHostComputationOverSeveralBatches()
    {
        int n = 50;
        var z = new double[n];
        using var usage = new ExpertUsage(D, n);
        var rng = new Random(3);
        for (int batch = 0; batch < 3; batch++)
        {
            int t = 7, h = 2, k = 3;
            var idx = Enumerable.Range(0, t * h * k).Select(_ => rng.Next(0, 30)).ToArray(); // experts 30..49 never used
            var g = Enumerable.Range(0, t * h * k).Select(_ => (float)rng.NextDouble()).ToArray();
            for (int i = 0; i < idx.Length; i++) z[idx[i]] += g[i];
            using var s = Scope.Begin();
            usage.Add(Tensor.FromArray(D, idx, t, h, k), Tensor.FromArray(D, g, t, h, k));
        }
        Assert.That(usage.Accumulated.ToArray(), Is.EqualTo(z).Within(1e-5));
        double total = z.Sum();
        double uneven = Math.Log(n) + z.Where(v => v != 0).Sum(v => v / total * Math.Log(v / total));
        var stats = usage.Compute();
        Assert.That(stats.Usage, Is.EqualTo(z.Count(v => v != 0) / (double)n));
        Assert.That(stats.Total, Is.EqualTo(total).Within(1e-4));
        Assert.That(stats.Unevenness, Is.EqualTo(uneven).Within(1e-5));
        usage.Reset();
        Assert.That(usage.Compute().Usage, Is.EqualTo(0));
    }

    [Test]
    public void UniformUseHasZeroUnevenness()
    {
        using var usage = new ExpertUsage(D, 8);
        using var s = Scope.Begin();
        usage.Add(Tensor.FromArray(D, Enumerable.Range(0, 8).ToArray(), 2, 1, 4), Tensor.Full(D, 0.25f, 2, 1, 4));
        var stats = usage.Compute();
        Assert.That(stats.Usage, Is.EqualTo(1.0));
        Assert.That(stats.Unevenness, Is.EqualTo(0).Within(1e-6));
    }

    [Test]
    public void OutOfRangeIdsAreRefused()
    {
        using var usage = new ExpertUsage(D, 8);
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => usage.Add(Tensor.FromArray(D, new[] { 1, 8 }, 1, 1, 2), Tensor.Full(D, 1f, 1, 1, 2)))!;
        Assert.That(e.Message, Does.Contain("1 ids outside [0, 8)"));
    }
}
