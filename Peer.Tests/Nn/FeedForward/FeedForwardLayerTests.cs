// Each feed-forward baseline against its double-precision host reference (FeedForwardReference.cs): the forward,
// and the gradient of the input and of every parameter against central differences of the reference. Also the
// top-k MoE's auxiliary loss against its formula, interop names, Soft MoE's causal refusal and determinism.
namespace Peer.Tests.Nn.FeedForward;

using Peer.Nn;
using static Peer.Tests.FeedForwardReference;
using static Peer.Tests.PeerMath;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class FeedForwardLayerTests(string backend)
{
    Device Dev => Devices.Get(backend);

    /// <summary>float32 device vs exact derivatives of O(1) quantities (as PeerLayerTests).</summary>
    const double Tol = 2e-4;

    static PeerRefParams Params(Module layer)
    {
        var p = new PeerRefParams();
        foreach (var (name, t) in layer.StateDict()) p[name] = D(t.ToArray());
        return p;
    }

    /// <summary>Runs forward and backward of sum(y * r) (+ auxWeight * aux) on the device and checks y and every gradient
    /// against the reference <paramref name="reference"/> (y, aux) and its central differences.</summary>
    void CheckLayer(FeedForwardLayer layer, int t, Func<PeerRefParams, double[], (double[] Y, double Aux)> reference, int seed,
        double auxWeight = 0, IEnumerable<string>? sparseNames = null)
    {
        var sparse = new HashSet<string>(sparseNames ?? []);
        using var s = Scope.Begin();
        int d = layer.Dim;
        var p0 = Params(layer);
        var x = GradCheck.Rand(t * d, seed);
        var r = GradCheck.Rand(t * d, seed + 1);
        var tx = Tensor.FromArray(Dev, x, t, d);
        tx.RequiresGrad = true;
        var y = layer.Forward(tx);
        var want = reference(p0, D(x));
        Assert.That(y.ToArray(), Is.EqualTo(want.Y).Within(1e-5), "forward");
        Tensor loss = Peer.Ops.Sum(Peer.Ops.Mul(y, Tensor.FromArray(Dev, r, t, d)));
        if (auxWeight != 0)
        {
            Assert.That(layer.AuxiliaryLoss!.Item(), Is.EqualTo(want.Aux).Within(1e-5), "auxiliary loss");
            loss = Peer.Ops.Add(loss, Peer.Ops.Scale(layer.AuxiliaryLoss!, (float)auxWeight));
        }
        loss.Backward();

        double Loss(PeerRefParams p, double[] xx)
        {
            var (yy, aux) = reference(p, xx);
            return Dot(yy, D(r)) + auxWeight * aux;
        }
        Assert.That(tx.Grad!.ToArray(), Is.EqualTo(NumGrad(v => Loss(p0, v), D(x))).Within(Tol), "grad.x");
        foreach (var (name, tp) in layer.NamedParameters())
        {
            var wantG = NumGrad(v => Loss(p0.With(name, v), D(x)), p0[name]);
            bool isSparse = sparse.Contains(name);
            Assert.That(isSparse ? tp.Grad is null && tp.SparseGrad is not null : tp.Grad is not null, Is.True, $"{name}: gradient kind");
            var got = isSparse ? PeerReference.Densify(tp.SparseGrad!, tp.Shape[0], tp.Shape[1]) : D(tp.Grad!.ToArray());
            Assert.That(got, Is.EqualTo(wantG).Within(Tol), name);
        }
    }

    [TestCase(PeerActivation.Gelu)]
    [TestCase(PeerActivation.Relu)]
    public void DenseFfwMatchesReference(PeerActivation act)
    {
        using var layer = new DenseFfw(Dev, 4, 6, act, seed: 3);
        CheckLayer(layer, 5, (p, x) => (Dense(p, x, 5, 4, 6, act), 0), seed: 11);
    }

    [TestCase(PeerQueryNorm.BatchNorm, true)]
    [TestCase(PeerQueryNorm.BatchNorm, false)]
    [TestCase(PeerQueryNorm.None, true)]
    public void ProductKeyMemoryMatchesReference(PeerQueryNorm norm, bool training)
    {
        const int T = 6, Dm = 5, H = 2, Dq = 4, N = 4, K = 3;
        using var layer = new ProductKeyMemory(Dev, Dm, N * N, H, K, Dq, norm, seed: 5);
        if (norm == PeerQueryNorm.BatchNorm)
        {
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.running_mean").Tensor, 9, -0.5f, 0.5f);
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.running_var").Tensor, 10, 0.5f, 2f);
            Peer.Ops.UniformInit(layer.StateDict().First(p => p.Name == "query_norm.weight").Tensor, 11, 0.5f, 1.5f);
        }
        layer.Train(training);
        CheckLayer(layer, T, (p, x) => (Pkm(p, x, T, Dm, H, Dq, N, K, norm, training).Y, 0), seed: 21,
            sparseNames: ["keys.sub1", "keys.sub2", "values.weight"]);
    }

    [TestCase(1.0, 2)]
    [TestCase(1.5, 3)]
    [TestCase(4.0, 8)]
    public void ExpertChoiceMoeMatchesReference(double factor, int capacity)
    {
        const int T = 8, Dm = 4, Hd = 5, E = 4;
        using var layer = new ExpertChoiceMoe(Dev, Dm, Hd, E, factor, seed: 7);
        Assert.That(layer.CapacityFor(T), Is.EqualTo(capacity));
        CheckLayer(layer, T, (p, x) => (ExpertChoice(p, x, T, Dm, Hd, E, capacity, PeerActivation.Gelu).Y, 0), seed: 31);
    }

    [TestCase(1, 1.0, false)]
    [TestCase(2, 0.5, false)]
    [TestCase(2, 0.5, true)]
    [TestCase(2, 2.0, true)]
    public void TopKMoeMatchesReferenceWithItsAuxiliaryLoss(int k, double factor, bool renormalize)
    {
        const int T = 8, Dm = 4, Hd = 5, E = 4;
        using var layer = new TopKMoe(Dev, Dm, Hd, E, k, factor, renormalize, seed: 9);
        int c = layer.CapacityFor(T);
        Assert.That(c, Is.EqualTo((int)Math.Ceiling(factor * k * T / E)));
        CheckLayer(layer, T, (p, x) =>
        {
            var (y, aux, _) = TopK(p, x, T, Dm, Hd, E, k, c, renormalize, PeerActivation.Gelu);
            return (y, aux);
        }, seed: 41, auxWeight: 0.7);
    }

    [Test]
    public void TopKMoeTestConfigurationReallyDropsTokens()
    {
        // The capacity-0.5 cases above exercise drops only if some expert is over-subscribed with these seeds.
        const int T = 8, Dm = 4, Hd = 5, E = 4;
        using var layer = new TopKMoe(Dev, Dm, Hd, E, 2, 0.5, seed: 9);
        var (_, _, accepted) = TopK(Params(layer), D(GradCheck.Rand(T * Dm, 41)), T, Dm, Hd, E, 2, layer.CapacityFor(T), false, PeerActivation.Gelu);
        Assert.That(accepted.Sum(a => a.Length), Is.LessThan(T * 2), "some choices were dropped");
    }

    [Test]
    public void AuxiliaryLossIsOneUnderUniformRouting()
    {
        // Zero router weights: P = 1/E everywhere; ties choose the smallest ids, so f is not uniform, but
        // E * sum_e f_e * (1/E) = sum_e f_e = 1 whatever f is.
        using var layer = new TopKMoe(Dev, 4, 3, 4, 2, seed: 1);
        Peer.Ops.Fill(layer.NamedParameters().First(p => p.Name == "router.weight").Tensor, 0f);
        using var s = Scope.Begin();
        layer.Forward(Tensor.FromArray(Dev, GradCheck.Rand(24, 3), 6, 4));
        Assert.That(layer.AuxiliaryLoss!.Item(), Is.EqualTo(1.0).Within(1e-6));
    }

    [Test]
    public void SoftMoeMatchesReference()
    {
        const int T = 6, Dm = 4, Hd = 5, E = 2, S = 2;
        using var layer = new SoftMoe(Dev, Dm, Hd, E, S, causal: false, seed: 13);
        CheckLayer(layer, T, (p, x) => (Soft(p, x, T, Dm, Hd, E, S, PeerActivation.Gelu), 0), seed: 51);
    }

    [Test]
    public void SoftMoeRefusesACausalModelUnlessAskedExplicitly()
    {
        var e = Assert.Throws<ArgumentException>(() => new SoftMoe(Dev, 4, 4, 2, 1, causal: true))!;
        Assert.That(e.Message, Does.Contain("causal = True").And.Contain("allowNonCausal: true").And.Contain("later positions"));
        var viaFactory = Assert.Throws<ArgumentException>(() => FeedForwardFactory.Create(Dev, "soft-moe", new FeedForwardOptions { Dim = 4, Hidden = 4, Experts = 2 }))!;
        Assert.That(viaFactory.Message, Does.Contain("allowNonCausal"));
        using var ok = new SoftMoe(Dev, 4, 4, 2, 1, causal: true, allowNonCausal: true);
        Assert.That(ok.Experts, Is.EqualTo(2));
    }

    [Test]
    public void SoftMoeMixesPositions()
    {
        // The documented hazard, shown: changing the last token changes the first token's output.
        using var layer = new SoftMoe(Dev, 4, 5, 2, 2, causal: false, seed: 2);
        using var s = Scope.Begin();
        var x = GradCheck.Rand(24, 4);
        var y1 = layer.Forward(Tensor.FromArray(Dev, x, 6, 4)).ToArray();
        x[23] += 1f;
        var y2 = layer.Forward(Tensor.FromArray(Dev, x, 6, 4)).ToArray();
        Assert.That(Enumerable.Range(0, 4).Any(c => y1[c] != y2[c]), Is.True);
    }

    [Test]
    public void ParametersCarryTheDocumentedInteropNames()
    {
        var o = new FeedForwardOptions { Dim = 6, Hidden = 10, Experts = 3, TopK = 2, Heads = 2, QueryDim = 4, AllowNonCausal = true, SlotsPerExpert = 2 };
        string Names(string kind, FeedForwardOptions opt)
        {
            using var l = FeedForwardFactory.Create(Dev, kind, opt);
            return string.Join(" ", l.StateDict().Select(p => $"{p.Name}{Tensor.FormatShape(p.Tensor.Shape)}"));
        }
        Assert.That(Names("ffw", o), Is.EqualTo("fc1.weight[10, 6] fc1.bias[10] fc2.weight[6, 10] fc2.bias[6]"));
        string bank = "experts.fc1.weight[3, 10, 6] experts.fc1.bias[3, 10] experts.fc2.weight[3, 6, 10] experts.fc2.bias[3, 6]";
        Assert.That(Names("moe-ec", o), Is.EqualTo("router.weight[3, 6] " + bank));
        Assert.That(Names("moe-topk", o), Is.EqualTo("router.weight[3, 6] " + bank));
        Assert.That(Names("soft-moe", o), Is.EqualTo("router.weight[6, 6] " + bank));
        var pk = o with { Experts = 16 };
        Assert.That(Names("pkm", pk), Is.EqualTo("query.weight[8, 6] query.bias[8] query_norm.weight[8] query_norm.bias[8] keys.sub1[4, 2] " +
            "keys.sub2[4, 2] values.weight[16, 6] query_norm.running_mean[8] query_norm.running_var[8]"));
        Assert.That(Names("peer", pk), Is.EqualTo("query.weight[8, 6] query.bias[8] query_norm.weight[8] query_norm.bias[8] keys.sub1[4, 2] " +
            "keys.sub2[4, 2] experts.down[16, 6] experts.up[16, 6] query_norm.running_mean[8] query_norm.running_var[8]"));
    }

    [Test]
    public void PeerFromTheFactoryIsThePeerLayerAndItsModeReachesTheRetrieval()
    {
        using var ff = FeedForwardFactory.Create(Dev, "peer", new FeedForwardOptions { Dim = 5, Experts = 16, Heads = 2, TopK = 3, QueryDim = 4, Seed = 3 });
        Assert.That(ff, Is.InstanceOf<PeerLayer>());
        Assert.That(ff.TotalParameters, Is.EqualTo(ff.ParameterCount));
        var mean = ff.NamedBuffers().Single(b => b.Name == "query_norm.running_mean").Tensor;
        using var s = Scope.Begin();
        var x = Tensor.FromArray(Dev, GradCheck.Rand(30, 8), 6, 5);
        ff.Eval();
        ff.Forward(x);
        Assert.That(mean.ToArray(), Is.All.EqualTo(0f), "evaluation mode: the query BatchNorm reads its running statistics");
        ff.Train();
        ff.Forward(x);
        Assert.That(mean.ToArray(), Has.Some.Not.EqualTo(0f), "training mode: the query BatchNorm updates them");
    }

    [Test]
    public void MixturesGiveTheSameBitsTwice()
    {
        foreach (var kind in new[] { "moe-ec", "moe-topk", "pkm", "soft-moe" })
        {
            (float[] Y, float[] G) Run()
            {
                using var l = FeedForwardFactory.Create(Dev, kind, new FeedForwardOptions
                { Dim = 8, Hidden = 12, Experts = kind == "pkm" ? 64 : 6, TopK = 2, Heads = 2, QueryDim = 4, AllowNonCausal = true, Seed = 4 });
                using var s = Scope.Begin();
                var x = Peer.Ops.Normal(Dev, 1, 0f, 1f, 40, 8);
                x.RequiresGrad = true;
                var y = l.Forward(x);
                Dev.Tape.Backward(y, Peer.Ops.Normal(Dev, 2, 0f, 1f, 40, 8));
                return (y.ToArray(), x.Grad!.ToArray());
            }
            var a = Run();
            var b = Run();
            Assert.That(b.Y.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Y.Select(BitConverter.SingleToInt32Bits)), kind);
            Assert.That(b.G.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.G.Select(BitConverter.SingleToInt32Bits)), kind);
        }
    }

    [Test]
    public void WrongInputIsRefusedNamingShapeAndWidth()
    {
        using var l = new ExpertChoiceMoe(Dev, 4, 4, 2);
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => l.Forward(Tensor.Zeros(Dev, 3, 5)))!;
        Assert.That(e.Message, Does.Contain("[3, 5]").And.Contain("d = 4"));
        var e0 = Assert.Throws<ArgumentException>(() => l.Forward(Tensor.Zeros(Dev, 0, 4)))!;
        Assert.That(e0.Message, Does.Contain("T >= 1"));
    }

    [Test]
    public void InvalidConstructionIsRefusedNamingValueAndRule()
    {
        string Msg(TestDelegate a) => Assert.Throws<ArgumentException>(a)!.Message;
        Assert.That(Msg(() => new ExpertChoiceMoe(Dev, 4, 4, 2, 0.0)), Does.Contain("capacityFactor = 0").And.Contain("positive"));
        Assert.That(Msg(() => new TopKMoe(Dev, 4, 4, 2, 3)), Does.Contain("k = 3").And.Contain("experts = 2"));
        Assert.That(Msg(() => new ProductKeyMemory(Dev, 4, 15, 2, 2, 4)), Does.Contain("memories = 15").And.Contain("perfect square"));
        Assert.That(Msg(() => new ProductKeyMemory(Dev, 4, 16, 2, 5, 4)), Does.Contain("k = 5").And.Contain("sqrt(memories) = 4"));
        Assert.That(Msg(() => new ProductKeyMemory(Dev, 4, 16, 2, 2, 3)), Does.Contain("queryDim = 3").And.Contain("even"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new DenseFfw(Dev, 4, 0))!.Message, Does.Contain("hidden = 0"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new SoftMoe(Dev, 4, 4, 2, 0, causal: false))!.Message, Does.Contain("slotsPerExpert = 0"));
    }

    [Test]
    public void TokensBeyondCapacityGetNothingAndTiesGoToEarlierTokens()
    {
        // Zero router weights: every probability is 1/E, so every token's top-1 is expert 0 (ties to the smaller id) and
        // every expert's top-C are tokens 0..C-1 (ties to the smaller token).
        const int T = 8, Dm = 4, E = 4;
        var x = GradCheck.Rand(T * Dm, 6);
        using var topk = new TopKMoe(Dev, Dm, 5, E, 1, capacityFactor: 1.0, seed: 2);
        using var ec = new ExpertChoiceMoe(Dev, Dm, 5, E, capacityFactor: 1.0, seed: 2);
        foreach (var (layer, accepted) in new (FeedForwardLayer, int)[] { (topk, 2), (ec, 2) })
        {
            Peer.Ops.Fill(layer.NamedParameters().First(p => p.Name == "router.weight").Tensor, 0f);
            using var s = Scope.Begin();
            var y = layer.Forward(Tensor.FromArray(Dev, x, T, Dm)).ToArray();
            var p = Params(layer);
            for (int t = 0; t < T; t++)
            {
                var want = new double[Dm];
                if (t < accepted)
                    for (int e = 0; e < (layer is TopKMoe ? 1 : E); e++)
                    {
                        var o = Expert(p, e, D(x), t * Dm, Dm, 5, PeerActivation.Gelu);
                        for (int j = 0; j < Dm; j++) want[j] += o[j] / E;
                    }
                Assert.That(y.Skip(t * Dm).Take(Dm), Is.EqualTo(want).Within(1e-6), $"{layer.GetType().Name} token {t}");
            }
        }
    }
}
