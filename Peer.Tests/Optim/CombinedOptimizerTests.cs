using Peer.IO;
using Peer.Nn;
using Peer.Optim;

namespace Peer.Tests.Optim;

// Groups of parameters with their own optimizers, used as one: the same updates as the optimizers alone, validation of
// every group before any update, state saved and restored whole, and the errors.
public sealed class CombinedOptimizerTests
{
    static Device D => Devices.Cpu;

    static Tensor Param(int n, int seed, params int[] shape)
    {
        var p = Tensor.FromArray(D, GradCheck.Rand(n, seed), shape);
        p.RequiresGrad = true;
        return p;
    }

    static void Grads(Tensor dense, Tensor table, int seed)
    {
        dense.Grad?.Dispose();
        dense.Grad = Tensor.FromArray(D, GradCheck.Rand(dense.Length, seed), dense.Shape);
        int[] rows = seed % 2 == 0 ? [1, 5] : [0, 5, 6];
        table.SparseGrad?.Dispose();
        table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, rows, rows.Length), Tensor.FromArray(D, GradCheck.Rand(rows.Length * 3, seed + 1), rows.Length, 3));
    }

    static CombinedOptimizer Make(Tensor dense, Tensor table) => new(
    [
        ("sparse", new RowWiseAdagrad([("table", table)], 0.1f)),
        ("dense", new AdamW([("dense", dense)], 1e-2f, weightDecay: 0.1f)),
    ]);

    // The combination steps each group exactly as its optimizer alone would, each at its own learning rate.
    [Test]
    public void StepsEachGroupAsItsOptimizerAlone()
    {
        using var s = Scope.Begin();
        var dense = Param(10, 1, 2, 5);
        var table = Param(21, 2, 7, 3);
        var dense2 = Param(10, 1, 2, 5);
        var table2 = Param(21, 2, 7, 3);
        using var combined = Make(dense, table);
        using var alone1 = new RowWiseAdagrad([("table", table2)], 0.1f);
        using var alone2 = new AdamW([("dense", dense2)], 1e-2f, weightDecay: 0.1f);
        for (int step = 0; step < 3; step++)
        {
            combined["sparse"].LearningRate = alone1.LearningRate = 0.1f / (step + 1);
            combined["dense"].LearningRate = alone2.LearningRate = 1e-2f / (step + 1);
            Grads(dense, table, 10 * step);
            Grads(dense2, table2, 10 * step);
            combined.Step();
            alone1.Step();
            alone2.Step();
            Assert.That(table.ToArray(), Is.EqualTo(table2.ToArray()), $"step {step}");
            Assert.That(dense.ToArray(), Is.EqualTo(dense2.ToArray()), $"step {step}");
        }
        Assert.That(combined.StateDict().Select(e => e.Name), Is.EqualTo(new[] { "table.sum", "dense.exp_avg", "dense.exp_avg_sq", "dense.step" }));
        combined.ZeroGrad();
        Assert.That(dense.Grad, Is.Null);
        Assert.That(table.SparseGrad, Is.Null);
    }

    [Test]
    public void BadGradientInOneGroupUpdatesNoGroup()
    {
        using var s = Scope.Begin();
        var dense = Param(10, 1, 2, 5);
        var table = Param(21, 2, 7, 3);
        // The dense group comes first, so a check made group by group would have updated it before meeting the bad row.
        using var opt = new CombinedOptimizer([("dense", new AdamW([("dense", dense)])), ("sparse", new RowWiseAdagrad([("table", table)]))]);
        dense.Grad = Tensor.FromArray(D, GradCheck.Rand(10, 3), 2, 5);
        table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, new[] { 2, 7 }, 2), Tensor.Zeros(D, 2, 3));
        var before = dense.ToArray();
        var e = Assert.Throws<InvalidOperationException>(opt.Step)!;
        Assert.That(e.Message, Does.Contain("'table'").And.Contain("row 7"));
        Assert.That(dense.ToArray(), Is.EqualTo(before));
    }

    [Test]
    public void SavedStateGivesIdenticalLaterSteps()
    {
        using var s = Scope.Begin();
        string path = Path.Combine(Path.GetTempPath(), $"peer-combined-{Guid.NewGuid():N}.safetensors");
        try
        {
            var dense = Param(10, 1, 2, 5);
            var table = Param(21, 2, 7, 3);
            using var a = Make(dense, table);
            for (int step = 0; step < 3; step++)
            {
                Grads(dense, table, 10 * step);
                a.Step();
            }
            SafeTensors.Write(path, a.StateDict().Select(e => ("optim." + e.Name, e.T)).Concat([("dense", dense), ("table", table)]));
            using var r = SafeTensors.Read(path);
            var dense2 = r.ToTensor(D, "dense");
            var table2 = r.ToTensor(D, "table");
            dense2.RequiresGrad = table2.RequiresGrad = true;
            using var b = Make(dense2, table2);
            b.LoadStateDict(r.Names.Where(n => n.StartsWith("optim.")).Select(n => (n["optim.".Length..], r.ToTensor(D, n))));
            for (int step = 3; step < 5; step++)
            {
                Grads(dense, table, 10 * step);
                Grads(dense2, table2, 10 * step);
                a.Step();
                b.Step();
                Assert.That(dense2.ToArray(), Is.EqualTo(dense.ToArray()));
                Assert.That(table2.ToArray(), Is.EqualTo(table.ToArray()));
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    // Every entry is checked before any group copies: a bad entry of the second group leaves the first group's state as it was.
    [Test]
    public void LoadStateDictChecksEveryGroupBeforeCopying()
    {
        using var s = Scope.Begin();
        var dense = Param(10, 1, 2, 5);
        var table = Param(21, 2, 7, 3);
        using var opt = Make(dense, table);
        Grads(dense, table, 0);
        opt.Step();
        var sumBefore = opt["sparse"].StateDict().Single().T.ToArray();
        var zeros = opt.StateDict().Select(e => (e.Name, T: e.T.DType == DType.F32 ? Tensor.Zeros(D, e.T.Shape) : Tensor.ZerosInt(D, e.T.Shape))).ToList();
        var wrong = zeros.Select(e => e.Name == "dense.exp_avg_sq" ? (e.Name, Tensor.Zeros(D, 10)) : e).ToList();
        var shape = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(wrong))!;
        Assert.That(shape.Message, Does.Contain("dense.exp_avg_sq has shape [10]"));
        Assert.That(opt["sparse"].StateDict().Single().T.ToArray(), Is.EqualTo(sumBefore), "the first group copied before the second was checked");
        var extra = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(zeros.Append(("table.exp_avg", Tensor.Zeros(D, 7, 3)))))!;
        Assert.That(extra.Message, Does.Contain("'table.exp_avg'").And.Contain("state names"));
        var missing = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(zeros.Where(e => e.Name != "table.sum")))!;
        Assert.That(missing.Message, Does.Contain("'table.sum'").And.Contain("an entry of this name"));
        opt.LoadStateDict(zeros);
        Assert.That(opt["sparse"].StateDict().Single().T.ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void ConstructionErrorsNameTheValue()
    {
        using var s = Scope.Begin();
        var a = Param(4, 1, 4);
        var b = Param(4, 2, 4);
        Assert.That(Assert.Throws<ArgumentException>(() => new CombinedOptimizer([]))!.Message, Does.Contain("at least one group"));
        using var sa = new Sgd([("a", a)], 0.1f);
        using var sb = new Sgd([("b", b)], 0.1f);
        using var sa2 = new Sgd([("a", b)], 0.1f);
        using var sb2 = new Sgd([("c", a)], 0.1f);
        Assert.That(Assert.Throws<ArgumentException>(() => new CombinedOptimizer([("g", sa), ("g", sb)]))!.Message, Does.Contain("'g'").And.Contain("distinct group names"));
        Assert.That(Assert.Throws<ArgumentException>(() => new CombinedOptimizer([("g", sa), ("h", sa)]))!.Message, Does.Contain("'h'").And.Contain("one group only"));
        Assert.That(Assert.Throws<ArgumentException>(() => new CombinedOptimizer([("g", sa), ("h", sa2)]))!.Message, Does.Contain("'a'").And.Contain("in 'g' and 'h'"));
        Assert.That(Assert.Throws<ArgumentException>(() => new CombinedOptimizer([("g", sa), ("h", sb2)]))!.Message, Does.Contain("'c'").And.Contain("each tensor in one group"));
        using var combined = new CombinedOptimizer([("g", sa), ("h", sb)]);
        Assert.That(Assert.Throws<KeyNotFoundException>(() => _ = combined["x"])!.Message, Does.Contain("'x'").And.Contain("'g', 'h'"));
    }

    // README.md's lines (section "Optimizer state for the expert tables"), at a size a test can afford: row-wise AdaGrad's state is
    // one float per expert, and a step changes only the retrieved experts' rows.
    [Test]
    public void ReadmeLinesKeepOneFloatPerExpertAndTouchOnlyRetrievedRows()
    {
        var device = D;
        using var peer = new PeerLayer(device, dim: 32, new PeerOptions { Experts = 32 * 32, Heads = 4, TopK = 4, QueryDim = 16 });
        var tables = peer.NamedParameters().Where(p => p.Tensor.RowSparse);   // experts.*, keys.*
        var rest = peer.NamedParameters().Where(p => !p.Tensor.RowSparse);
        using var optimizer = new CombinedOptimizer(
        [
            ("sparse", new RowWiseAdagrad(tables, lr: 0.05f)),   // one float of state per row
            ("dense", new AdamW(rest, lr: 1e-3f)),
        ]);
        var down = peer.NamedParameters().Single(p => p.Name == "experts.down").Tensor;
        var before = down.ToArray();
        int[] retrieved;
        using (Scope.Begin())
        {
            var x = Peer.Ops.Normal(device, seed: 1, mean: 0, std: 1, 64, 32);
            var y = peer.Forward(x);
            retrieved = peer.LastIndices!.ToIntArray();
            Peer.Ops.Mean(Peer.Ops.Square(y)).Backward();
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        var state = optimizer.StateDict().ToDictionary(e => e.Name, e => e.T);
        Assert.That(state["experts.down.sum"].Shape, Is.EqualTo(new[] { 32 * 32 }));
        Assert.That(state["keys.sub1.sum"].Shape, Is.EqualTo(new[] { 32 }));
        var after = down.ToArray();
        var sums = state["experts.down.sum"].ToArray();
        var touched = retrieved.ToHashSet();
        for (int row = 0; row < 32 * 32; row++)
        {
            bool changed = Enumerable.Range(0, 32).Any(c => after[row * 32 + c] != before[row * 32 + c]);
            Assert.That(changed, Is.EqualTo(touched.Contains(row)), $"row {row}: changed exactly when retrieved");
            Assert.That(sums[row] > 0, Is.EqualTo(touched.Contains(row)), $"row {row}: state only for retrieved rows");
        }
    }

    // The PEER layer marks its expert tables and sub-keys row-sparse, and nothing else: the split a trainer groups by.
    [Test]
    public void PeerLayerMarksItsTablesRowSparse()
    {
        using var layer = new PeerLayer(D, 8, new PeerOptions { Experts = 16, Heads = 1, TopK = 2, QueryDim = 4 });
        var sparse = layer.NamedParameters().Where(p => p.Tensor.RowSparse).Select(p => p.Name);
        Assert.That(sparse, Is.EquivalentTo(new[] { "experts.down", "experts.up", "keys.sub1", "keys.sub2" }));
        using var table = new Embedding(D, 5, 3);
        using var denseTable = new Embedding(D, 5, 3, sparse: false);
        Assert.That(table.Weight.RowSparse, Is.True);
        Assert.That(denseTable.Weight.RowSparse, Is.False);
    }
}
