// The runner behind `peer layer` on a PEER layer, over every backend: sizes inferred from shapes, retrieval, outputs
// and full dense gradients against the double-precision reference, and errors for missing, unknown or misshapen parameters.
namespace Peer.Tests.Nn.FeedForward;

using Peer.Nn;
using static Peer.Tests.PeerMath;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class FeedForwardRunnerPeerTests(string backend)
{
    Device D => Devices.Get(backend);

    const int T = 5, Dm = 4, H = 2, Dq = 6, N = 5, K = 2, Hq = H * Dq;

    static Dictionary<string, (float[], int[])> Params(bool batchNorm)
    {
        var p = new Dictionary<string, (float[], int[])>
        {
            ["query.weight"] = (GradCheck.Rand(Hq * Dm, 1), [Hq, Dm]),
            ["query.bias"] = (GradCheck.Rand(Hq, 2), [Hq]),
            ["keys.sub1"] = (GradCheck.Rand(N * Dq / 2, 3), [N, Dq / 2]),
            ["keys.sub2"] = (GradCheck.Rand(N * Dq / 2, 4), [N, Dq / 2]),
            ["experts.down"] = (GradCheck.Rand(N * N * Dm, 5), [N * N, Dm]),
            ["experts.up"] = (GradCheck.Rand(N * N * Dm, 6), [N * N, Dm]),
        };
        if (batchNorm)
        {
            p["query_norm.weight"] = (GradCheck.Rand(Hq, 7).Select(v => 1 + 0.3f * v).ToArray(), [Hq]);
            p["query_norm.bias"] = (GradCheck.Rand(Hq, 8, 0.2f), [Hq]);
            p["query_norm.running_mean"] = (GradCheck.Rand(Hq, 9, 0.3f), [Hq]);
            p["query_norm.running_var"] = (GradCheck.Rand(Hq, 10).Select(v => 1 + 0.5f * v).ToArray(), [Hq]);
        }
        return p;
    }

    FeedForwardRunResult Run(Dictionary<string, (float[], int[])> p, float[] x, float[]? gy, int k, bool eval = false) =>
        FeedForwardRunner.Run(D, FeedForwardKind.Peer, p, x, [T, Dm], gy, new FeedForwardOptions { TopK = k, Activation = PeerActivation.Gelu }, eval);

    [TestCase(true, false)]
    [TestCase(true, true)]
    [TestCase(false, false)]
    public void OutputsAndDenseGradientsMatchReference(bool batchNorm, bool eval)
    {
        var p = Params(batchNorm);
        var x = GradCheck.Rand(T * Dm, 11);
        var gy = GradCheck.Rand(T * Dm, 12);
        var res = Run(p, x, gy, K, eval);
        var rp = new PeerRefParams();
        foreach (var (name, (data, _)) in p) rp[name] = PeerMath.D(data);
        var norm = batchNorm ? PeerQueryNorm.BatchNorm : PeerQueryNorm.None;
        var (y, idx, g) = Layer(rp, PeerMath.D(x), T, Dm, H, Dq, N, K, norm, !eval, PeerActivation.Gelu, PeerRouter.Softmax);
        Assert.That(res.Retrieval!.Shape, Is.EqualTo(new[] { T, H, K }));
        Assert.That(res.Retrieval.Indices, Is.EqualTo(idx));
        Assert.That(res.Retrieval.Weights, Is.EqualTo(g).Within(1e-5));
        Assert.That(res.Y, Is.EqualTo(y).Within(1e-5));
        double Loss(PeerRefParams q, double[] xx) => Dot(Layer(q, xx, T, Dm, H, Dq, N, K, norm, !eval, PeerActivation.Gelu, PeerRouter.Softmax).Y, PeerMath.D(gy));
        Assert.That(res.Grads["grad.x"].Data, Is.EqualTo(NumGrad(v => Loss(rp, v), PeerMath.D(x))).Within(2e-4));
        foreach (var name in p.Keys.Where(n => !n.Contains("running")))
        {
            Assert.That(res.Grads["grad." + name].Shape, Is.EqualTo(p[name].Item2), name);
            Assert.That(res.Grads["grad." + name].Data, Is.EqualTo(NumGrad(v => Loss(rp.With(name, v), PeerMath.D(x)), rp[name])).Within(2e-4), name);
        }
        var down = res.Grads["grad.experts.down"].Data;
        for (int i = 0; i < N * N; i++)
            if (!idx.Contains(i)) Assert.That(down.Skip(i * Dm).Take(Dm), Is.All.EqualTo(0f), $"row {i} was not retrieved");
    }

    [Test]
    public void WithoutGradYThereAreNoGradients()
    {
        var res = Run(Params(false), GradCheck.Rand(T * Dm, 1), null, K);
        Assert.That(res.Grads, Is.Empty);
        Assert.That(res.Y.Length, Is.EqualTo(T * Dm));
    }

    [Test]
    public void BadParametersAreNamed()
    {
        var x = GradCheck.Rand(T * Dm, 1);
        var missing = Params(false);
        missing.Remove("experts.up");
        Assert.That(Assert.Throws<ArgumentException>(() => Run(missing, x, null, K))!.Message, Does.Contain("'experts.up'"));
        var unknown = Params(false);
        unknown["query.extra"] = (new float[1], [1]);
        Assert.That(Assert.Throws<ArgumentException>(() => Run(unknown, x, null, K))!.Message, Does.Contain("query.extra"));
        var badDown = Params(false);
        badDown["experts.down"] = (new float[24 * Dm], [24, Dm]);
        Assert.That(Assert.Throws<ArgumentException>(() => Run(badDown, x, null, K))!.Message, Does.Contain("N = n*n = 25"));
        Assert.That(Assert.Throws<ArgumentException>(() => Run(Params(false), x, null, 6))!.Message, Does.Contain("TopK = 6"));
    }
}
