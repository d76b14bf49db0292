// The runner of any feed-forward kind from named arrays: sizes inferred from shapes, same output and gradients as the
// layer built directly, and errors naming the missing or misshapen parameter.
namespace Peer.Tests.Nn.FeedForward;

using Peer.Nn;

public sealed class FeedForwardRunnerTests
{
    static Device Dev => Devices.Cpu;

    static readonly FeedForwardOptions Small = new()
    {
        Dim = 6, Hidden = 7, Experts = 3, TopK = 2, Heads = 2, QueryDim = 4, CapacityFactor = 1.0, SlotsPerExpert = 2,
        AllowNonCausal = true, Seed = 5,
    };

    [TestCase("ffw")]
    [TestCase("peer")]
    [TestCase("pkm")]
    [TestCase("moe-ec")]
    [TestCase("moe-topk")]
    [TestCase("soft-moe")]
    public void RunnerMatchesTheLayerBuiltDirectly(string kind)
    {
        const int T = 8;
        var o = kind is "peer" or "pkm" ? Small with { Experts = 16 } : Small;
        using var layer = FeedForwardFactory.Create(Dev, kind, o);
        var parameters = layer.StateDict().ToDictionary(p => p.Name, p => (p.Tensor.ToArray(), (int[])p.Tensor.Shape.Clone()));
        var x = GradCheck.Rand(T * 6, 3);
        var gy = GradCheck.Rand(T * 6, 4);
        var run = FeedForwardRunner.Run(Dev, FeedForwardFactory.Parse(kind), parameters, x, [T, 6], gy, new FeedForwardOptions { TopK = 2 });

        using var s = Scope.Begin();
        var tx = Tensor.FromArray(Dev, x, T, 6);
        tx.RequiresGrad = true;
        var y = layer.Forward(tx);
        Assert.That(run.Y, Is.EqualTo(y.ToArray()).Within(1e-6), "y");
        var loss = Peer.Ops.Sum(Peer.Ops.Mul(y, Tensor.FromArray(Dev, gy, T, 6)));
        if (layer.AuxiliaryLoss is { } aux)
        {
            Assert.That(run.AuxiliaryLoss, Is.EqualTo(aux.Item()).Within(1e-6));
            loss = Peer.Ops.Add(loss, aux);
        }
        else Assert.That(run.AuxiliaryLoss, Is.Null);
        loss.Backward();
        Assert.That(run.Grads["grad.x"].Data, Is.EqualTo(tx.Grad!.ToArray()).Within(1e-5), "grad.x");
        foreach (var (name, p) in layer.NamedParameters())
        {
            var want = p.Grad is { } g ? g.ToArray().Select(v => (double)v).ToArray() : PeerReference.Densify(p.SparseGrad!, p.Shape[0], p.Shape[1]);
            Assert.That(run.Grads["grad." + name].Data, Is.EqualTo(want).Within(1e-5), name);
            Assert.That(run.Grads["grad." + name].Shape, Is.EqualTo(p.Shape), name);
        }
    }

    [Test]
    public void MissingUnknownAndMisshapenParametersAreNamed()
    {
        using var layer = new DenseFfw(Dev, 4, 5);
        var p = layer.StateDict().ToDictionary(q => q.Name, q => (q.Tensor.ToArray(), (int[])q.Tensor.Shape.Clone()));
        var x = new float[8];
        var missing = new Dictionary<string, (float[], int[])>(p);
        missing.Remove("fc2.bias");
        Assert.That(Assert.Throws<ArgumentException>(() => FeedForwardRunner.Run(Dev, FeedForwardKind.Ffw, missing, x, [2, 4], null))!.Message,
            Does.Contain("'fc2.bias'"));
        var unknown = new Dictionary<string, (float[], int[])>(p) { ["fc3.weight"] = (new float[1], [1, 1]) };
        Assert.That(Assert.Throws<ArgumentException>(() => FeedForwardRunner.Run(Dev, FeedForwardKind.Ffw, unknown, x, [2, 4], null))!.Message,
            Does.Contain("fc3.weight").And.Contain("only names of this layer"));
        var bad = new Dictionary<string, (float[], int[])>(p) { ["fc2.bias"] = (new float[3], [3]) };
        Assert.That(Assert.Throws<ArgumentException>(() => FeedForwardRunner.Run(Dev, FeedForwardKind.Ffw, bad, x, [2, 4], null))!.Message,
            Does.Contain("fc2.bias = [3]").And.Contain("shape [4]"));
        Assert.That(Assert.Throws<ArgumentException>(() => FeedForwardRunner.Run(Dev, FeedForwardKind.Ffw, p, x, [3, 4], null))!.Message,
            Does.Contain("x = [3, 4]"));
    }
}
