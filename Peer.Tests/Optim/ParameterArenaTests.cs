using Peer.Nn;
using Peer.Optim;

namespace Peer.Tests.Optim;

/// <summary>
/// The parameter arena (Optim/ParameterArena.cs): after the first step a model's dense parameters, gradients and AdamW state lie in
/// one buffer apiece, a step updates them with one launch and clips them with one, and the numbers are those of stepping each
/// parameter alone (the kernels are elementwise).
/// </summary>
public sealed class ParameterArenaTests
{
    // A small model whose parameters all get dense gradients through the tape: two linears with a GELU between.
    sealed class Mlp : Module
    {
        readonly Linear a, b;
        public Mlp(Device d, ulong seed) : base(d)
        {
            a = Child("a", new Linear(d, 6, 5, true, seed));
            b = Child("b", new Linear(d, 5, 3, true, seed + 1));
        }
        public Tensor Forward(Tensor x) => b.Forward(Peer.Ops.Gelu(a.Forward(x)));
    }

    static void Backward(Device d, Mlp m, int step)
    {
        using var scope = Scope.Begin();
        var x = Peer.Ops.Normal(d, (ulong)(100 + step), 0f, 1f, 4, 6);
        var y = m.Forward(x);
        d.Tape.Backward(y, Peer.Ops.Normal(d, (ulong)(200 + step), 0f, 1f, 4, 3));
    }

    [Test]
    public void OneOptimizerOverTheArenaStepsAsOneOptimizerPerParameter()
    {
        using var d = Device.Open("cpu");
        using var whole = new Mlp(d, 7);
        using var apart = new Mlp(d, 7);
        using var adam = new AdamW(whole.NamedParameters(), lr: 0.01f, weightDecay: 0.1f);
        var single = apart.NamedParameters().Select(p => new AdamW([p], lr: 0.01f, weightDecay: 0.1f)).ToArray();
        for (int step = 0; step < 4; step++)
        {
            Backward(d, whole, step);
            Backward(d, apart, step);
            GradClip.ClipGlobalNorm(whole.Parameters(), 1e6f); // read as one run, scales nothing
            adam.Step();
            foreach (var o in single) o.Step();
            whole.ZeroGrad();
            apart.ZeroGrad();
        }
        var a = whole.NamedParameters().ToArray();
        var b = apart.NamedParameters().ToArray();
        for (int i = 0; i < a.Length; i++) Assert.That(a[i].Tensor.ToArray(), Is.EqualTo(b[i].Tensor.ToArray()), a[i].Name);
        var sa = adam.StateDict().ToArray();
        var sb = single.SelectMany(o => o.StateDict()).ToArray();
        Assert.That(sa.Select(s => s.Name), Is.EqualTo(sb.Select(s => s.Name)), "state names");
        for (int i = 0; i < sa.Length; i++)
        {
            Assert.That(sa[i].T.Shape, Is.EqualTo(sb[i].T.Shape), sa[i].Name);
            if (sa[i].T.DType == DType.F32) Assert.That(sa[i].T.ToArray(), Is.EqualTo(sb[i].T.ToArray()), sa[i].Name);
            else Assert.That(sa[i].T.ToIntArray(), Is.EqualTo(sb[i].T.ToIntArray()), sa[i].Name);
        }
        foreach (var o in single) o.Dispose();
    }

    [Test]
    public void AfterTheFirstStepAStepIsOneLaunchAndNeedsNoNewGradient()
    {
        using var d = Device.Open("cpu");
        using var m = new Mlp(d, 3);
        using var adam = new AdamW(m.NamedParameters());
        Backward(d, m, 0);
        adam.Step();
        m.ZeroGrad();
        var places = m.Parameters().Select(p => p.Place).ToArray();
        Assert.That(places.Select(p => p.Storage).Distinct().Count(), Is.EqualTo(1), "the parameters share one buffer");
        using var p = d.Profile();
        Backward(d, m, 1);
        var grads = m.Parameters().Select(t => t.Grad!.Place).ToArray();
        Assert.That(grads.Select(g => g.Storage).Distinct().Count(), Is.EqualTo(1), "the gradients share one buffer");
        Assert.That(grads.Select(g => g.Offset), Is.EqualTo(places.Select(q => q.Offset)), "laid out as the parameters");
        GradClip.ClipGlobalNorm(m.Parameters(), 1e-3f); // clips: a sum and a scale
        adam.Step();
        var calls = p.Rows().Where(r => r.IsKernel).ToDictionary(r => (r.Op, r.Phase), r => r.Calls);
        Assert.That(calls[("Adam.AdamW", ProfilePhase.Optimizer)], Is.EqualTo(1), "four parameters, one launch");
        Assert.That(calls[("Clip.SumSquaresRun", ProfilePhase.Optimizer)], Is.EqualTo(1), "the norm: one launch over the four gradients side by side");
        Assert.That(calls.ContainsKey(("Clip.SumSquares", ProfilePhase.Optimizer)), Is.False, "no launch per gradient");
        Assert.That(calls[("Clip.Scale", ProfilePhase.Optimizer)], Is.EqualTo(1));
        Assert.That(m.Parameters().Select(t => t.Place), Is.EqualTo(places), "parameters stay in place");
    }

    [Test]
    public void AParameterWithoutGradientSplitsTheRunAndKeepsItsValuesAndStepCount()
    {
        using var d = Device.Open("cpu");
        using var m = new Mlp(d, 5);
        using var reference = new Mlp(d, 5);
        using var adam = new AdamW(m.NamedParameters(), lr: 0.05f);
        var single = reference.NamedParameters().Select(p => new AdamW([p], lr: 0.05f)).ToArray();
        for (int step = 0; step < 3; step++)
        {
            Backward(d, m, step);
            Backward(d, reference, step);
            if (step == 1)
            {
                // The second parameter (a's bias) gets no gradient this step.
                var (bias, refBias) = (m.Parameters().ElementAt(1), reference.Parameters().ElementAt(1));
                bias.Grad!.Dispose();
                bias.Grad = null;
                refBias.Grad!.Dispose();
                refBias.Grad = null;
            }
            adam.Step();
            foreach (var o in single) o.Step();
            m.ZeroGrad();
            reference.ZeroGrad();
        }
        var a = m.Parameters().ToArray();
        var b = reference.Parameters().ToArray();
        for (int i = 0; i < a.Length; i++) Assert.That(a[i].ToArray(), Is.EqualTo(b[i].ToArray()), $"parameter {i}");
        var steps = adam.StateDict().Where(s => s.Name.EndsWith(".step")).Select(s => s.T.ToIntArray()[0]).ToArray();
        Assert.That(steps, Is.EqualTo(new[] { 3, 2, 3, 3 }), "a's bias skipped one step");
        foreach (var o in single) o.Dispose();
    }

    [Test]
    public void RowSparseParametersStayOutOfTheArena()
    {
        using var d = Device.Open("cpu");
        using var layer = new PeerLayer(d, 8, new PeerOptions { Experts = 16, Heads = 2, TopK = 2, QueryDim = 4, Seed = 2 });
        using var adam = new AdamW(layer.NamedParameters());
        for (int step = 0; step < 2; step++)
        {
            using (var scope = Scope.Begin())
            {
                var x = Peer.Ops.Normal(d, (ulong)step, 0f, 1f, 5, 8);
                d.Tape.Backward(layer.Forward(x), Peer.Ops.Normal(d, 9, 0f, 1f, 5, 8));
            }
            adam.Step();
            layer.ZeroGrad();
        }
        var places = layer.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Place.Storage);
        var dense = new[] { "query.weight", "query.bias", "query_norm.weight", "query_norm.bias" };
        Assert.That(dense.Select(n => places[n]).Distinct().Count(), Is.EqualTo(1), "the dense ones share the arena");
        foreach (var n in new[] { "keys.sub1", "keys.sub2", "experts.down", "experts.up" })
            Assert.That(places[n], Is.Not.SameAs(places["query.weight"]), n);
    }
}
