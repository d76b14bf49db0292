namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class AttentionTests(string backend)
{
    Device D => Devices.Get(backend);

    // Host reference in double: explicit score matrix, causal mask (when causal), softmax, weighted sum.
    static double[] Reference(float[] q, float[] k, float[] v, int bh, int t, int dh, bool causal)
    {
        var y = new double[bh * t * dh];
        for (int b = 0; b < bh; b++)
            for (int i = 0; i < t; i++)
            {
                int seen = causal ? i + 1 : t;
                var scores = new double[seen];
                for (int j = 0; j < seen; j++)
                {
                    double acc = 0;
                    for (int c = 0; c < dh; c++) acc += (double)q[(b * t + i) * dh + c] * k[(b * t + j) * dh + c];
                    scores[j] = acc / Math.Sqrt(dh);
                }
                double m = scores.Max(), z = scores.Sum(x => Math.Exp(x - m));
                for (int j = 0; j < seen; j++)
                    for (int c = 0; c < dh; c++) y[(b * t + i) * dh + c] += Math.Exp(scores[j] - m) / z * v[(b * t + j) * dh + c];
            }
        return y;
    }

    [TestCase(true)]
    [TestCase(false)]
    public void ForwardMatchesDoubleReference(bool causal)
    {
        using var s = Scope.Begin();
        int b = 2, h = 3, t = 7, dh = 5, n = b * h * t * dh;
        var q = GradCheck.Rand(n, 1, 3f);
        var k = GradCheck.Rand(n, 2, 3f);
        var v = GradCheck.Rand(n, 3);
        var y = Peer.Ops.Attention(Tensor.FromArray(D, q, b, h, t, dh), Tensor.FromArray(D, k, b, h, t, dh), Tensor.FromArray(D, v, b, h, t, dh), causal);
        Assert.That(y.Shape, Is.EqualTo(new[] { b, h, t, dh }));
        var want = Reference(q, k, v, b * h, t, dh, causal);
        var got = y.ToArray();
        for (int i = 0; i < n; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-5), $"element {i}");
    }

    [Test]
    public void FirstRowCopiesTheFirstValue()
    {
        using var s = Scope.Begin();
        var v = GradCheck.Rand(4 * 2, 4);
        var y = Peer.Ops.CausalAttention(Tensor.FromArray(D, GradCheck.Rand(8, 5), 1, 1, 4, 2), Tensor.FromArray(D, GradCheck.Rand(8, 6), 1, 1, 4, 2), Tensor.FromArray(D, v, 1, 1, 4, 2)).ToArray();
        Assert.That(y[0], Is.EqualTo(v[0]).Within(1e-7));
        Assert.That(y[1], Is.EqualTo(v[1]).Within(1e-7));
    }

    [Test]
    public void CausalAttentionIsTheCausalMode()
    {
        using var s = Scope.Begin();
        int n = 2 * 2 * 6 * 4;
        var q = Tensor.FromArray(D, GradCheck.Rand(n, 41, 2f), 2, 2, 6, 4);
        var k = Tensor.FromArray(D, GradCheck.Rand(n, 42, 2f), 2, 2, 6, 4);
        var v = Tensor.FromArray(D, GradCheck.Rand(n, 43), 2, 2, 6, 4);
        Assert.That(Peer.Ops.CausalAttention(q, k, v).ToArray(), Is.EqualTo(Peer.Ops.Attention(q, k, v, causal: true).ToArray()));
        // The last query of a sequence sees every key in both modes; the others differ once a later key counts.
        var causal = Peer.Ops.Attention(q, k, v, causal: true).ToArray();
        var full = Peer.Ops.Attention(q, k, v, causal: false).ToArray();
        for (int row = 0; row < 2 * 2 * 6; row++)
            for (int c = 0; c < 4; c++)
            {
                int e = row * 4 + c;
                if (row % 6 == 5) Assert.That(full[e], Is.EqualTo(causal[e]).Within(1e-6), $"last row {row}, column {c}");
            }
        Assert.That(full[0], Is.Not.EqualTo(causal[0]).Within(1e-3), "the first query sees later keys only without the mask");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void GradientsMatchFiniteDifferences(bool causal)
    {
        int[] shape = [2, 1, 4, 3];
        GradCheck.Check(D, x => Peer.Ops.Attention(x[0], x[1], x[2], causal),
            [(GradCheck.Rand(24, 7, 1.5f), shape), (GradCheck.Rand(24, 8, 1.5f), shape), (GradCheck.Rand(24, 9), shape)]);
    }

    [Test]
    public void BadShapesAreNamed()
    {
        using var s = Scope.Begin();
        var q = Tensor.Zeros(D, 1, 2, 3, 4);
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.CausalAttention(q, Tensor.Zeros(D, 1, 2, 4, 4), q))!;
        Assert.That(e.Message, Does.Contain("k has shape [1, 2, 4, 4]").And.Contain("[1, 2, 3, 4]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.CausalAttention(Tensor.Zeros(D, 2, 3, 4), q, q))!;
        Assert.That(e.Message, Does.Contain("q has shape [2, 3, 4]").And.Contain("rank-4"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Attention(q, q, Tensor.Zeros(D, 1, 2, 3, 5), causal: false))!;
        Assert.That(e.Message, Does.Contain("v has shape [1, 2, 3, 5]").And.Contain("[1, 2, 3, 4]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Attention(q, Tensor.Zeros(D, 2, 1, 3, 4), q, causal: false))!;
        Assert.That(e.Message, Does.Contain("k has shape [2, 1, 3, 4]"));
    }
}
