namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class NormsTests(string backend)
{
    Device D => Devices.Get(backend);

    [Test]
    public void LayerNormMatchesDoubleReference()
    {
        using var s = Scope.Begin();
        int rows = 6, c = 10;
        var x = GradCheck.Rand(rows * c, 1, 3f).Select(v => v + 5f).ToArray(); // an offset that a one-pass variance would suffer from
        var w = GradCheck.Rand(c, 2);
        var b = GradCheck.Rand(c, 3);
        var y = Peer.Ops.LayerNorm(Tensor.FromArray(D, x, 2, 3, c), Tensor.FromArray(D, w, c), Tensor.FromArray(D, b, c)).ToArray();
        for (int r = 0; r < rows; r++)
        {
            var row = x.Skip(r * c).Take(c).Select(v => (double)v).ToArray();
            double mu = row.Average(), var = row.Select(v => (v - mu) * (v - mu)).Average();
            for (int j = 0; j < c; j++)
                Assert.That(y[r * c + j], Is.EqualTo((row[j] - mu) / Math.Sqrt(var + 1e-5) * w[j] + b[j]).Within(2e-5));
        }
    }

    [Test]
    public void LayerNormGradients() =>
        GradCheck.Check(D, x => Peer.Ops.LayerNorm(x[0], x[1], x[2]),
            [(GradCheck.Rand(3 * 5, 1, 2f), [3, 5]), (GradCheck.Rand(5, 2), [5]), (GradCheck.Rand(5, 3), [5])]);

    [Test]
    public void RMSNormMatchesDoubleReference()
    {
        using var s = Scope.Begin();
        int rows = 4, c = 9;
        var x = GradCheck.Rand(rows * c, 4, 2f);
        var w = GradCheck.Rand(c, 5);
        var y = Peer.Ops.RMSNorm(Tensor.FromArray(D, x, rows, c), Tensor.FromArray(D, w, c)).ToArray();
        for (int r = 0; r < rows; r++)
        {
            double ms = x.Skip(r * c).Take(c).Select(v => (double)v * v).Average();
            for (int j = 0; j < c; j++)
                Assert.That(y[r * c + j], Is.EqualTo(x[r * c + j] / Math.Sqrt(ms + 1e-6) * w[j]).Within(1e-5));
        }
    }

    [Test]
    public void RMSNormGradients() =>
        GradCheck.Check(D, x => Peer.Ops.RMSNorm(x[0], x[1]), [(GradCheck.Rand(2 * 2 * 6, 6, 2f), [2, 2, 6]), (GradCheck.Rand(6, 7), [6])]);

    // Host reference of BatchNorm1d in training mode, with PyTorch's running-statistic update.
    static double[] BatchNormRef(float[] x, int n, int c, float[] w, float[] b, double[] rm, double[] rv, double momentum)
    {
        var y = new double[n * c];
        for (int j = 0; j < c; j++)
        {
            var col = Enumerable.Range(0, n).Select(r => (double)x[r * c + j]).ToArray();
            double mu = col.Average(), var = col.Select(v => (v - mu) * (v - mu)).Average();
            for (int r = 0; r < n; r++) y[r * c + j] = (col[r] - mu) / Math.Sqrt(var + 1e-5) * w[j] + b[j];
            rm[j] = (1 - momentum) * rm[j] + momentum * mu;
            rv[j] = (1 - momentum) * rv[j] + momentum * MathNet.Numerics.Statistics.Statistics.Variance(col); // unbiased
        }
        return y;
    }

    [Test]
    public void BatchNormTrainingUpdatesRunningStatsLikePyTorch()
    {
        using var s = Scope.Begin();
        int n = 7, c = 4;
        var w = GradCheck.Rand(c, 1);
        var b = GradCheck.Rand(c, 2);
        var rm = Tensor.Zeros(D, c);
        var rv = Tensor.Full(D, 1f, c);
        double[] hrm = new double[c], hrv = Enumerable.Repeat(1.0, c).ToArray();
        for (int step = 0; step < 3; step++)
        {
            var x = GradCheck.Rand(n * c, 10 + step, 2f).Select(v => v + step).ToArray();
            var y = Peer.Ops.BatchNorm1d(Tensor.FromArray(D, x, n, c), Tensor.FromArray(D, w, c), Tensor.FromArray(D, b, c), rm, rv, training: true, momentum: 0.3f).ToArray();
            var want = BatchNormRef(x, n, c, w, b, hrm, hrv, 0.3);
            for (int i = 0; i < want.Length; i++) Assert.That(y[i], Is.EqualTo(want[i]).Within(2e-5));
        }
        Assert.That(rm.ToArray(), Is.EqualTo(hrm).Within(1e-5));
        Assert.That(rv.ToArray(), Is.EqualTo(hrv).Within(1e-5));
    }

    [Test]
    public void BatchNormEvalUsesRunningStatsAndLeavesThem()
    {
        using var s = Scope.Begin();
        int n = 3, c = 2;
        var x = GradCheck.Rand(n * c, 3);
        float[] m = [0.5f, -1f], v = [2f, 0.25f], w = [1.5f, -0.5f], b = [0.1f, 0.2f];
        var rm = Tensor.FromArray(D, m, c);
        var rv = Tensor.FromArray(D, v, c);
        var y = Peer.Ops.BatchNorm1d(Tensor.FromArray(D, x, n, c), Tensor.FromArray(D, w, c), Tensor.FromArray(D, b, c), rm, rv, training: false).ToArray();
        for (int r = 0; r < n; r++)
            for (int j = 0; j < c; j++)
                Assert.That(y[r * c + j], Is.EqualTo((x[r * c + j] - m[j]) / Math.Sqrt(v[j] + 1e-5) * w[j] + b[j]).Within(1e-5));
        Assert.That(rm.ToArray(), Is.EqualTo(m));
        Assert.That(rv.ToArray(), Is.EqualTo(v));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void BatchNormGradients(bool training)
    {
        float[] m = [0.3f, -0.2f, 0.1f], v = [1.5f, 0.7f, 2f];
        GradCheck.Check(D, x => Peer.Ops.BatchNorm1d(x[0], x[1], x[2], Tensor.FromArray(D, (float[])m.Clone(), 3), Tensor.FromArray(D, (float[])v.Clone(), 3), training),
            [(GradCheck.Rand(5 * 3, 8, 2f), [5, 3]), (GradCheck.Rand(3, 9), [3]), (GradCheck.Rand(3, 10), [3])]);
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.LayerNorm(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 4), Tensor.Zeros(D, 3)))!;
        Assert.That(e.Message, Does.Contain("weight has shape [4]").And.Contain("[3]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.RMSNorm(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 3), eps: 0f))!;
        Assert.That(e.Message, Does.Contain("eps = 0"));
        var c3 = Tensor.Zeros(D, 3);
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.BatchNorm1d(Tensor.Zeros(D, 1, 3), c3, c3, c3, c3, training: true))!;
        Assert.That(e.Message, Does.Contain("x = [1, 3]").And.Contain("more than one row"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.BatchNorm1d(Tensor.Zeros(D, 4, 3), c3, c3, Tensor.Zeros(D, 2), c3, training: false))!;
        Assert.That(e.Message, Does.Contain("runningMean has shape [2]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.BatchNorm1d(Tensor.Zeros(D, 4, 3), c3, c3, c3, c3, training: true, momentum: 1.5f))!;
        Assert.That(e.Message, Does.Contain("momentum = 1.5"));
    }
}
