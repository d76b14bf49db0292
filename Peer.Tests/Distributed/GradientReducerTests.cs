// Data-parallel gradient combination with ranks as threads: dense gradients summed through buckets cut across parameters,
// row-sparse gradients merged to the union of the rows with per-row sums (never densified), the same bits on every rank,
// a parameter with a gradient on some ranks only, refusal of mixed kinds, and the global-norm clip of a sharded model.
using Peer.Distributed;
using Peer.Optim;

namespace Peer.Tests.Distributed;

public sealed class GradientReducerTests
{
    static Tensor Param(Device d, string name, params int[] shape)
    {
        var t = Scope.Unscope(Tensor.Zeros(d, shape));
        t.RequiresGrad = true;
        t.Name = name;
        return t;
    }

    [TestCase(7)]        // buckets cut inside and across parameters
    [TestCase(1 << 20)]  // one bucket
    public void SumsDenseAndMergesSparseGradientsTheSameOnEveryRank(int bucket)
    {
        const int ranks = 3, rowsN = 10, cols = 3;
        float[] DenseGrad(int r, int n, int which) => GradCheck.Rand(n, 100 * r + which);
        int[] SparseRows(int r) => r switch { 0 => [1, 4], 1 => [], _ => [0, 4, 9] };
        float[] SparseValues(int r) => GradCheck.Rand(SparseRows(r).Length * cols, 50 + r);

        var results = ThreadGroup.Run(ranks, (g, dev) =>
        {
            var a = Param(dev, "a", 2, 5);
            var b = Param(dev, "b", 4);
            var table = Param(dev, "table", rowsN, cols);
            var unused = Param(dev, "unused", 3);
            var onlyRank2 = Param(dev, "only_rank2", 2);
            a.Grad = Scope.Unscope(Tensor.FromArray(dev, DenseGrad(g.Rank, 10, 0), 2, 5));
            b.Grad = Scope.Unscope(Tensor.FromArray(dev, DenseGrad(g.Rank, 4, 1), 4));
            table.SparseGrad = new RowSparseGrad(Scope.Unscope(Tensor.FromArray(dev, SparseRows(g.Rank), SparseRows(g.Rank).Length)),
                Scope.Unscope(Tensor.FromArray(dev, SparseValues(g.Rank), SparseRows(g.Rank).Length, cols)));
            if (g.Rank == 2) onlyRank2.Grad = Scope.Unscope(Tensor.FromArray(dev, new[] { 1f, 2f }, 2));
            new GradientReducer(g, bucket).AllReduce([("a", a), ("b", b), ("table", table), ("unused", unused), ("only_rank2", onlyRank2)]);
            var result = (A: a.Grad!.ToArray(), B: b.Grad!.ToArray(), Rows: table.SparseGrad!.Real().Rows, Values: table.SparseGrad.Real().Values,
                Dense: table.Grad is null, Unused: unused.Grad is null && unused.SparseGrad is null, Only: onlyRank2.Grad!.ToArray());
            foreach (var t in new[] { a, b, table, unused, onlyRank2 }) t.Dispose();
            return result;
        });

        var wantA = Enumerable.Range(0, 10).Select(i => Enumerable.Range(0, ranks).Sum(r => (double)DenseGrad(r, 10, 0)[i])).ToArray();
        var wantB = Enumerable.Range(0, 4).Select(i => Enumerable.Range(0, ranks).Sum(r => (double)DenseGrad(r, 4, 1)[i])).ToArray();
        var dense = new double[rowsN * cols];
        for (int r = 0; r < ranks; r++)
            for (int s = 0; s < SparseRows(r).Length; s++)
                for (int c = 0; c < cols; c++) dense[SparseRows(r)[s] * cols + c] += SparseValues(r)[s * cols + c];
        int[] wantRows = [0, 1, 4, 9];
        foreach (var p in results)
        {
            Assert.That(p.A, Is.EqualTo(wantA).Within(1e-6));
            Assert.That(p.B, Is.EqualTo(wantB).Within(1e-6));
            Assert.That(p.Rows, Is.EqualTo(wantRows), "the union of the rows, ascending");
            Assert.That(p.Values, Is.EqualTo(wantRows.SelectMany(row => dense[(row * cols)..((row + 1) * cols)]).ToArray()).Within(1e-6));
            Assert.That(p.Dense && p.Unused, "the table stays row-sparse; a parameter without gradient anywhere stays without");
            Assert.That(p.Only, Is.EqualTo(new[] { 1f, 2f }), "ranks without a gradient count as zeros");
            Assert.That(p.A, Is.EqualTo(results[0].A), "the same bits on every rank");
            Assert.That(p.Values, Is.EqualTo(results[0].Values), "the same bits on every rank");
        }
    }

    [Test]
    public void RefusesADenseGradientOnOneRankAndASparseOneOnAnother()
    {
        var ex = Assert.Throws<AggregateException>(() => ThreadGroup.Run(2, (g, dev) =>
        {
            var p = Param(dev, "mixed", 2, 2);
            if (g.Rank == 0) p.Grad = Scope.Unscope(Tensor.Zeros(dev, 2, 2));
            else p.SparseGrad = new RowSparseGrad(Scope.Unscope(Tensor.FromArray(dev, new[] { 1 }, 1)), Scope.Unscope(Tensor.Zeros(dev, 1, 2)));
            new GradientReducer(g).AllReduce([("mixed", p)]);
            return 0;
        }));
        Assert.That(ex!.InnerException!.Message, Does.Contain("'mixed' has a dense gradient on one rank and a row-sparse one on another"));
    }

    [Test]
    public void ShardedClipUsesTheNormOfTheWholeModel()
    {
        // Replicated gradient (3, 4) on both ranks, sharded parts (12) and (0, 5): the whole model's norm is sqrt(9+16+144+25) = sqrt(194).
        var norms = ThreadGroup.Run(2, (g, dev) =>
        {
            var rep = Param(dev, "rep", 2);
            var sh = Param(dev, "sh", g.Rank == 0 ? 1 : 2);
            rep.Grad = Scope.Unscope(Tensor.FromArray(dev, new[] { 3f, 4f }, 2));
            sh.Grad = Scope.Unscope(Tensor.FromArray(dev, g.Rank == 0 ? new[] { 12f } : new[] { 0f, 5f }, g.Rank == 0 ? 1 : 2));
            float n = GradClip.ClipGlobalNorm([rep], [sh], g, 1f);
            var result = (Norm: n, Rep: rep.Grad!.ToArray());
            rep.Dispose();
            sh.Dispose();
            return result;
        });
        foreach (var (norm, rep) in norms)
        {
            Assert.That(norm, Is.EqualTo(MathF.Sqrt(194f)).Within(1e-4f));
            Assert.That(rep[0], Is.EqualTo(3f / (MathF.Sqrt(194f) + 1e-6f)).Within(1e-6f));
        }
    }

    [Test]
    public void SingleProcessCollectivesCopyAndCountNothing()
    {
        var g = new SingleProcess();
        var all = new int[3];
        g.AllGatherV<int>([1, 2, 3], all, [3]);
        Assert.That(all, Is.EqualTo(new[] { 1, 2, 3 }));
        var data = new float[] { 1f, 2f };
        g.AllReduce(data.AsSpan());
        Assert.That(data, Is.EqualTo(new[] { 1f, 2f }));
        Assert.That(g.BytesReceived, Is.Zero);
        Assert.That(Communicator.Traffic("all-reduce", 1000, 0, 4), Is.EqualTo(1500), "ring all-reduce: 2 (R - 1) / R of the array");
        Assert.That(Communicator.Traffic("all-gather", 1000, 250, 4), Is.EqualTo(750));
        Assert.Throws<ArgumentException>(() => g.AllGatherV<int>([1, 2], all, [3]));
    }
}
