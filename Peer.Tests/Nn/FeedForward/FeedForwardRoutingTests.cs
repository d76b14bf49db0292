// The MoE routing ops and the memory read (Ops/MoeRouting.cs, Ops/KeyValueMemory.cs): selections against host
// selections (ties included), capacity behaviour (drops in token order, no duplicates), the differentiable
// dispatch/combine/bias/read against host loops and finite differences, and bad inputs.
namespace Peer.Tests.Nn.FeedForward;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class FeedForwardRoutingTests(string backend)
{
    Device Dev => Devices.Get(backend);

    static float[] Probs(int t, int e, int seed, int levels = 0)
    {
        var rng = new Random(seed);
        var p = new float[t * e];
        for (int i = 0; i < t; i++)
        {
            // levels > 0 draws from a few values only, so many ties
            var row = Enumerable.Range(0, e).Select(_ => levels > 0 ? rng.Next(levels) + 1.0 : rng.NextDouble()).ToArray();
            double s = row.Sum();
            for (int j = 0; j < e; j++) p[i * e + j] = (float)(row[j] / s);
        }
        return p;
    }

    [TestCase(1, 1, 1, 0)]
    [TestCase(16, 4, 4, 0)]
    [TestCase(37, 5, 9, 0)]
    [TestCase(37, 5, 37, 0)]
    [TestCase(40, 3, 7, 3)]
    [TestCase(300, 8, 45, 4)]
    public void ExpertChoiceTakesEachExpertsTopCapacityTokens(int t, int e, int c, int levels)
    {
        using var s = Scope.Begin();
        var p = Probs(t, e, t * 7 + e, levels);
        var route = Peer.Ops.ExpertChoiceRoute(Tensor.FromArray(Dev, p, t, e), c);
        var slots = route.Slots.ToIntArray();
        var pos = route.Positions.ToIntArray();
        for (int ex = 0; ex < e; ex++)
        {
            var want = Enumerable.Range(0, t).OrderByDescending(tt => p[tt * e + ex]).ThenBy(tt => tt).Take(c).OrderBy(tt => tt).ToArray();
            Assert.That(slots.Skip(ex * c).Take(c), Is.EqualTo(want), $"expert {ex}");
            for (int tt = 0; tt < t; tt++)
                Assert.That(pos[tt * e + ex], Is.EqualTo(Array.IndexOf(want, tt)), $"position of token {tt} at expert {ex}");
        }
    }

    [Test]
    public void TopKDropsTokensBeyondCapacityInTokenOrderNeverDuplicating()
    {
        // Every token prefers expert 0, then expert 1: with capacity 3, tokens 0..2 fit in both, the rest are dropped.
        const int T = 7, E = 4, K = 2, C = 3;
        var p = new float[T * E];
        for (int t = 0; t < T; t++) { p[t * E] = 0.5f; p[t * E + 1] = 0.3f; p[t * E + 2] = 0.15f; p[t * E + 3] = 0.05f; }
        using var s = Scope.Begin();
        var route = Peer.Ops.TopKRoute(Tensor.FromArray(Dev, p, T, E), K, C);
        var slots = route.Slots.ToIntArray();
        Assert.That(slots, Is.EqualTo(new[] { 0, 1, 2, 0, 1, 2, -1, -1, -1, -1, -1, -1 }));
        var pos = route.Positions.ToIntArray();
        for (int t = 0; t < T; t++)
        {
            Assert.That(pos[t * E], Is.EqualTo(t < C ? t : -1));
            Assert.That(pos[t * E + 1], Is.EqualTo(t < C ? t : -1));
            Assert.That(pos[t * E + 2], Is.EqualTo(-1));
        }
        Assert.That(route.ChoiceFraction!.ToArray(), Is.EqualTo(new[] { 0.5f, 0.5f, 0f, 0f }));
        Assert.That(route.Chosen!.ToArray(), Is.EqualTo(Enumerable.Range(0, T).SelectMany(_ => new[] { 1f, 1f, 0f, 0f })));
    }

    [TestCase(50, 6, 2, 9, 0)]
    [TestCase(50, 6, 3, 4, 2)]
    [TestCase(20, 16, 16, 20, 0)]
    [TestCase(33, 5, 1, 1, 3)]
    public void TopKRouteMatchesHostSelection(int t, int e, int k, int c, int levels)
    {
        using var s = Scope.Begin();
        var p = Probs(t, e, t + 3 * e, levels);
        var route = Peer.Ops.TopKRoute(Tensor.FromArray(Dev, p, t, e), k, c);
        var slots = route.Slots.ToIntArray();
        var pos = route.Positions.ToIntArray();
        var frac = route.ChoiceFraction!.ToArray();
        var choices = Enumerable.Range(0, t).Select(tt => Enumerable.Range(0, e).OrderByDescending(j => p[tt * e + j]).ThenBy(j => j).Take(k).ToArray()).ToArray();
        for (int ex = 0; ex < e; ex++)
        {
            var wanting = Enumerable.Range(0, t).Where(tt => choices[tt].Contains(ex)).ToArray();
            var want = wanting.Take(c).Concat(Enumerable.Repeat(-1, Math.Max(0, c - wanting.Length))).ToArray();
            Assert.That(slots.Skip(ex * c).Take(c), Is.EqualTo(want), $"expert {ex}");
            var taken = slots.Skip(ex * c).Take(c).Where(v => v >= 0).ToArray();
            Assert.That(taken.Distinct().Count(), Is.EqualTo(taken.Length), "no token twice in one expert");
            Assert.That(frac[ex], Is.EqualTo(wanting.Length / (double)(t * k)).Within(1e-7));
            for (int tt = 0; tt < t; tt++)
                Assert.That(pos[tt * e + ex], Is.EqualTo(Array.IndexOf(want, tt)));
        }
    }

    [Test]
    public void DispatchCombineAndBiasMatchHostLoops()
    {
        const int T = 6, E = 3, C = 2, Dm = 4;
        using var s = Scope.Begin();
        var p = Probs(T, E, 5);
        var route = Peer.Ops.ExpertChoiceRoute(Tensor.FromArray(Dev, p, T, E), C);
        var slots = route.Slots.ToIntArray();
        var x = GradCheck.Rand(T * Dm, 1);
        var xe = Peer.Ops.MoeDispatch(Tensor.FromArray(Dev, x, T, Dm), route).ToArray();
        for (int r = 0; r < E * C; r++)
            for (int j = 0; j < Dm; j++) Assert.That(xe[r * Dm + j], Is.EqualTo(x[slots[r] * Dm + j]));
        var outs = GradCheck.Rand(E * C * Dm, 2);
        var y = Peer.Ops.MoeCombine(Tensor.FromArray(Dev, outs, E, C, Dm), Tensor.FromArray(Dev, p, T, E), route).ToArray();
        var want = new double[T * Dm];
        for (int r = 0; r < E * C; r++)
            for (int j = 0; j < Dm; j++) want[slots[r] * Dm + j] += (double)p[slots[r] * E + r / C] * outs[r * Dm + j];
        Assert.That(y, Is.EqualTo(want).Within(1e-6));
        var b = GradCheck.Rand(E * Dm, 3);
        var yb = Peer.Ops.AddExpertBias(Tensor.FromArray(Dev, outs, E, C, Dm), Tensor.FromArray(Dev, b, E, Dm)).ToArray();
        for (int r = 0; r < E * C; r++)
            for (int j = 0; j < Dm; j++) Assert.That(yb[r * Dm + j], Is.EqualTo(outs[r * Dm + j] + b[(r / C) * Dm + j]).Within(1e-6));
    }

    [Test]
    public void DispatchCombineGradientsMatchFiniteDifferencesWithDrops()
    {
        const int T = 7, E = 3, K = 2, C = 3, Dm = 3;
        var p = Probs(T, E, 8);
        // f(x, gates, bias) = combine(bias(dispatch(x) * 1), gates) with a top-k route that drops (K*T = 14 > E*C = 9).
        GradCheck.Check(Dev, xs =>
        {
            var route = Peer.Ops.TopKRoute(xs[3], K, C);
            var xe = Peer.Ops.AddExpertBias(Peer.Ops.MoeDispatch(xs[0], route), xs[2]);
            return Peer.Ops.MoeCombine(Peer.Ops.Square(xe), xs[1], route);
        }, [(GradCheck.Rand(T * Dm, 1), [T, Dm]), (GradCheck.Rand(T * E, 2), [T, E]), (GradCheck.Rand(E * Dm, 3), [E, Dm]), (p, [T, E])],
        constant: new HashSet<int> { 3 });
    }

    [Test]
    public void MemoryReadMatchesHostAndFiniteDifferencesWithRowSparseValues()
    {
        const int T = 4, H = 2, K = 3, N = 10, Dm = 3;
        var rng = new Random(3);
        var idx = Enumerable.Range(0, T * H * K).Select(_ => rng.Next(N)).ToArray();
        idx[1] = idx[0]; // a row read twice by one token
        var g = GradCheck.Rand(T * H * K, 4);
        var v = GradCheck.Rand(N * Dm, 5);
        using (Scope.Begin())
        {
            var tv = Tensor.FromArray(Dev, v, N, Dm);
            tv.RequiresGrad = true;
            var y = Peer.Ops.MemoryRead(Tensor.FromArray(Dev, idx, T, H, K), Tensor.FromArray(Dev, g, T, H, K), tv);
            var want = new double[T * Dm];
            for (int p = 0; p < idx.Length; p++)
                for (int j = 0; j < Dm; j++) want[(p / (H * K)) * Dm + j] += (double)g[p] * v[idx[p] * Dm + j];
            Assert.That(y.ToArray(), Is.EqualTo(want).Within(1e-6));
            var r = GradCheck.Rand(T * Dm, 6);
            Dev.Tape.Backward(y, Tensor.FromArray(Dev, r, T, Dm));
            Assert.That(tv.Grad, Is.Null);
            var rows = tv.SparseGrad!.Real().Rows;
            Assert.That(rows, Is.EqualTo(idx.Distinct().OrderBy(i => i)), "exactly the retrieved rows, sorted");
            var dense = PeerReference.Densify(tv.SparseGrad!, N, Dm);
            var wantDv = new double[N * Dm];
            for (int p = 0; p < idx.Length; p++)
                for (int j = 0; j < Dm; j++) wantDv[idx[p] * Dm + j] += (double)g[p] * r[(p / (H * K)) * Dm + j];
            Assert.That(dense, Is.EqualTo(wantDv).Within(1e-6));
        }
        // The weights' dense gradient by finite differences (the values' gradient is row-sparse, checked above; GradCheck reads dense ones).
        GradCheck.Check(Dev, xs => Peer.Ops.MemoryRead(Tensor.FromArray(Dev, idx, T, H, K), Peer.Ops.Square(xs[0]), xs[1]),
            [(g, [T, H, K]), (v, [N, Dm])], constant: new HashSet<int> { 1 });
    }

    [Test]
    public void BadInputsAreRefusedNamingValueAndRule()
    {
        using var s = Scope.Begin();
        var p = Tensor.FromArray(Dev, Probs(4, 3, 1), 4, 3);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ExpertChoiceRoute(p, 5))!.Message, Does.Contain("capacity = 5").And.Contain("[1, T = 4]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.TopKRoute(p, 4, 2))!.Message, Does.Contain("k = 4").And.Contain("E = 3"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.TopKRoute(p, 1, 0))!.Message, Does.Contain("capacity = 0"));
        var route = Peer.Ops.ExpertChoiceRoute(p, 2);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.MoeDispatch(Tensor.Zeros(Dev, 5, 2), route))!.Message, Does.Contain("[5, 2]").And.Contain("T = 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.MoeCombine(Tensor.Zeros(Dev, 3, 2, 2), Tensor.Zeros(Dev, 4, 2), route))!.Message,
            Does.Contain("gates").And.Contain("[4, 3]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.AddExpertBias(Tensor.Zeros(Dev, 3, 2, 2), Tensor.Zeros(Dev, 2, 2)))!.Message,
            Does.Contain("bias").And.Contain("[3, 2]"));
        var bad = Tensor.FromArray(Dev, new[] { 0, 7 }, 1, 1, 2);
        if (Dev.ChecksIndices)
            Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.MemoryRead(bad, Tensor.Zeros(Dev, 1, 1, 2), Tensor.Zeros(Dev, 7, 2)))!.Message,
                Does.Contain("1 ids outside [0, 7)"));
        else // unchecked (GPUs, OpenCL): the id is never used to read, and the token's output is NaN
            Assert.That(Peer.Ops.MemoryRead(bad, Tensor.Zeros(Dev, 1, 1, 2), Tensor.Zeros(Dev, 7, 2)).ToArray().All(float.IsNaN));
    }
}
