// The PEER module against the double-precision host reference of docs/peer-spec.md: forward (experts,
// router weights, output), every parameter's and the input's gradient against central differences of
// the reference, BatchNorm running statistics, determinism, expert usage wiring and construction errors.
namespace Peer.Tests.Nn;

using Peer.Nn;
using static Peer.Tests.PeerMath;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class PeerLayerTests(string backend)
{
    Device D => Devices.Get(backend);

    const int T = 6, Dm = 5, H = 2, Dq = 4, N = 4, K = 3;

    static PeerLayer Make(Device d, PeerQueryNorm norm, PeerActivation act, PeerRouter router, ulong seed = 3) =>
        new(d, Dm, new PeerOptions { Experts = N * N, Heads = H, TopK = K, QueryDim = Dq, QueryNorm = norm, Activation = act, Router = router, Seed = seed });

    static PeerRefParams Params(PeerLayer layer)
    {
        var p = new PeerRefParams();
        foreach (var (name, t) in layer.StateDict()) p[name] = D(t.ToArray());
        return p;
    }

    [TestCase(PeerQueryNorm.BatchNorm, true, PeerActivation.Gelu, PeerRouter.Softmax)]
    [TestCase(PeerQueryNorm.BatchNorm, false, PeerActivation.Gelu, PeerRouter.Softmax)]
    [TestCase(PeerQueryNorm.LayerNorm, true, PeerActivation.Relu, PeerRouter.Softmax)]
    [TestCase(PeerQueryNorm.None, true, PeerActivation.Gelu, PeerRouter.Sigmoid)]
    public void ForwardAndEveryGradientMatchDoubleReference(PeerQueryNorm norm, bool training, PeerActivation act, PeerRouter router)
    {
        using var layer = Make(D, norm, act, router);
        using var s = Scope.Begin();
        if (norm == PeerQueryNorm.BatchNorm)
        {
            // Non-trivial running statistics and affine parameters for the eval path.
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.running_mean").Tensor, 9, -0.5f, 0.5f);
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.running_var").Tensor, 10, 0.5f, 2f);
        }
        if (norm != PeerQueryNorm.None)
        {
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.weight").Tensor, 11, 0.5f, 1.5f);
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.bias").Tensor, 12, -0.3f, 0.3f);
        }
        layer.Train(training);
        var p0 = Params(layer);
        var x = GradCheck.Rand(T * Dm, 21);
        var r = GradCheck.Rand(T * Dm, 22);
        var tx = Tensor.FromArray(D, x, T, Dm); tx.RequiresGrad = true;
        var y = layer.Forward(tx);
        var (wantY, wantIdx, wantG) = Layer(p0, D(x), T, Dm, H, Dq, N, K, norm, training, act, router);
        Assert.That(layer.LastIndices!.ToIntArray(), Is.EqualTo(wantIdx));
        Assert.That(layer.LastWeights!.ToArray(), Is.EqualTo(wantG).Within(1e-5));
        Assert.That(y.ToArray(), Is.EqualTo(wantY).Within(1e-5));
        D.Tape.Backward(y, Tensor.FromArray(D, r, T, Dm));

        double Loss(PeerRefParams p, double[] xx) => Dot(Layer(p, xx, T, Dm, H, Dq, N, K, norm, training, act, router).Y, D(r));
        const double tol = 2e-4; // float32 device vs exact derivatives of O(1) quantities
        Assert.That(tx.Grad!.ToArray(), Is.EqualTo(NumGrad(v => Loss(p0, v), D(x))).Within(tol), "grad.x");
        foreach (var (name, t) in layer.NamedParameters())
        {
            var want = NumGrad(v => Loss(p0.With(name, v), D(x)), p0[name]);
            bool sparse = name.StartsWith("keys.") || name.StartsWith("experts.");
            Assert.That(sparse ? t.Grad is null && t.SparseGrad is not null : t.Grad is not null, Is.True, $"{name}: gradient kind");
            var got = sparse ? PeerReference.Densify(t.SparseGrad!, t.Shape[0], t.Shape[1]) : D(t.Grad!.ToArray());
            Assert.That(got, Is.EqualTo(want).Within(tol), name);
        }
    }

    [Test]
    public void TrainingUpdatesRunningStatisticsAsPyTorch()
    {
        using var layer = Make(D, PeerQueryNorm.BatchNorm, PeerActivation.Gelu, PeerRouter.Softmax);
        using var s = Scope.Begin();
        var p0 = Params(layer);
        var x = GradCheck.Rand(T * Dm, 5);
        layer.Forward(Tensor.FromArray(D, x, T, Dm));
        int hq = H * Dq;
        var mean = layer.StateDict().First(p => p.Name == "query_norm.running_mean").Tensor.ToArray();
        var var_ = layer.StateDict().First(p => p.Name == "query_norm.running_var").Tensor.ToArray();
        for (int o = 0; o < hq; o++)
        {
            var col = Enumerable.Range(0, T).Select(t => p0["query.bias"][o] + Enumerable.Range(0, Dm).Sum(c => p0["query.weight"][o * Dm + c] * x[t * Dm + c])).ToArray();
            double m = col.Average(), unbiased = col.Sum(v => (v - m) * (v - m)) / (T - 1);
            Assert.That(mean[o], Is.EqualTo(0.1 * m).Within(1e-6));
            Assert.That(var_[o], Is.EqualTo(0.9 + 0.1 * unbiased).Within(1e-6));
        }
    }

    [Test]
    public void TwoRunsFromOneSeedGiveTheSameBits()
    {
        (float[] Y, float[] Down, float[] Keys) Run()
        {
            using var layer = new PeerLayer(D, 16, new PeerOptions { Experts = 64, Heads = 4, TopK = 4, QueryDim = 8, Seed = 7 });
            using var s = Scope.Begin();
            var x = Peer.Ops.Normal(D, 1, 0f, 1f, 40, 16);
            var y = layer.Forward(x);
            D.Tape.Backward(y, Peer.Ops.Normal(D, 2, 0f, 1f, 40, 16));
            var down = layer.NamedParameters().First(p => p.Name == "experts.down").Tensor.SparseGrad!.Real().Values;
            var keys = layer.NamedParameters().First(p => p.Name == "keys.sub1").Tensor.SparseGrad!.Real().Values;
            return (y.ToArray(), down, keys);
        }
        var a = Run();
        var b = Run();
        Assert.That(b.Y.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Y.Select(BitConverter.SingleToInt32Bits)));
        Assert.That(b.Down.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Down.Select(BitConverter.SingleToInt32Bits)));
        Assert.That(b.Keys.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Keys.Select(BitConverter.SingleToInt32Bits)));
    }

    [Test]
    public void ParametersCarryTheInteropNamesAndShapes()
    {
        using var layer = new PeerLayer(D, 12, new PeerOptions { Experts = 36, Heads = 3, TopK = 2, QueryDim = 10 });
        var shapes = layer.StateDict().ToDictionary(p => p.Name, p => p.Tensor.Shape);
        Assert.That(shapes, Is.EquivalentTo(new Dictionary<string, int[]>
        {
            ["query.weight"] = [30, 12], ["query.bias"] = [30], ["query_norm.weight"] = [30], ["query_norm.bias"] = [30],
            ["query_norm.running_mean"] = [30], ["query_norm.running_var"] = [30],
            ["keys.sub1"] = [6, 5], ["keys.sub2"] = [6, 5], ["experts.down"] = [36, 12], ["experts.up"] = [36, 12],
        }));
    }

    [Test]
    public void UsageIsAccumulatedWhenAttached()
    {
        using var layer = Make(D, PeerQueryNorm.BatchNorm, PeerActivation.Gelu, PeerRouter.Softmax);
        using var usage = new ExpertUsage(D, N * N);
        layer.Usage = usage;
        layer.Eval();
        using var s = Scope.Begin();
        layer.Forward(Tensor.FromArray(D, GradCheck.Rand(T * Dm, 1), T, Dm));
        var idx = layer.LastIndices!.ToIntArray();
        var g = layer.LastWeights!.ToArray();
        var want = new double[N * N];
        for (int i = 0; i < idx.Length; i++) want[idx[i]] += g[i];
        Assert.That(usage.Accumulated.ToArray(), Is.EqualTo(want).Within(1e-6));
        Assert.That(usage.Compute().Total, Is.EqualTo(T * H).Within(1e-4), "softmax weights sum to 1 per head");
    }

    [TestCase(15, 8, 4, 2, "Experts = 15", "perfect square")]
    [TestCase(16, 8, 5, 2, "TopK = 5", "sqrt(Experts) = 4")]
    [TestCase(16, 8, 0, 2, "TopK = 0", "at least 1")]
    [TestCase(16, 7, 2, 2, "QueryDim = 7", "even")]
    [TestCase(16, 8, 2, 0, "Heads = 0", "at least 1 head")]
    [TestCase(0, 8, 1, 1, "Experts = 0", "perfect square")]
    public void InvalidOptionsAreRefusedNamingValueAndRule(int experts, int dq, int k, int h, string value, string rule)
    {
        var e = Assert.Throws<ArgumentException>(() => new PeerLayer(D, 4, new PeerOptions { Experts = experts, QueryDim = dq, TopK = k, Heads = h }))!;
        Assert.That(e.Message, Does.Contain(value).And.Contain(rule));
    }

    [Test]
    public void WrongInputWidthIsRefused()
    {
        using var layer = Make(D, PeerQueryNorm.None, PeerActivation.Gelu, PeerRouter.Softmax);
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => layer.Forward(Tensor.Zeros(D, 3, 4)))!;
        Assert.That(e.Message, Does.Contain("[3, 4]").And.Contain("d = 5"));
    }
}
