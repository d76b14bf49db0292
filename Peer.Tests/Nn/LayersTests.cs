using Peer.Nn;

namespace Peer.Tests.Nn;

public sealed class LayersTests
{
    static Device D => Devices.Cpu;

    sealed class Bare(Device d) : Module(d);

    [Test]
    public void ParameterAndBufferNamesAndShapes()
    {
        using var net = new Sequential(D, new Peer.Nn.Linear(D, 4, 8), new Peer.Nn.LayerNorm(D, 8), new Peer.Nn.Linear(D, 8, 3, bias: false),
            new Peer.Nn.BatchNorm1d(D, 3), new Peer.Nn.Dropout(D, 0.1f, 1), new Peer.Nn.RMSNorm(D, 3));
        var shapes = net.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Shape);
        Assert.That(shapes.Keys, Is.EqualTo(new[] { "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "3.weight", "3.bias", "5.weight" }));
        Assert.That(shapes["0.weight"], Is.EqualTo(new[] { 8, 4 }));
        Assert.That(shapes["0.bias"], Is.EqualTo(new[] { 8 }));
        Assert.That(shapes["2.weight"], Is.EqualTo(new[] { 3, 8 }));
        Assert.That(net.NamedBuffers().Select(b => b.Name), Is.EqualTo(new[] { "3.running_mean", "3.running_var" }));
        Assert.That(net.NamedParameters().All(p => p.Tensor.RequiresGrad));
        Assert.That(net.Count, Is.EqualTo(6));
        using var emb = new Peer.Nn.Embedding(D, 11, 5);
        Assert.That(emb.NamedParameters().Single().Name, Is.EqualTo("weight"));
        Assert.That(emb.Weight.Shape, Is.EqualTo(new[] { 11, 5 }));
    }

    [Test]
    public void InitialisationsFollowPyTorch()
    {
        using var lin = new Peer.Nn.Linear(D, 64, 300, seed: 3);
        var w = lin.Weight.ToArray();
        double bound = 1 / 8.0;
        Assert.That(w.All(v => v >= -bound && v < bound));
        Assert.That(MathNet.Numerics.Statistics.Statistics.StandardDeviation(w.Select(v => (double)v)), Is.EqualTo(bound / Math.Sqrt(3)).Within(0.005));
        Assert.That(lin.Bias!.ToArray().All(v => v >= -bound && v < bound));
        Assert.That(lin.Bias!.ToArray(), Is.Not.EqualTo(w.Take(300).ToArray()), "bias drawn from its own stream");
        using var same = new Peer.Nn.Linear(D, 64, 300, seed: 3);
        using var other = new Peer.Nn.Linear(D, 64, 300, seed: 4);
        Assert.That(same.Weight.ToArray(), Is.EqualTo(w));
        Assert.That(other.Weight.ToArray(), Is.Not.EqualTo(w));
        using var emb = new Peer.Nn.Embedding(D, 1000, 50, seed: 5);
        var e = emb.Weight.ToArray().Select(v => (double)v).ToArray();
        Assert.That(MathNet.Numerics.Statistics.Statistics.Mean(e), Is.EqualTo(0).Within(0.02));
        Assert.That(MathNet.Numerics.Statistics.Statistics.StandardDeviation(e), Is.EqualTo(1).Within(0.02));
        using var ln = new Peer.Nn.LayerNorm(D, 4);
        Assert.That(ln.Weight.ToArray(), Is.All.EqualTo(1f));
        Assert.That(ln.Bias.ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void LinearModuleForwardMatchesHost()
    {
        using var s = Scope.Begin();
        using var lin = new Peer.Nn.Linear(D, 3, 2, seed: 8);
        var x = GradCheck.Rand(4 * 3, 1);
        var y = lin.Forward(Tensor.FromArray(D, x, 4, 3)).ToArray();
        var w = lin.Weight.ToArray();
        var b = lin.Bias!.ToArray();
        for (int r = 0; r < 4; r++)
            for (int o = 0; o < 2; o++)
                Assert.That(y[r * 2 + o], Is.EqualTo(Enumerable.Range(0, 3).Sum(i => (double)x[r * 3 + i] * w[o * 3 + i]) + b[o]).Within(1e-6));
    }

    [Test]
    public void BatchNormTrainsOnBatchStatsAndEvaluatesOnRunningStats()
    {
        using var s = Scope.Begin();
        using var bn = new Peer.Nn.BatchNorm1d(D, 2, momentum: 0.5f);
        float[] x = [1f, 10f, 3f, 20f, 5f, 60f];
        var train = bn.Forward(Tensor.FromArray(D, x, 3, 2)).ToArray();
        // column 0: mean 3, biased var 8/3; column 1: mean 30, biased var 1400/3 (unbiased 700)
        Assert.That(train[0], Is.EqualTo((1 - 3) / Math.Sqrt(8.0 / 3 + 1e-5)).Within(1e-5));
        Assert.That(bn.RunningMean.ToArray(), Is.EqualTo(new[] { 1.5f, 15f }).Within(1e-5));
        Assert.That(bn.RunningVar.ToArray(), Is.EqualTo(new[] { 0.5 + 0.5 * 4, 0.5 + 0.5 * 700 }).Within(1e-3));
        bn.Eval();
        var eval = bn.Forward(Tensor.FromArray(D, x, 3, 2)).ToArray();
        Assert.That(eval[0], Is.EqualTo((1 - 1.5) / Math.Sqrt(2.5 + 1e-5)).Within(1e-5));
        Assert.That(eval[1], Is.EqualTo((10 - 15) / Math.Sqrt(350.5 + 1e-5)).Within(1e-5));
        Assert.That(bn.RunningMean.ToArray(), Is.EqualTo(new[] { 1.5f, 15f }).Within(1e-5), "eval leaves running stats");
    }

    [Test]
    public void DropoutAdvancesItsMaskInTrainingAndIsIdentityInEval()
    {
        using var s = Scope.Begin();
        using var drop = new Peer.Nn.Dropout(D, 0.5f, seed: 21);
        var x = Tensor.Full(D, 1f, 256);
        var a = drop.Forward(x).ToArray();
        var b = drop.Forward(x).ToArray();
        Assert.That(drop.Step, Is.EqualTo(2));
        Assert.That(b, Is.Not.EqualTo(a), "each training call draws a new mask");
        Assert.That(a.All(v => v == 0f || v == 2f));
        drop.Step = 0;
        Assert.That(drop.Forward(x).ToArray(), Is.EqualTo(a), "the mask is a function of (seed, step)");
        drop.Eval();
        Assert.That(drop.Forward(x), Is.SameAs(x));
        Assert.That(drop.Step, Is.EqualTo(1));
    }

    [Test]
    public void SequentialRefusesNonLayers()
    {
        using var bare = new Bare(D);
        var e = Assert.Throws<ArgumentException>(() => new Sequential(D, new Peer.Nn.RMSNorm(D, 2), bare))!;
        Assert.That(e.Message, Does.Contain("layers[1] = 'Bare'").And.Contain("ILayer"));
    }

    [Test]
    public void TwoLayerNetLearnsWithHandWrittenSgd()
    {
        // 3-class problem: the class is the index of the largest of the first three features.
        int n = 48;
        var rng = new Random(5);
        var xs = Enumerable.Range(0, n * 4).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var ys = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, 3).OrderByDescending(j => xs[i * 4 + j]).First()).ToArray();
        using var net = new Sequential(D, new Peer.Nn.Linear(D, 4, 16, seed: 1), new Peer.Nn.LayerNorm(D, 16), new Peer.Nn.Linear(D, 16, 3, seed: 2));
        var losses = new List<float>();
        for (int step = 0; step < 30; step++)
        {
            using var s = Scope.Begin();
            net.ZeroGrad();
            var loss = Peer.Ops.CrossEntropy(net.Forward(Tensor.FromArray(D, xs, n, 4)), Tensor.FromArray(D, ys, n));
            losses.Add(loss.Item());
            loss.Backward();
            foreach (var p in net.Parameters()) Peer.Ops.AddInPlace(p, p.Grad!, -0.5f);
        }
        Assert.That(losses[0], Is.EqualTo(Math.Log(3)).Within(0.5), "starts near chance");
        Assert.That(losses[^1], Is.LessThan(0.6 * losses[0]));
    }
}
