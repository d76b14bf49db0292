namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class EmbeddingTests(string backend)
{
    Device D => Devices.Get(backend);

    // Host reference: per-row sums of g over positions with that id, in double.
    static SortedDictionary<int, double[]> RowSums(int[] ids, float[] g, int dim, int v)
    {
        var sums = new SortedDictionary<int, double[]>();
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] < 0 || ids[i] >= v) continue;
            if (!sums.TryGetValue(ids[i], out var row)) sums[ids[i]] = row = new double[dim];
            for (int c = 0; c < dim; c++) row[c] += g[i * dim + c];
        }
        return sums;
    }

    [Test]
    public void ForwardGathersRows()
    {
        using var s = Scope.Begin();
        int v = 7, dim = 3;
        var table = GradCheck.Rand(v * dim, 1);
        int[] ids = [6, 0, 3, 3, 1, 6];
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, ids, 2, 3), Tensor.FromArray(D, table, v, dim));
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, dim }));
        var got = y.ToArray();
        for (int i = 0; i < ids.Length; i++)
            for (int c = 0; c < dim; c++)
                Assert.That(got[i * dim + c], Is.EqualTo(table[ids[i] * dim + c]));
    }

    [Test]
    public void SparseGradientHoldsOnlyLookedUpRowsSortedAndSummed()
    {
        using var s = Scope.Begin();
        int v = 10, dim = 4;
        int[] ids = [7, 2, 7, 9, 2, 2, 0];
        var table = Tensor.FromArray(D, GradCheck.Rand(v * dim, 2), v, dim);
        table.RequiresGrad = true;
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, ids, 7), table);
        var g = GradCheck.Rand(7 * dim, 3);
        D.Tape.Backward(y, Tensor.FromArray(D, g, 7, dim));
        Assert.That(table.Grad, Is.Null);
        var sg = table.SparseGrad!;
        var want = RowSums(ids, g, dim, v);
        var (rows, values) = sg.Real();
        Assert.That(rows, Is.EqualTo(want.Keys.ToArray()));
        Assert.That(sg.Values.Shape, Is.EqualTo(new[] { Math.Min(7, v), dim }), "padded to min(ids, table rows)");
        Assert.That(values, Is.EqualTo(want.Values.SelectMany(r => r).ToArray()).Within(1e-6));
    }

    [Test]
    public void DenseGradientIsExactlyZeroOutsideLookedUpRows()
    {
        using var s = Scope.Begin();
        int v = 9, dim = 2;
        int[] ids = [4, 1, 4, 8];
        var table = Tensor.FromArray(D, GradCheck.Rand(v * dim, 4), v, dim);
        table.RequiresGrad = true;
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, ids, 4), table, sparseGrad: false);
        var g = GradCheck.Rand(4 * dim, 5);
        D.Tape.Backward(y, Tensor.FromArray(D, g, 4, dim));
        Assert.That(table.SparseGrad, Is.Null);
        var dense = table.Grad!.ToArray();
        var want = RowSums(ids, g, dim, v);
        for (int r = 0; r < v; r++)
            for (int c = 0; c < dim; c++)
                if (want.TryGetValue(r, out var row)) Assert.That(dense[r * dim + c], Is.EqualTo(row[c]).Within(1e-6));
                else Assert.That(dense[r * dim + c], Is.EqualTo(0f), $"row {r} was not looked up");
    }

    [Test]
    public void SparseGradientsAccumulateAcrossBackwardPasses()
    {
        using var s = Scope.Begin();
        int v = 12, dim = 3;
        var table = Tensor.FromArray(D, GradCheck.Rand(v * dim, 6), v, dim);
        table.RequiresGrad = true;
        int[] ids1 = [5, 3, 5], ids2 = [11, 3];
        var g1 = GradCheck.Rand(3 * dim, 7);
        var g2 = GradCheck.Rand(2 * dim, 8);
        D.Tape.Backward(Peer.Ops.Embedding(Tensor.FromArray(D, ids1, 3), table), Tensor.FromArray(D, g1, 3, dim));
        D.Tape.Backward(Peer.Ops.Embedding(Tensor.FromArray(D, ids2, 2), table), Tensor.FromArray(D, g2, 2, dim));
        var want = RowSums([.. ids1, .. ids2], [.. g1, .. g2], dim, v);
        Assert.That(table.SparseGrad!.Real().Rows, Is.EqualTo(new[] { 3, 5, 11 }));
        Assert.That(table.SparseGrad!.Real().Values, Is.EqualTo(want.Values.SelectMany(r => r).ToArray()).Within(1e-6));
    }

    [Test]
    public void GradientMatchesFiniteDifferences()
    {
        int[] ids = [2, 0, 2, 4, 2];
        GradCheck.Check(D, x => Peer.Ops.Embedding(Tensor.FromArray(D, ids, 5), x[0], sparseGrad: false), [(GradCheck.Rand(6 * 3, 9), [6, 3])]);
    }

    [Test]
    public void ManyIdsCoalesceLikeTheHostAndIndependentlyOfWorkerCount()
    {
        int v = 50, dim = 5, n = 3001;
        var rng = new Random(11);
        var ids = Enumerable.Range(0, n).Select(_ => rng.Next(v)).ToArray();
        var g = GradCheck.Rand(n * dim, 12);
        (int[] Rows, float[] Values) Run(Device d)
        {
            using var s = Scope.Begin();
            var table = Tensor.Zeros(d, v, dim);
            table.RequiresGrad = true;
            d.Tape.Backward(Peer.Ops.Embedding(Tensor.FromArray(d, ids, n), table), Tensor.FromArray(d, g, n, dim));
            return (table.SparseGrad!.Real().Rows, table.SparseGrad!.Real().Values);
        }
        var a = Run(D);
        var want = RowSums(ids, g, dim, v);
        Assert.That(a.Rows, Is.EqualTo(want.Keys.ToArray()));
        Assert.That(a.Values, Is.EqualTo(want.Values.SelectMany(r => r).ToArray()).Within(1e-4));
        using var one = Device.Open("cpu", new DeviceOptions { CpuThreads = 1 });
        var b = Run(one);
        Assert.That(b.Rows, Is.EqualTo(a.Rows));
        Assert.That(b.Values, Is.EqualTo(a.Values), "bitwise equal: segment sums run in position order");
    }

    [Test]
    public void OutOfRangeIdsGiveNaNRowsAndNoGradient()
    {
        using var s = Scope.Begin();
        int v = 4, dim = 2;
        var table = Tensor.FromArray(D, GradCheck.Rand(v * dim, 13), v, dim);
        table.RequiresGrad = true;
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, [1, 4, -1, 1], 4), table);
        var got = y.ToArray();
        Assert.That(got.Take(2).All(float.IsFinite) && got.Skip(6).All(float.IsFinite));
        Assert.That(got.Skip(2).Take(4).All(float.IsNaN));
        D.Tape.Backward(y, Tensor.Full(D, 1f, 4, dim));
        Assert.That(table.SparseGrad!.Real().Rows, Is.EqualTo(new[] { 1 }));
        Assert.That(table.SparseGrad!.Real().Values, Is.EqualTo(new[] { 2f, 2f }));
    }

    [TestCase(new int[0])]
    [TestCase(new[] { 9, -3, 9 })]
    public void NoValidIdsGiveAnEmptySparseGradient(int[] ids)
    {
        using var s = Scope.Begin();
        var table = Tensor.FromArray(D, GradCheck.Rand(3 * 2, 14), 3, 2);
        table.RequiresGrad = true;
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, ids, ids.Length), table);
        Assert.That(y.Shape, Is.EqualTo(new[] { ids.Length, 2 }));
        D.Tape.Backward(y, Tensor.Full(D, 1f, ids.Length, 2));
        Assert.That(table.SparseGrad!.Real().Rows, Is.Empty);
        Assert.That(table.SparseGrad!.Values.Shape, Is.EqualTo(new[] { Math.Min(ids.Length, 3), 2 }), "padded to min(ids, table rows)");
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Embedding(Tensor.Zeros(D, 3), Tensor.Zeros(D, 4, 2)))!;
        Assert.That(e.Message, Does.Contain("ids has dtype F32"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Embedding(Tensor.ZerosInt(D, 3), Tensor.Zeros(D, 8)))!;
        Assert.That(e.Message, Does.Contain("table has shape [8]").And.Contain("rank-2"));
        var t = Tensor.Zeros(D, 4, 2);
        t.RequiresGrad = true;
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.AccumulateRowGrad(t, Tensor.ZerosInt(D, 3), Tensor.Zeros(D, 3, 5)))!;
        Assert.That(e.Message, Does.Contain("rowGrads has shape [3, 5]").And.Contain("[3, 2]"));
    }
}
