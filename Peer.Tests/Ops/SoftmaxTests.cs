namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class SoftmaxTests(string backend)
{
    Device D => Devices.Get(backend);

    // Host reference in double precision: log-softmax of one row.
    static double[] LogSoftmaxRow(float[] x, int offset, int cols)
    {
        double m = double.NegativeInfinity;
        for (int j = 0; j < cols; j++) m = Math.Max(m, x[offset + j]);
        double sum = 0;
        for (int j = 0; j < cols; j++) sum += Math.Exp(x[offset + j] - m);
        double lse = m + Math.Log(sum);
        return Enumerable.Range(0, cols).Select(j => x[offset + j] - lse).ToArray();
    }

    [Test]
    public void SoftmaxAndLogSoftmaxMatchDoubleReference()
    {
        using var s = Scope.Begin();
        int rows = 2 * 7, cols = 37;
        var x = GradCheck.Rand(rows * cols, 5, scale: 6f);
        x[3] = 80f; // large logits must not overflow
        var t = Tensor.FromArray(D, x, 2, 7, cols);
        var sm = Peer.Ops.Softmax(t).ToArray();
        var lsm = Peer.Ops.LogSoftmax(t).ToArray();
        for (int r = 0; r < rows; r++)
        {
            var want = LogSoftmaxRow(x, r * cols, cols);
            for (int j = 0; j < cols; j++)
            {
                Assert.That(lsm[r * cols + j], Is.EqualTo(want[j]).Within(1e-5 + 1e-6 * Math.Abs(want[j])));
                Assert.That(sm[r * cols + j], Is.EqualTo(Math.Exp(want[j])).Within(1e-6));
            }
        }
    }

    [Test]
    public void SoftmaxGradients() =>
        GradCheck.Check(D, x => Peer.Ops.Softmax(x[0]), [(GradCheck.Rand(3 * 6, 1, 2f), [3, 6])]);

    [Test]
    public void LogSoftmaxGradients() =>
        GradCheck.Check(D, x => Peer.Ops.LogSoftmax(x[0]), [(GradCheck.Rand(2 * 2 * 5, 2, 2f), [2, 2, 5])]);

    [Test]
    public void CrossEntropyMatchesDoubleReferenceWithIgnoredRows()
    {
        using var s = Scope.Begin();
        int rows = 9, cols = 11;
        var x = GradCheck.Rand(rows * cols, 3, scale: 4f);
        int[] targets = [0, 10, -100, 5, 5, -100, 1, 2, 9];
        var loss = Peer.Ops.CrossEntropy(Tensor.FromArray(D, x, rows, cols), Tensor.FromArray(D, targets, rows));
        Assert.That(loss.Shape, Is.EqualTo(new[] { 1 }));
        double sum = 0;
        int n = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == -100) continue;
            sum -= LogSoftmaxRow(x, r * cols, cols)[targets[r]];
            n++;
        }
        Assert.That(loss.Item(), Is.EqualTo(sum / n).Within(1e-5));
    }

    [Test]
    public void CrossEntropyCustomIgnoreIndex()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(2 * 3, 4);
        var loss = Peer.Ops.CrossEntropy(Tensor.FromArray(D, x, 2, 3), Tensor.FromArray(D, [2, 1], 2), ignoreIndex: 1).Item();
        Assert.That(loss, Is.EqualTo(-LogSoftmaxRow(x, 0, 3)[2]).Within(1e-6));
    }

    [Test]
    public void CrossEntropyGradients()
    {
        int[] targets = [3, -100, 0, 4];
        GradCheck.Check(D, x => Peer.Ops.CrossEntropy(x[0], Tensor.FromArray(D, targets, 4)), [(GradCheck.Rand(4 * 5, 6, 2f), [4, 5])]);
    }

    [Test]
    public void CrossEntropyGradientIsSoftmaxMinusOneHotOverCount()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(3 * 4, 8);
        var logits = Tensor.FromArray(D, x, 3, 4);
        logits.RequiresGrad = true;
        Peer.Ops.CrossEntropy(logits, Tensor.FromArray(D, [1, -100, 3], 3)).Backward();
        var g = logits.Grad!.ToArray();
        int[] t = [1, -100, 3];
        for (int r = 0; r < 3; r++)
        {
            var p = LogSoftmaxRow(x, r * 4, 4).Select(Math.Exp).ToArray();
            for (int j = 0; j < 4; j++)
                Assert.That(g[r * 4 + j], Is.EqualTo(t[r] == -100 ? 0.0 : (p[j] - (j == t[r] ? 1 : 0)) / 2).Within(1e-6));
        }
    }

    [Test]
    public void OutOfRangeTargetGivesNaNAndNeverReadsOutOfBounds()
    {
        using var s = Scope.Begin();
        var logits = Tensor.FromArray(D, GradCheck.Rand(3 * 4, 9), 3, 4);
        logits.RequiresGrad = true;
        var loss = Peer.Ops.CrossEntropy(logits, Tensor.FromArray(D, [1, 4, -7], 3));
        Assert.That(float.IsNaN(loss.Item()));
        loss.Backward();
        var g = logits.Grad!.ToArray();
        Assert.That(g.Take(4).All(float.IsFinite), "a valid row keeps a finite gradient");
        Assert.That(g.Skip(4).All(float.IsNaN), "rows with targets 4 and -7 (V = 4) are NaN");
    }

    [Test]
    public void AllIgnoredGivesNaNLossAndZeroGradient()
    {
        using var s = Scope.Begin();
        var logits = Tensor.FromArray(D, GradCheck.Rand(2 * 3, 10), 2, 3);
        logits.RequiresGrad = true;
        var loss = Peer.Ops.CrossEntropy(logits, Tensor.FromArray(D, [-100, -100], 2));
        Assert.That(float.IsNaN(loss.Item()));
        loss.Backward();
        Assert.That(logits.Grad!.ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var s = Scope.Begin();
        var logits = Tensor.Zeros(D, 3, 4);
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.CrossEntropy(logits, Tensor.FromArray(D, [0, 1], 2)))!;
        Assert.That(e.Message, Does.Contain("targets has shape [2]").And.Contain("[3]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.CrossEntropy(logits, Tensor.Zeros(D, 3)))!;
        Assert.That(e.Message, Does.Contain("targets has dtype F32"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.CrossEntropy(Tensor.Zeros(D, 12), Tensor.ZerosInt(D, 12)))!;
        Assert.That(e.Message, Does.Contain("logits has shape [12]").And.Contain("rank-2"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Softmax(Tensor.ZerosInt(D, 3)))!;
        Assert.That(e.Message, Does.Contain("x has dtype I32"));
    }
}
