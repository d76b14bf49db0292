// The padded layout of the row-sparse gradients the sort-and-segment builds (RowSparseGrad: R real rows, then padding rows
// NoRow with zero values, sized by B = min(pairs, table rows) known on the host), against brute-force host computations:
// the layout and the count of real rows, the merge of two padded gradients, the dense form, and the optimizers' steps, which
// must equal those on the same gradient without its padding.
using Peer.Optim;

namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class RowSparsePaddingTests(string backend)
{
    Device D => Devices.Get(backend);

    const int Cols = 3;

    /// <summary>Host reference: the distinct kept ids ascending, and per id the double sum of coef[o] * src[o, :].</summary>
    static SortedDictionary<int, double[]> HostRows(int[] ids, int limit, float[] coef, float[] src)
    {
        var sums = new SortedDictionary<int, double[]>();
        for (int o = 0; o < ids.Length; o++)
        {
            if (ids[o] < 0 || ids[o] >= limit) continue;
            if (!sums.TryGetValue(ids[o], out var row)) sums[ids[o]] = row = new double[Cols];
            for (int c = 0; c < Cols; c++) row[c] += (double)coef[o] * src[o * Cols + c];
        }
        return sums;
    }

    static int[] Ids(int p, int limit, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, p).Select(_ => rng.Next(-2, limit + 2)).ToArray(); // some dropped: negative, >= limit
    }

    RowSparseGrad Build(int[] ids, int limit, float[] coef, float[] src)
    {
        int p = ids.Length;
        return RowSparseGradients.Build(Tensor.FromArray(D, ids, p), limit, Cols, (Tensor.FromArray(D, coef, p), Tensor.FromArray(D, src, p, Cols), 1, Cols, 0))[0];
    }

    static void AssertRows((int[] Rows, float[] Values) got, SortedDictionary<int, double[]> want, string what)
    {
        Assert.That(got.Rows, Is.EqualTo(want.Keys.ToArray()), $"{what}: the real rows are the distinct kept ids, ascending");
        var flat = want.Values.SelectMany(r => r).ToArray();
        for (int i = 0; i < flat.Length; i++) Assert.That(got.Values[i], Is.EqualTo(flat[i]).Within(1e-5), $"{what}: value {i}");
    }

    // Bounded by the pairs (many repeats: R well under P), by the table (P > limit), no pairs, an empty table.
    [TestCase(40, 1000, true)]
    [TestCase(200, 30, false)]
    [TestCase(1000, 7, false)]
    [TestCase(0, 5, false)]
    [TestCase(9, 0, false)]
    public void BuiltGradientsArePaddedToABoundKnownOnTheHost(int p, int limit, bool hasPadding)
    {
        var ids = Ids(p, limit, p + limit);
        if (p >= 40 && limit >= 40) for (int i = 0; i < p; i += 2) ids[i] = ids[i + 1]; // repeats: R < P
        var coef = GradCheck.Rand(p, 1);
        var src = GradCheck.Rand(p * Cols, 2);
        using var scope = Scope.Begin();
        using var g = Build(ids, limit, coef, src);
        var want = HostRows(ids, limit, coef, src);
        int bound = Math.Max(0, Math.Min(p, limit));
        Assert.That(g.Rows.Length, Is.EqualTo(bound), "rows sized min(P, limit), whatever the distinct count");
        Assert.That(g.Values.Shape, Is.EqualTo(new[] { bound, Cols }));
        Assert.That(g.CountRows(), Is.EqualTo(want.Count), "the count of real rows equals the brute-force distinct kept count");
        if (hasPadding) Assert.That(bound, Is.GreaterThan(want.Count), "the case has padding");
        AssertRows(g.Real(), want, "built");
    }

    // Two padded gradients merged (the second into the first, as Accumulate does): the first's padding is dropped like any id
    // outside the table, the sums are those of all pairs, and the result is padded to min(B1 + B2, limit).
    [TestCase(30, 25, 100)]
    [TestCase(60, 50, 20)]
    [TestCase(0, 12, 9)]
    public void TwoPaddedGradientsMerge(int p1, int p2, int limit)
    {
        var ids1 = Ids(p1, limit, 5);
        var ids2 = Ids(p2, limit, 6);
        var coef = GradCheck.Rand(p1 + p2, 7);
        var src = GradCheck.Rand((p1 + p2) * Cols, 8);
        using var scope = Scope.Begin();
        using var a = Build(ids1, limit, coef[..p1], src[..(p1 * Cols)]);
        using var b = Build(ids2, limit, coef[p1..], src[(p1 * Cols)..]);
        using var merged = RowSparseGradients.Coalesce(a, b.Rows, b.Values, limit);
        var want = HostRows(ids1.Concat(ids2).ToArray(), limit, coef, src);
        Assert.That(merged.Rows.Length, Is.EqualTo(Math.Min(a.Rows.Length + b.Rows.Length, limit)));
        Assert.That(merged.CountRows(), Is.EqualTo(want.Count));
        AssertRows(merged.Real(), want, "merged");
    }

    [Test]
    public void ThePaddedDenseFormIsTheHostOne()
    {
        const int p = 50, limit = 40;
        var ids = Ids(p, limit, 9);
        for (int i = 0; i < p; i += 2) ids[i] = ids[i + 1];
        var coef = GradCheck.Rand(p, 10);
        var src = GradCheck.Rand(p * Cols, 11);
        using var scope = Scope.Begin();
        using var g = Build(ids, limit, coef, src);
        Assert.That(g.Rows.Length, Is.GreaterThan(g.CountRows()), "the case has padding");
        var dense = RowSparseGradients.ToDense(g, limit).ToArray();
        var want = HostRows(ids, limit, coef, src);
        for (int r = 0; r < limit; r++)
            for (int c = 0; c < Cols; c++)
                Assert.That(dense[r * Cols + c], Is.EqualTo(want.TryGetValue(r, out var row) ? row[c] : 0.0).Within(1e-5), $"row {r}, column {c}");
    }

    // Each optimizer's sparse step on a layer-built padded gradient and on the same rows and values without the padding
    // (the gradient as a host computation gives it): equal parameters and state, bit for bit, over two steps.
    [TestCase("sgd")]
    [TestCase("adamw")]
    [TestCase("rowwise-adagrad")]
    [TestCase("rowwise-adamw")]
    public void OptimizersStepPaddedGradientsAsTheirRealRows(string kind)
    {
        const int p = 60, limit = 50;
        var init = GradCheck.Rand(limit * Cols, 12);
        using var scope = Scope.Begin();
        var padded = Tensor.FromArray(D, init, limit, Cols);
        var plain = Tensor.FromArray(D, init, limit, Cols);
        padded.RequiresGrad = plain.RequiresGrad = true;
        Optimizer Make(Tensor t) => kind switch
        {
            "sgd" => new Sgd([("t", t)], 0.1f, 0.9f, 0.01f),
            "adamw" => new AdamW([("t", t)], 1e-2f, weightDecay: 0.1f),
            "rowwise-adagrad" => new RowWiseAdagrad([("t", t)], 0.1f),
            _ => new RowWiseAdamW([("t", t)], 1e-2f),
        };
        using var optPadded = Make(padded);
        using var optPlain = Make(plain);
        for (int step = 0; step < 2; step++)
        {
            var ids = Ids(p, limit, 20 + step);
            for (int i = 0; i < p; i += 2) ids[i] = ids[i + 1];
            var g = Build(ids, limit, GradCheck.Rand(p, 30 + step), GradCheck.Rand(p * Cols, 40 + step));
            Assert.That(g.Rows.Length, Is.GreaterThan(g.CountRows()), "the case has padding");
            var (rows, values) = g.Real();
            padded.SparseGrad = g;
            plain.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, rows, rows.Length), Tensor.FromArray(D, values, rows.Length, Cols));
            optPadded.Step();
            optPlain.Step();
            Assert.That(padded.ToArray(), Is.EqualTo(plain.ToArray()), $"parameters after step {step + 1}");
            var statePadded = optPadded.StateDict().Where(e => e.T.DType == DType.F32).Select(e => e.T.ToArray()).ToList();
            var statePlain = optPlain.StateDict().Where(e => e.T.DType == DType.F32).Select(e => e.T.ToArray()).ToList();
            Assert.That(statePadded, Is.EqualTo(statePlain), $"state after step {step + 1}");
            optPadded.ZeroGrad();
            optPlain.ZeroGrad();
        }
    }
}
