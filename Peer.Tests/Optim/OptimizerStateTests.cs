using Peer.IO;
using Peer.Optim;

namespace Peer.Tests.Optim;

// Checkpointing optimizer state, and the errors of the optimizers.
public sealed class OptimizerStateTests
{
    static Device D => Devices.Cpu;

    static Tensor Param(float[] data, params int[] shape)
    {
        var p = Tensor.FromArray(D, data, shape);
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

    static Optimizer Make(string kind, Tensor dense, Tensor table) => kind switch
    {
        "adamw" => new AdamW([("dense", dense), ("table", table)], 1e-2f, weightDecay: 0.1f),
        "rowwise-adagrad" => new RowWiseAdagrad([("dense", dense), ("table", table)], 0.1f, weightDecay: 0.1f),
        "rowwise-adamw" => new RowWiseAdamW([("dense", dense), ("table", table)], 1e-2f, weightDecay: 0.1f),
        "rowwise-adamw-no-first-moment" => new RowWiseAdamW([("dense", dense), ("table", table)], 1e-2f, beta1: 0f, weightDecay: 0.1f),
        _ => new Sgd([("dense", dense), ("table", table)], 0.05f, momentum: 0.9f, weightDecay: 0.01f),
    };

    [TestCase("adamw")]
    [TestCase("sgd")]
    [TestCase("rowwise-adagrad")]
    [TestCase("rowwise-adamw")]
    [TestCase("rowwise-adamw-no-first-moment")]
    public void SavedStateGivesIdenticalLaterSteps(string kind)
    {
        using var s = Scope.Begin();
        string path = Path.Combine(Path.GetTempPath(), $"peer-optim-{Guid.NewGuid():N}.safetensors");
        try
        {
            var dense = Param(GradCheck.Rand(10, 1), 2, 5);
            var table = Param(GradCheck.Rand(21, 2), 7, 3);
            using var a = Make(kind, dense, table);
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
            using var b = Make(kind, dense2, table2);
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
            var sa = a.StateDict().ToList();
            var sb = b.StateDict().ToList();
            Assert.That(sb.Select(e => e.Name), Is.EqualTo(sa.Select(e => e.Name)));
            for (int i = 0; i < sa.Count; i++)
                if (sa[i].T.DType == DType.F32) Assert.That(sb[i].T.ToArray(), Is.EqualTo(sa[i].T.ToArray()), sa[i].Name);
                else Assert.That(sb[i].T.ToIntArray(), Is.EqualTo(sa[i].T.ToIntArray()), sa[i].Name);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void LoadStateDictRefusesMismatches()
    {
        using var s = Scope.Begin();
        var dense = Param(GradCheck.Rand(10, 1), 2, 5);
        var table = Param(GradCheck.Rand(21, 2), 7, 3);
        using var opt = new AdamW([("dense", dense), ("table", table)]);
        var full = opt.StateDict().ToList();

        var missing = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(full.Where(e => e.Name != "table.exp_avg")))!;
        Assert.That(missing.Message, Does.Contain("'table.exp_avg'").And.Contain("an entry of this name"));
        var extra = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(full.Append(("bogus", Tensor.Zeros(D, 1)))))!;
        Assert.That(extra.Message, Does.Contain("'bogus'"));
        var shape = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(full.Select(e => e.Name == "dense.exp_avg_sq" ? (e.Name, Tensor.Zeros(D, 10)) : e)))!;
        Assert.That(shape.Message, Does.Contain("dense.exp_avg_sq has shape [10]").And.Contain("[2, 5]"));
        var type = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(full.Select(e => e.Name == "dense.step" ? (e.Name, Tensor.Zeros(D, 1)) : e)))!;
        Assert.That(type.Message, Does.Contain("dense.step has dtype F32: expected I32"));
        var negative = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(full.Select(e => e.Name == "dense.step" ? (e.Name, Tensor.FromArray(D, new[] { -3 }, 1)) : e)))!;
        Assert.That(negative.Message, Does.Contain("dense.step = -3"));
    }

    [Test]
    public void BadGradientsAreRefusedBeforeAnyUpdate()
    {
        using var s = Scope.Begin();
        var dense = Param(GradCheck.Rand(4, 1), 4);
        var table = Param(GradCheck.Rand(12, 2), 4, 3);
        using var opt = new Sgd([("dense", dense), ("table", table)], 0.1f);
        var before = dense.ToArray();
        dense.Grad = Tensor.FromArray(D, GradCheck.Rand(4, 3), 4);

        void Sparse(int[] rows, int cols = 3)
        {
            table.SparseGrad?.Dispose();
            table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, rows, rows.Length), Tensor.Zeros(D, rows.Length, cols));
        }
        Sparse([0, 4]);
        var range = Assert.Throws<InvalidOperationException>(opt.Step)!;
        Assert.That(range.Message, Does.Contain("'table'").And.Contain("row 4 at position 1").And.Contain("[0, 4)"));
        Sparse([2, 1]);
        var order = Assert.Throws<InvalidOperationException>(opt.Step)!;
        Assert.That(order.Message, Does.Contain("rows 2, 1").And.Contain("increasing"));
        Sparse([1, 1]);
        Assert.That(Assert.Throws<InvalidOperationException>(opt.Step)!.Message, Does.Contain("distinct"));
        Sparse([1, RowSparseGrad.NoRow, 2]); // padding is accepted only at the end
        Assert.That(Assert.Throws<InvalidOperationException>(opt.Step)!.Message, Does.Contain("row 2 at position 2 after padding"));
        Sparse([0], cols: 5);
        Assert.That(Assert.Throws<InvalidOperationException>(opt.Step)!.Message, Does.Contain("[1, 5]").And.Contain("dividing"));
        Sparse([1]);
        table.Grad = Tensor.Zeros(D, 4, 3);
        Assert.That(Assert.Throws<InvalidOperationException>(opt.Step)!.Message, Does.Contain("both a dense Grad and a SparseGrad"));
        table.SparseGrad!.Dispose();
        table.SparseGrad = null;
        table.Grad.Dispose();
        table.Grad = Tensor.Zeros(D, 3, 4);
        Assert.That(Assert.Throws<InvalidOperationException>(opt.Step)!.Message, Does.Contain("'table' has Grad").And.Contain("[4, 3]"));
        Assert.That(dense.ToArray(), Is.EqualTo(before), "a refused step updates nothing");
    }

    [Test]
    public void ConstructionErrorsNameTheValue()
    {
        using var s = Scope.Begin();
        var p = Param(GradCheck.Rand(4, 1), 4);
        Assert.That(Assert.Throws<ArgumentException>(() => new Sgd([], 0.1f))!.Message, Does.Contain("at least one parameter"));
        Assert.That(Assert.Throws<ArgumentException>(() => new Sgd([("p", p), ("p", p)], 0.1f))!.Message, Does.Contain("'p'").And.Contain("distinct"));
        Assert.That(Assert.Throws<ArgumentException>(() => new Sgd([("i", Tensor.ZerosInt(D, 2))], 0.1f))!.Message, Does.Contain("i has dtype I32"));
        Assert.That(Assert.Throws<ArgumentException>(() => new Sgd([("p", p), ("q", p)], 0.1f))!.Message, Does.Contain("'q'").And.Contain("each tensor once"));
        using var plain = new Sgd([("p", p)], 0.1f);
        Assert.That(plain.StateDict(), Is.Empty);
        plain.LoadStateDict([]);
        Assert.That(Assert.Throws<ArgumentException>(() => plain.LoadStateDict([("p.momentum_buffer", p)]))!.Message, Does.Contain("no entries"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([("p", p)], beta1: 1f))!.Message, Does.Contain("beta1 = 1"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([("p", p)], eps: 0f))!.Message, Does.Contain("eps = 0"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new Sgd([("p", p)], -1f))!.Message, Does.Contain("LearningRate = -1"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new Sgd([("p", p)], 0.1f, momentum: float.NaN))!.Message, Does.Contain("momentum = NaN"));
    }

    [Test]
    public void RowWiseConstructionErrorsNameTheValue()
    {
        using var s = Scope.Begin();
        var p = Param(GradCheck.Rand(4, 1), 2, 2);
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdagrad([("p", p)], eps: 0f))!.Message, Does.Contain("eps = 0"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdagrad([("p", p)], weightDecay: float.NaN))!.Message, Does.Contain("weightDecay = NaN"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdagrad([("p", p)], lr: -0.5f))!.Message, Does.Contain("LearningRate = -0.5"));
        Assert.That(Assert.Throws<ArgumentException>(() => new RowWiseAdagrad([]))!.Message, Does.Contain("at least one parameter"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdamW([("p", p)], beta1: -0.1f))!.Message, Does.Contain("beta1 = -0.1"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdamW([("p", p)], beta2: 1f))!.Message, Does.Contain("beta2 = 1"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdamW([("p", p)], eps: float.NaN))!.Message, Does.Contain("eps = NaN"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new RowWiseAdamW([("p", p)], weightDecay: -1f))!.Message, Does.Contain("weightDecay = -1"));
    }

    // A row-wise optimizer keeps its state per row of the first dimension, so a sparse gradient must list rows of that width,
    // even when another width divides the parameter's length (which AdamW accepts); nothing is updated when one does not.
    [TestCase("rowwise-adagrad")]
    [TestCase("rowwise-adamw")]
    public void RowWiseRefusesSparseRowsOfAnotherWidth(string kind)
    {
        using var s = Scope.Begin();
        var dense = Param(GradCheck.Rand(10, 1), 2, 5);
        var table = Param(GradCheck.Rand(24, 2), 4, 6);
        using var opt = Make(kind, dense, table);
        dense.Grad = Tensor.FromArray(D, GradCheck.Rand(10, 3), 2, 5);
        table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, new[] { 1, 5 }, 2), Tensor.FromArray(D, GradCheck.Rand(6, 4), 2, 3));
        var before = dense.ToArray();
        var e = Assert.Throws<InvalidOperationException>(opt.Step)!;
        Assert.That(e.Message, Does.Contain("'table'").And.Contain("[2, 3]").And.Contain("row width 6").And.Contain("[4, 6]"));
        Assert.That(dense.ToArray(), Is.EqualTo(before), "a refused step updates nothing");
        table.SparseGrad.Dispose();
        table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, new[] { 1, 3 }, 2), Tensor.FromArray(D, GradCheck.Rand(12, 4), 2, 6));
        opt.Step();
        Assert.That(dense.ToArray(), Is.Not.EqualTo(before));
    }

    // Row-wise state is one float per row: [rows] for a table, [n] for a vector; names as documented.
    [Test]
    public void RowWiseStateShapes()
    {
        using var s = Scope.Begin();
        var table = Param(GradCheck.Rand(21, 2), 7, 3);
        var bias = Param(GradCheck.Rand(4, 3), 4);
        using var adagrad = new RowWiseAdagrad([("table", table), ("bias", bias)]);
        Assert.That(adagrad.StateDict().Select(e => (e.Name, Tensor.FormatShape(e.T.Shape))),
            Is.EqualTo(new[] { ("table.sum", "[7]"), ("bias.sum", "[4]") }));
        using var adam = new RowWiseAdamW([("table", table), ("bias", bias)]);
        Assert.That(adam.StateDict().Select(e => (e.Name, Tensor.FormatShape(e.T.Shape))), Is.EqualTo(new[]
        {
            ("table.exp_avg", "[7, 3]"), ("table.exp_avg_sq", "[7]"), ("table.step", "[1]"),
            ("bias.exp_avg", "[4]"), ("bias.exp_avg_sq", "[4]"), ("bias.step", "[1]"),
        }));
        using var noMoment = new RowWiseAdamW([("table", table)], beta1: 0f);
        Assert.That(noMoment.StateDict().Select(e => e.Name), Is.EqualTo(new[] { "table.exp_avg_sq", "table.step" }));
        Assert.That(noMoment.HasFirstMoment, Is.False);
    }
}
