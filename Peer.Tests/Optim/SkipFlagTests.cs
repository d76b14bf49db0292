using Peer.Optim;

namespace Peer.Tests.Optim;

// The device-side skip of a training step (StepGuard's flag as Optimizer.SkipFlag): while the flag is set every optimizer's
// update kernels change nothing (parameters and moments bit for bit, dense arena runs and lazy sparse rows alike), and while
// it is clear the optimizers give the bits they give without a flag. The guard itself: which step, which value, sticky.
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class SkipFlagTests(string backend)
{
    Device D => Devices.Get(backend);

    public static IEnumerable<string> Kinds() => ["adamw", "sgd", "sgd-momentum", "rowwise-adagrad", "rowwise-adamw", "rowwise-adamw-b1=0"];

    static Optimizer Make(string kind, IEnumerable<(string, Tensor)> ps) => kind switch
    {
        "adamw" => new AdamW(ps, 0.05f, weightDecay: 0.1f),
        "sgd" => new Sgd(ps, 0.05f, weightDecay: 0.1f),
        "sgd-momentum" => new Sgd(ps, 0.05f, momentum: 0.9f, weightDecay: 0.1f),
        "rowwise-adagrad" => new RowWiseAdagrad(ps, 0.05f, weightDecay: 0.1f),
        "rowwise-adamw" => new RowWiseAdamW(ps, 0.05f, weightDecay: 0.1f),
        _ => new RowWiseAdamW(ps, 0.05f, beta1: 0f, weightDecay: 0.1f),
    };

    // Two dense parameters (packed into one arena run by the elementwise optimizers) in group "dense", a table stepped by rows in "sparse".
    (Tensor[] Params, CombinedOptimizer Opt) Build(string kind)
    {
        var a = Tensor.FromArray(D, GradCheck.Rand(12, 1), 3, 4);
        var b = Tensor.FromArray(D, GradCheck.Rand(5, 2), 5);
        var table = Tensor.FromArray(D, GradCheck.Rand(40, 3), 10, 4);
        foreach (var p in new[] { a, b, table }) p.RequiresGrad = true;
        var opt = new CombinedOptimizer([("dense", Make(kind, [("a", a), ("b", b)])), ("sparse", Make(kind, [("table", table)]))]);
        return ([a, b, table], opt);
    }

    void Gradients(Tensor[] ps, int seed)
    {
        ps[0].Grad = Tensor.FromArray(D, GradCheck.Rand(12, seed), 3, 4);
        ps[1].Grad = Tensor.FromArray(D, GradCheck.Rand(5, seed + 1), 5);
        int[] rows = seed % 2 == 0 ? [1, 4, 9] : [0, 4, 7];
        ps[2].SparseGrad = new RowSparseGrad(Tensor.FromArray(D, rows, 3), Tensor.FromArray(D, GradCheck.Rand(12, seed + 2), 3, 4));
    }

    // Every parameter and every device state tensor (the host's step counts, which StateDict writes into "*.step", go on: see Optimizer.SkipFlag).
    static Dictionary<string, float[]> Snapshot(Tensor[] ps, CombinedOptimizer opt) =>
        opt.StateDict().Where(e => !e.Name.EndsWith(".step", StringComparison.Ordinal)).Select(e => (e.Name, e.T.ToArray()))
            .Concat(ps.Select((p, i) => ($"param{i}", p.ToArray()))).ToDictionary(e => e.Item1, e => e.Item2);

    [TestCaseSource(nameof(Kinds))]
    public void ASetFlagLeavesEveryParameterAndStateBitIdentical(string kind)
    {
        using var scope = Scope.Begin();
        var (ps, opt) = Build(kind);
        using var _ = opt;
        using var guard = new StepGuard(D);
        opt.SkipFlag = guard.Flag;
        Assert.That(opt["dense"].SkipFlag, Is.SameAs(guard.Flag));
        Gradients(ps, 10);
        opt.Step();
        opt.ZeroGrad();
        var before = Snapshot(ps, opt);
        guard.Observe(Tensor.FromArray(D, [float.NaN], 1), Tensor.FromArray(D, [1f], 1), 2);
        for (int step = 2; step <= 3; step++)
        {
            Gradients(ps, 10 * step);
            opt.Step();
            opt.ZeroGrad();
        }
        var after = Snapshot(ps, opt);
        foreach (var (name, values) in before)
            Assert.That(after[name], Is.EqualTo(values), $"{kind}: {name} changed on a skipped step");
        Assert.That(guard.Read(), Is.EqualTo(new StepFailure(2, true, float.NaN)));
    }

    [TestCaseSource(nameof(Kinds))]
    public void AClearFlagGivesTheBitsOfNoFlag(string kind)
    {
        using var scope = Scope.Begin();
        var (ps, opt) = Build(kind);
        var (twin, plain) = Build(kind);
        using var _ = opt;
        using var __ = plain;
        using var guard = new StepGuard(D);
        opt.SkipFlag = guard.Flag;
        var start = Snapshot(ps, opt);
        for (int step = 1; step <= 3; step++)
        {
            guard.Observe(Tensor.FromArray(D, [2.5f], 1), Tensor.FromArray(D, [float.MaxValue], 1), step);
            Gradients(ps, 10 * step);
            Gradients(twin, 10 * step);
            opt.Step();
            plain.Step();
            opt.ZeroGrad();
            plain.ZeroGrad();
        }
        Assert.That(guard.Read(), Is.Null, "finite values leave the flag clear");
        var got = Snapshot(ps, opt);
        var want = Snapshot(twin, plain);
        foreach (var (name, values) in want) Assert.That(got[name], Is.EqualTo(values), $"{kind}: {name}");
        Assert.That(got["param0"], Is.Not.EqualTo(start["param0"]), "the steps were applied");
        Assert.That(got["param2"], Is.Not.EqualTo(start["param2"]), "the sparse steps were applied");
    }

    [Test]
    public void TheGuardRecordsTheFirstBadStepAndWhichValueUntilCleared()
    {
        using var scope = Scope.Begin();
        using var guard = new StepGuard(D);
        Tensor V(float x) => Tensor.FromArray(D, [x], 1);
        guard.Observe(V(1f), V(float.MaxValue), 1);
        guard.Observe(V(-3f), V(0f), 2);
        Assert.That(guard.Read(), Is.Null);
        guard.Observe(V(0.5f), V(float.PositiveInfinity), 3);
        guard.Observe(V(float.NaN), V(float.NaN), 4);
        Assert.That(guard.Read(), Is.EqualTo(new StepFailure(3, false, float.PositiveInfinity)), "the first bad step is kept");
        guard.Clear();
        Assert.That(guard.Read(), Is.Null);
        guard.Observe(V(float.NegativeInfinity), V(float.NaN), 7);
        Assert.That(guard.Read(), Is.EqualTo(new StepFailure(7, true, float.NegativeInfinity)), "the loss is looked at first");
        Assert.That(() => guard.Observe(V(1f), V(1f), 0), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("step = 0"));
        Assert.That(() => guard.Observe(Tensor.ZerosInt(D, 1), V(1f), 1), Throws.ArgumentException.With.Message.Contains("loss"));
    }

    [Test]
    public void ASkipFlagMustBeAnIntTensorOnTheOptimizersDevice()
    {
        using var scope = Scope.Begin();
        var p = Tensor.Zeros(D, 4);
        using var opt = new Sgd([("p", p)], 0.1f);
        Assert.That(() => opt.SkipFlag = Tensor.Zeros(D, 1), Throws.ArgumentException.With.Message.Contains("SkipFlag"));
        Assert.That(() => opt.SkipFlag = Tensor.ZerosInt(D, 0), Throws.ArgumentException.With.Message.Contains("SkipFlag"));
        opt.SkipFlag = null;
        Assert.That(opt.SkipFlag, Is.Null);
    }
}
