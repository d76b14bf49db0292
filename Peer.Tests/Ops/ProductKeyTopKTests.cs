// Product-key retrieval against brute force over all N = n*n full keys (random and deliberately tied
// inputs), its backward against host sums in double precision, and its bad-input errors.
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ProductKeyTopKTests(string backend)
{
    Device D => Devices.Get(backend);

    /// <summary>Brute force in double: every expert i = r*n + c scores a . sub1[r] + b . sub2[c]; sort by (score desc, index asc).</summary>
    static (int[] Idx, double[] Score) BruteForce(float[] q, float[] sub1, float[] sub2, int t, int h, int dq, int n, int k)
    {
        int half = dq / 2;
        var idx = new int[t * h * k];
        var sc = new double[t * h * k];
        for (int tt = 0; tt < t; tt++)
            for (int j = 0; j < h; j++)
            {
                int qOff = tt * h * dq + j * dq;
                var all = new (double S, int I)[n * n];
                for (int r = 0; r < n; r++)
                    for (int c = 0; c < n; c++)
                    {
                        double s = 0;
                        for (int p = 0; p < half; p++) s += (double)q[qOff + p] * sub1[r * half + p] + (double)q[qOff + half + p] * sub2[c * half + p];
                        all[r * n + c] = (s, r * n + c);
                    }
                var top = all.OrderByDescending(a => a.S).ThenBy(a => a.I).Take(k).ToArray();
                for (int m = 0; m < k; m++)
                {
                    idx[(tt * h + j) * k + m] = top[m].I;
                    sc[(tt * h + j) * k + m] = top[m].S;
                }
            }
        return (idx, sc);
    }

    [TestCase(5, 1, 4, 4, 2)]
    [TestCase(7, 3, 8, 8, 3)]
    [TestCase(4, 2, 6, 16, 16)] // k = n
    [TestCase(3, 8, 4, 32, 16)]
    [TestCase(2, 2, 10, 11, 7)]
    public void MatchesBruteForceOnRandomInputs(int t, int h, int dq, int n, int k)
    {
        using var s = Scope.Begin();
        var q = GradCheck.Rand(t * h * dq, 11);
        var s1 = GradCheck.Rand(n * dq / 2, 12);
        var s2 = GradCheck.Rand(n * dq / 2, 13);
        var (idx, sc) = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, dq / 2), Tensor.FromArray(D, s2, n, dq / 2), h, k);
        Assert.That(idx.Shape, Is.EqualTo(new[] { t, h, k }));
        var (wantIdx, wantSc) = BruteForce(q, s1, s2, t, h, dq, n, k);
        Assert.That(idx.ToIntArray(), Is.EqualTo(wantIdx));
        var got = sc.ToArray();
        for (int i = 0; i < got.Length; i++) Assert.That(got[i], Is.EqualTo(wantSc[i]).Within(1e-5));
    }

    [TestCase(4, 3)]
    [TestCase(6, 6)]
    [TestCase(9, 5)]
    public void TiesBreakTowardTheSmallerExpertIndexExactly(int n, int k)
    {
        // Small integers: every score is exact in float and double, and most experts tie with many others.
        int t = 6, h = 2, dq = 4, half = 2;
        var rng = new Random(5);
        float[] Ints(int len, int lo, int hi) => Enumerable.Range(0, len).Select(_ => (float)rng.Next(lo, hi)).ToArray();
        var q = Ints(t * h * dq, -1, 2);
        var s1 = Ints(n * half, 0, 2);
        var s2 = Ints(n * half, 0, 2);
        s1[0] = s1[2]; s1[1] = s1[3]; // duplicate sub-key rows: identical candidates at different indices
        using var s = Scope.Begin();
        var (idx, sc) = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, half), Tensor.FromArray(D, s2, n, half), h, k);
        var (wantIdx, wantSc) = BruteForce(q, s1, s2, t, h, dq, n, k);
        Assert.That(idx.ToIntArray(), Is.EqualTo(wantIdx));
        Assert.That(sc.ToArray().Select(v => (double)v).ToArray(), Is.EqualTo(wantSc));
    }

    [Test]
    public void AllZeroQueriesKeepTheFirstKExperts()
    {
        using var s = Scope.Begin();
        int n = 5, k = 4;
        var (idx, _) = Peer.Ops.ProductKeyTopK(Tensor.Zeros(D, 2, 4), Tensor.FromArray(D, GradCheck.Rand(n * 2, 1), n, 2), Tensor.FromArray(D, GradCheck.Rand(n * 2, 2), n, 2), 1, k);
        Assert.That(idx.ToIntArray(), Is.EqualTo(new[] { 0, 1, 2, 3, 0, 1, 2, 3 }));
    }

    [Test]
    public void BackwardMatchesHostSums()
    {
        int t = 4, h = 2, dq = 6, half = 3, n = 5, k = 3;
        var q = GradCheck.Rand(t * h * dq, 21);
        var s1 = GradCheck.Rand(n * half, 22);
        var s2 = GradCheck.Rand(n * half, 23);
        var dS = GradCheck.Rand(t * h * k, 24);
        using var s = Scope.Begin();
        var tq = Tensor.FromArray(D, q, t, h * dq); tq.RequiresGrad = true;
        var t1 = Tensor.FromArray(D, s1, n, half); t1.RequiresGrad = true;
        var t2 = Tensor.FromArray(D, s2, n, half); t2.RequiresGrad = true;
        var (idx, sc) = Peer.Ops.ProductKeyTopK(tq, t1, t2, h, k);
        var ids = idx.ToIntArray();
        D.Tape.Backward(sc, Tensor.FromArray(D, dS, t, h, k));

        var wantQ = new double[q.Length];
        var want1 = new double[s1.Length];
        var want2 = new double[s2.Length];
        for (int p = 0; p < ids.Length; p++)
        {
            int item = p / k, r = ids[p] / n, c = ids[p] % n;
            for (int e = 0; e < half; e++)
            {
                wantQ[item * dq + e] += dS[p] * s1[r * half + e];
                wantQ[item * dq + half + e] += dS[p] * s2[c * half + e];
                want1[r * half + e] += dS[p] * q[item * dq + e];
                want2[c * half + e] += dS[p] * q[item * dq + half + e];
            }
        }
        Assert.That(tq.Grad!.ToArray(), Is.EqualTo(wantQ).Within(1e-5));
        Assert.That(t1.Grad, Is.Null, "sub-key gradients are row-sparse");
        Assert.That(PeerReference.Densify(t1.SparseGrad!, n, half), Is.EqualTo(want1).Within(1e-5));
        Assert.That(PeerReference.Densify(t2.SparseGrad!, n, half), Is.EqualTo(want2).Within(1e-5));
        var rows1 = t1.SparseGrad!.Real().Rows;
        Assert.That(rows1, Is.EqualTo(ids.Select(i => i / n).Distinct().OrderBy(r => r).ToArray()), "exactly the retrieved rows, sorted");
    }

    [Test]
    public void BadInputsNameArgumentAndRule()
    {
        using var s = Scope.Begin();
        var q = Tensor.Zeros(D, 2, 8);
        var sub = Tensor.Zeros(D, 4, 2);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(q, sub, sub, 2, 5))!.Message,
            Does.Contain("k = 5").And.Contain("1 <= k <= min(n = 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(q, sub, sub, 2, 0))!.Message, Does.Contain("k = 0"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(Tensor.Zeros(D, 2, 6), Tensor.Zeros(D, 4, 1), Tensor.Zeros(D, 4, 1), 2, 2))!.Message,
            Does.Contain("even").And.Contain("dq = 3"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(q, sub, Tensor.Zeros(D, 3, 2), 2, 2))!.Message,
            Does.Contain("sub2").And.Contain("[4, 2]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(q, sub, sub, 3, 2))!.Message, Does.Contain("h = 3"));
    }
}
