namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class RotaryTests(string backend)
{
    Device D => Devices.Get(backend);

    // Host reference in double: each pair (2i, 2i+1) of row (b, h, t) turned by t * base^(-2i/Dh).
    static double[] Reference(float[] x, int rows, int t, int dh, double @base)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < dh / 2; i++)
            {
                double angle = r % t * Math.Pow(@base, -2.0 * i / dh);
                double a = x[r * dh + 2 * i], b = x[r * dh + 2 * i + 1];
                y[r * dh + 2 * i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                y[r * dh + 2 * i + 1] = a * Math.Sin(angle) + b * Math.Cos(angle);
            }
        return y;
    }

    [TestCase(2, 3, 40, 8, 10000f)]
    [TestCase(1, 2, 130, 16, 100f)]
    [TestCase(3, 1, 5, 2, 10000f)]
    public void ForwardMatchesDoubleReference(int b, int h, int t, int dh, float @base)
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(b * h * t * dh, 11, 2f);
        var got = Peer.Ops.Rotary(Tensor.FromArray(D, x, b, h, t, dh), @base).ToArray();
        var want = Reference(x, b * h * t, t, dh, @base);
        // The float angle t * base^(-2i/Dh) carries a relative error of a few ulp, so its error grows with t (t < 130 here: ~1e-5 rad).
        for (int i = 0; i < x.Length; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(4e-5), $"element {i}");
    }

    [Test]
    public void DotProductOfTurnedVectorsDependsOnlyOnTheOffset()
    {
        // The property rotary positions are used for: <R(t1) q, R(t2) k> is a function of t1 - t2.
        using var s = Scope.Begin();
        int t = 12, dh = 8;
        var q = GradCheck.Rand(dh, 21);
        var k = GradCheck.Rand(dh, 22);
        var qs = Peer.Ops.Rotary(Tensor.FromArray(D, Enumerable.Repeat(q, t).SelectMany(v => v).ToArray(), 1, 1, t, dh)).ToArray();
        var ks = Peer.Ops.Rotary(Tensor.FromArray(D, Enumerable.Repeat(k, t).SelectMany(v => v).ToArray(), 1, 1, t, dh)).ToArray();
        double Dot(int i, int j) => Enumerable.Range(0, dh).Sum(c => (double)qs[i * dh + c] * ks[j * dh + c]);
        for (int offset = 0; offset < 4; offset++)
            for (int i = offset; i < t; i++) Assert.That(Dot(i, i - offset), Is.EqualTo(Dot(offset, 0)).Within(1e-4), $"t1 = {i}, t2 = {i - offset}");
        Assert.That(Dot(1, 0), Is.Not.EqualTo(Dot(0, 0)).Within(1e-3), "positions must change the product");
    }

    [Test]
    public void GradientMatchesFiniteDifferences() =>
        GradCheck.Check(D, x => Peer.Ops.Rotary(x[0], 50f), [(GradCheck.Rand(2 * 2 * 6 * 4, 31), [2, 2, 6, 4])]);

    [Test]
    public void BadInputIsNamed()
    {
        using var s = Scope.Begin();
        Assert.That(() => Peer.Ops.Rotary(Tensor.Zeros(D, 1, 1, 4, 3)), Throws.ArgumentException.With.Message.Contains("[1, 1, 4, 3]").And.Message.Contains("even head size"));
        Assert.That(() => Peer.Ops.Rotary(Tensor.Zeros(D, 4, 4)), Throws.ArgumentException.With.Message.Contains("rank-4"));
        Assert.That(() => Peer.Ops.Rotary(Tensor.Zeros(D, 1, 1, 4, 2), 1f), Throws.ArgumentException.With.Message.Contains("base = 1").And.Message.Contains("above 1"));
    }
}
