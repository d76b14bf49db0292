// Product-key retrieval with disabled experts against brute force over the enabled experts only (random masks, whole
// rows and columns off, masks that force the sub-key lists up to n, tied integer scores), on every backend; the list
// lengths the exactness argument asks for; a PEER layer with experts switched off against the host reference of a layer
// whose disabled experts cannot win; and the bad masks' errors.
using Peer.Nn;

namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ProductKeyMaskTests(string backend)
{
    Device D => Devices.Get(backend);

    /// <summary>Brute force in double over the enabled experts: sort by (score desc, index asc), keep k.</summary>
    static (int[] Idx, double[] Score) BruteForce(float[] q, float[] sub1, float[] sub2, int t, int h, int dq, int n, int k, ISet<int> off)
    {
        int half = dq / 2;
        var idx = new int[t * h * k];
        var sc = new double[t * h * k];
        for (int tt = 0; tt < t; tt++)
            for (int j = 0; j < h; j++)
            {
                int qOff = tt * h * dq + j * dq;
                var all = new List<(double S, int I)>();
                for (int r = 0; r < n; r++)
                    for (int c = 0; c < n; c++)
                    {
                        if (off.Contains(r * n + c)) continue;
                        double a = 0, b = 0;
                        for (int p = 0; p < half; p++) { a += (double)q[qOff + p] * sub1[r * half + p]; b += (double)q[qOff + half + p] * sub2[c * half + p]; }
                        all.Add((a + b, r * n + c));
                    }
                var top = all.OrderByDescending(x => x.S).ThenBy(x => x.I).Take(k).ToArray();
                for (int m = 0; m < k; m++)
                {
                    idx[(tt * h + j) * k + m] = top[m].I;
                    sc[(tt * h + j) * k + m] = top[m].S;
                }
            }
        return (idx, sc);
    }

    void CheckAgainstBruteForce(int t, int h, int dq, int n, int k, int[] off, int seed)
    {
        using var s = Scope.Begin();
        var q = GradCheck.Rand(t * h * dq, seed);
        var s1 = GradCheck.Rand(n * dq / 2, seed + 1);
        var s2 = GradCheck.Rand(n * dq / 2, seed + 2);
        using var mask = new ExpertMask(D, n, off);
        var (idx, sc) = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, dq / 2), Tensor.FromArray(D, s2, n, dq / 2), h, k, mask);
        var (wantIdx, wantSc) = BruteForce(q, s1, s2, t, h, dq, n, k, off.ToHashSet());
        Assert.That(idx.ToIntArray(), Is.EqualTo(wantIdx));
        Assert.That(sc.ToArray(), Is.EqualTo(wantSc).Within(1e-5));
    }

    [TestCase(6, 2, 8, 8, 3, 5, 1)]
    [TestCase(5, 3, 6, 10, 4, 30, 2)]
    [TestCase(4, 2, 4, 6, 6, 12, 3)]   // k = n: the lists are already whole
    [TestCase(8, 1, 8, 16, 8, 60, 4)]
    public void MatchesBruteForceOverEnabledExperts(int t, int h, int dq, int n, int k, int disabled, int seed)
    {
        var rng = new Random(seed);
        var off = Enumerable.Range(0, n * n).OrderBy(_ => rng.Next()).Take(disabled).ToArray();
        CheckAgainstBruteForce(t, h, dq, n, k, off, 30 + seed);
    }

    [Test]
    public void TheUnmaskedWinnersSwitchedOffGiveTheNextBest()
    {
        // Disable exactly the experts an unmasked retrieval picks, so every head must find k others.
        int t = 5, h = 2, dq = 6, n = 9, k = 4;
        var q = GradCheck.Rand(t * h * dq, 41);
        var s1 = GradCheck.Rand(n * dq / 2, 42);
        var s2 = GradCheck.Rand(n * dq / 2, 43);
        int[] winners;
        using (Scope.Begin())
            winners = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, dq / 2), Tensor.FromArray(D, s2, n, dq / 2), h, k)
                .Indices.ToIntArray().Distinct().ToArray();
        using var s = Scope.Begin();
        using var mask = new ExpertMask(D, n, winners);
        var (idx, _) = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, dq / 2), Tensor.FromArray(D, s2, n, dq / 2), h, k, mask);
        Assert.That(idx.ToIntArray().Intersect(winners), Is.Empty);
        Assert.That(idx.ToIntArray(), Is.EqualTo(BruteForce(q, s1, s2, t, h, dq, n, k, winners.ToHashSet()).Idx));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void AWholeRowOrColumnOff(bool row)
    {
        int n = 7, line = 3;
        var off = Enumerable.Range(0, n).Select(i => row ? line * n + i : i * n + line).ToArray();
        using var mask = new ExpertMask(D, n, off);
        Assert.That((mask.MaxPerRow, mask.MaxPerColumn), Is.EqualTo(row ? (n, 1) : (1, n)));
        Assert.That(mask.ListLengths(3), Is.EqualTo(row ? (4, 7) : (7, 4)), "k + the most in a column for the first half, in a row for the second, capped at n");
        CheckAgainstBruteForce(6, 2, 4, n, 3, off, 50);
    }

    [TestCase(4, 3)]
    [TestCase(6, 5)]
    public void TiesBreakTowardTheSmallerEnabledIndex(int n, int k)
    {
        // Small integers: exact scores and many ties; duplicate sub-key rows make identical candidates at different indices.
        int t = 6, h = 2, dq = 4, half = 2;
        var rng = new Random(9);
        float[] Ints(int len, int lo, int hi) => Enumerable.Range(0, len).Select(_ => (float)rng.Next(lo, hi)).ToArray();
        var q = Ints(t * h * dq, -1, 2);
        var s1 = Ints(n * half, 0, 2);
        var s2 = Ints(n * half, 0, 2);
        s1[0] = s1[2]; s1[1] = s1[3];
        int[] off = [0, n + 1, 2 * n + 2, 3];
        using var s = Scope.Begin();
        using var mask = new ExpertMask(D, n, off);
        var (idx, sc) = Peer.Ops.ProductKeyTopK(Tensor.FromArray(D, q, t, h * dq), Tensor.FromArray(D, s1, n, half), Tensor.FromArray(D, s2, n, half), h, k, mask);
        var (wantIdx, wantSc) = BruteForce(q, s1, s2, t, h, dq, n, k, off.ToHashSet());
        Assert.That(idx.ToIntArray(), Is.EqualTo(wantIdx));
        Assert.That(sc.ToArray().Select(v => (double)v).ToArray(), Is.EqualTo(wantSc));
    }

    [Test]
    public void APeerLayerWithExpertsOffEqualsTheLayerWhoseOffExpertsCannotWin()
    {
        // The layer with experts off must compute the PEER formula (softmax router, GELU experts) over the brute-force top-k
        // of the enabled experts, in double precision from its own query and tables.
        int t = 6, dim = 8, n = 6, k = 3, heads = 2;
        using var layer = new PeerLayer(D, dim, new PeerOptions { Experts = n * n, Heads = heads, TopK = k, QueryDim = 4, QueryNorm = PeerQueryNorm.None, Seed = 3 });
        var off = new[] { 1, 7, 8, 20, 35 };
        layer.DisableExperts(off);
        Assert.That(layer.DisabledExperts, Is.EqualTo(off));
        using var s = Scope.Begin();
        var xs = GradCheck.Rand(t * dim, 61);
        var x = Tensor.FromArray(D, xs, t, dim);
        using var ng = D.Tape.NoGrad();
        var y = layer.Forward(x).ToArray();
        var ids = layer.LastIndices!.ToIntArray();
        Assert.That(ids.Intersect(off), Is.Empty);
        var q = layer.Query(x).ToArray();
        var sd = layer.StateDict().ToDictionary(p => p.Name, p => p.Tensor.ToArray());
        var (want, scores) = BruteForce(q, sd["keys.sub1"], sd["keys.sub2"], t, heads, 4, n, k, off.ToHashSet());
        Assert.That(ids, Is.EqualTo(want));
        var g = new double[scores.Length];
        for (int item = 0; item < t * heads; item++)
        {
            var head = scores.Skip(item * k).Take(k).ToArray();
            double max = head.Max(), z = head.Sum(v => Math.Exp(v - max));
            for (int m = 0; m < k; m++) g[item * k + m] = Math.Exp(head[m] - max) / z;
        }
        var wantY = PeerMath.Experts(xs.Select(v => (double)v).ToArray(), ids, g, sd["experts.down"].Select(v => (double)v).ToArray(),
            sd["experts.up"].Select(v => (double)v).ToArray(), t, dim, heads * k, PeerActivation.Gelu);
        Assert.That(y, Is.EqualTo(wantY).Within(1e-4));
        layer.DisableExperts([]);
        Assert.That(layer.DisabledExperts, Is.Empty, "an empty set switches every expert back on");
    }

    [Test]
    public void ScoresUnderAMaskBackPropagateToTheRetrievedRowsOnly()
    {
        // The mask changes which experts are kept, not how their scores depend on q and the sub-keys: host sums in double
        // over the retrieved (enabled) experts.
        int t = 4, h = 2, dq = 6, half = 3, n = 5, k = 3;
        var q = GradCheck.Rand(t * h * dq, 71);
        var s1 = GradCheck.Rand(n * half, 72);
        var s2 = GradCheck.Rand(n * half, 73);
        var dS = GradCheck.Rand(t * h * k, 74);
        using var s = Scope.Begin();
        using var mask = new ExpertMask(D, n, [0, 6, 12, 18, 24, 3]);
        var tq = Tensor.FromArray(D, q, t, h * dq); tq.RequiresGrad = true;
        var t1 = Tensor.FromArray(D, s1, n, half); t1.RequiresGrad = true;
        var t2 = Tensor.FromArray(D, s2, n, half); t2.RequiresGrad = true;
        var (idx, sc) = Peer.Ops.ProductKeyTopK(tq, t1, t2, h, k, mask);
        var ids = idx.ToIntArray();
        Assert.That(ids.Intersect(mask.Disabled), Is.Empty);
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
        Assert.That(PeerReference.Densify(t1.SparseGrad!, n, half), Is.EqualTo(want1).Within(1e-5));
        Assert.That(PeerReference.Densify(t2.SparseGrad!, n, half), Is.EqualTo(want2).Within(1e-5));
    }

    [Test]
    public void BadMasksNameTheRule()
    {
        using var s = Scope.Begin();
        Assert.That(Assert.Throws<ArgumentException>(() => new ExpertMask(D, 4, [16]))!.Message, Does.Contain("16").And.Contain("[0, 16)"));
        using var small = new ExpertMask(D, 3, Enumerable.Range(0, 7));
        Assert.That(Assert.Throws<ArgumentException>(() => small.CheckTopK(3))!.Message, Does.Contain("7 of 9").And.Contain("at least k = 3"));
        using var crowded = new ExpertMask(D, 80, Enumerable.Range(0, 60)); // 60 in row 0
        Assert.That(Assert.Throws<ArgumentException>(() => crowded.CheckTopK(8))!.Message, Does.Contain("60 in one row").And.Contain("<= 64"));
        var q = Tensor.Zeros(D, 2, 4);
        var sub = Tensor.Zeros(D, 4, 2);
        using var other = new ExpertMask(D, 5, [1]);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ProductKeyTopK(q, sub, sub, 1, 2, other))!.Message, Does.Contain("5²").And.Contain("4²"));
        using var layer = new PeerLayer(D, 4, new PeerOptions { Experts = 16, Heads = 1, TopK = 4, QueryDim = 2 });
        Assert.Throws<ArgumentException>(() => layer.DisableExperts(Enumerable.Range(0, 13)));
        Assert.That(layer.DisabledExperts, Is.Empty, "a refused set leaves the layer as it was");
    }
}
