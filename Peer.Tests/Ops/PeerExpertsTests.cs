// Fused PEER experts and router: forward against the double-precision host reference, every gradient
// against central differences of that reference, determinism (two runs, same bits) and bad inputs.
namespace Peer.Tests.Ops;

using static Peer.Tests.PeerMath;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class PeerExpertsTests(string backend)
{
    Device D => Devices.Get(backend);

    // Duplicated ids (across tokens and within a token) exercise the per-row accumulation.
    static int[] Ids(int count, int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(0, n)).ToArray();
    }

    [TestCase(PeerActivation.Gelu)]
    [TestCase(PeerActivation.Relu)]
    public void ForwardAndBackwardMatchDoubleReference(PeerActivation act)
    {
        int t = 5, d = 6, hk = 4, n = 9;
        var x = GradCheck.Rand(t * d, 1);
        var idx = Ids(t * hk, n, 2);
        var g = GradCheck.Rand(t * hk, 3);
        var down = GradCheck.Rand(n * d, 4);
        var up = GradCheck.Rand(n * d, 5);
        var r = GradCheck.Rand(t * d, 6);
        using var s = Scope.Begin();
        var tx = Tensor.FromArray(D, x, t, d); tx.RequiresGrad = true;
        var tg = Tensor.FromArray(D, g, t, 2, 2); tg.RequiresGrad = true;
        var tDown = Tensor.FromArray(D, down, n, d); tDown.RequiresGrad = true;
        var tUp = Tensor.FromArray(D, up, n, d); tUp.RequiresGrad = true;
        var y = Peer.Ops.PeerExperts(tx, Tensor.FromArray(D, idx, t, 2, 2), tg, tDown, tUp, act);
        var want = Experts(PeerMath.D(x), idx, PeerMath.D(g), PeerMath.D(down), PeerMath.D(up), t, d, hk, act);
        Assert.That(y.ToArray(), Is.EqualTo(want).Within(1e-5));
        D.Tape.Backward(y, Tensor.FromArray(D, r, t, d));

        double Loss(double[] xx, double[] gg, double[] dd, double[] uu) => Dot(Experts(xx, idx, gg, dd, uu, t, d, hk, act), PeerMath.D(r));
        var (xd, gd, dd, ud) = (PeerMath.D(x), PeerMath.D(g), PeerMath.D(down), PeerMath.D(up));
        const double tol = 1e-4; // float32 device sums of O(1) terms vs exact derivatives
        Assert.That(tx.Grad!.ToArray(), Is.EqualTo(NumGrad(v => Loss(v, gd, dd, ud), xd)).Within(tol));
        Assert.That(tg.Grad!.ToArray(), Is.EqualTo(NumGrad(v => Loss(xd, v, dd, ud), gd)).Within(tol));
        Assert.That(tDown.Grad, Is.Null);
        Assert.That(PeerReference.Densify(tDown.SparseGrad!, n, d), Is.EqualTo(NumGrad(v => Loss(xd, gd, v, ud), dd)).Within(tol));
        Assert.That(PeerReference.Densify(tUp.SparseGrad!, n, d), Is.EqualTo(NumGrad(v => Loss(xd, gd, dd, v), ud)).Within(tol));
        Assert.That(tUp.SparseGrad!.Real().Rows, Is.EqualTo(idx.Distinct().OrderBy(i => i).ToArray()));
    }

    [Test]
    public void SecondBackwardMergesSparseGradients()
    {
        int t = 3, d = 4, n = 7;
        var idxA = new[] { 0, 3, 3, 5, 6, 0 };
        var idxB = new[] { 1, 3, 2, 2, 6, 6 };
        var x = GradCheck.Rand(t * d, 1);
        var up = GradCheck.Rand(n * d, 2);
        var down = GradCheck.Rand(n * d, 3);
        using var s = Scope.Begin();
        var tUp = Tensor.FromArray(D, up, n, d); tUp.RequiresGrad = true;
        var tDown = Tensor.FromArray(D, down, n, d);
        var want = new double[n * d];
        foreach (var idx in new[] { idxA, idxB })
        {
            var g = Tensor.Full(D, 0.5f, t, 1, 2);
            var y = Peer.Ops.PeerExperts(Tensor.FromArray(D, x, t, d), Tensor.FromArray(D, idx, t, 1, 2), g, tDown, tUp);
            D.Tape.Backward(y, Tensor.Full(D, 1f, t, d));
            var gradUp = NumGrad(v => Experts(PeerMath.D(x), idx, Enumerable.Repeat(0.5, t * 2).ToArray(), PeerMath.D(down), v, t, d, 2, PeerActivation.Gelu).Sum(), PeerMath.D(up));
            for (int i = 0; i < want.Length; i++) want[i] += gradUp[i];
        }
        Assert.That(tUp.SparseGrad!.Real().Rows, Is.EqualTo(new[] { 0, 1, 2, 3, 5, 6 }));
        Assert.That(PeerReference.Densify(tUp.SparseGrad!, n, d), Is.EqualTo(want).Within(1e-4));
    }

    [TestCase(PeerRouter.Softmax)]
    [TestCase(PeerRouter.Sigmoid)]
    public void RouterMatchesReference(PeerRouter router)
    {
        int t = 3, h = 2, k = 4;
        var sc = GradCheck.Rand(t * h * k, 7, 3f);
        var r = GradCheck.Rand(t * h * k, 8);
        double[] Ref(double[] v)
        {
            var o = new double[v.Length];
            for (int grp = 0; grp < t * h; grp++)
            {
                var seg = v.Skip(grp * k).Take(k).ToArray();
                double max = seg.Max(), sum = seg.Sum(e => Math.Exp(e - max));
                for (int m = 0; m < k; m++)
                    o[grp * k + m] = router == PeerRouter.Sigmoid ? 1 / (1 + Math.Exp(-seg[m])) : Math.Exp(seg[m] - max) / sum;
            }
            return o;
        }
        using var s = Scope.Begin();
        var ts = Tensor.FromArray(D, sc, t, h, k); ts.RequiresGrad = true;
        var g = Peer.Ops.PeerRouterWeights(ts, router);
        Assert.That(g.ToArray(), Is.EqualTo(Ref(PeerMath.D(sc))).Within(1e-6));
        D.Tape.Backward(g, Tensor.FromArray(D, r, t, h, k));
        Assert.That(ts.Grad!.ToArray(), Is.EqualTo(NumGrad(v => Dot(Ref(v), PeerMath.D(r)), PeerMath.D(sc))).Within(1e-5));
    }

    [Test]
    public void TwoRunsGiveTheSameBits()
    {
        int t = 64, d = 16, n = 20;
        var x = GradCheck.Rand(t * d, 1);
        var idx = Ids(t * 8, n, 2); // heavy reuse: ~25 slots per row
        var g = GradCheck.Rand(t * 8, 3);
        var table = GradCheck.Rand(n * d, 4);
        (float[], int[], float[], float[]) Run()
        {
            using var s = Scope.Begin();
            var tx = Tensor.FromArray(D, x, t, d); tx.RequiresGrad = true;
            var td = Tensor.FromArray(D, table, n, d); td.RequiresGrad = true;
            var tu = Tensor.FromArray(D, table, n, d); tu.RequiresGrad = true;
            var y = Peer.Ops.PeerExperts(tx, Tensor.FromArray(D, idx, t, 2, 4), Tensor.FromArray(D, g, t, 2, 4), td, tu);
            D.Tape.Backward(y, Tensor.FromArray(D, x, t, d));
            return (y.ToArray(), td.SparseGrad!.Real().Rows, td.SparseGrad!.Real().Values, tu.SparseGrad!.Real().Values);
        }
        var a = Run();
        var b = Run();
        Assert.That(b.Item1, Is.EqualTo(a.Item1));
        Assert.That(b.Item2, Is.EqualTo(a.Item2));
        Assert.That(b.Item3.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Item3.Select(BitConverter.SingleToInt32Bits)));
        Assert.That(b.Item4.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(a.Item4.Select(BitConverter.SingleToInt32Bits)));
    }

    [Test]
    public void BadInputsNameArgumentAndRule()
    {
        using var s = Scope.Begin();
        var x = Tensor.Zeros(D, 2, 4);
        var tab = Tensor.Zeros(D, 5, 4);
        var g = Tensor.Zeros(D, 2, 1, 2);
        var checkd = D.ChecksIndices ? D : Devices.Cpu; // ids are checked on the host only where that stalls nothing
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PeerExperts(Tensor.Zeros(checkd, 2, 4), Tensor.FromArray(checkd, new[] { 0, 1, 5, 2 }, 2, 1, 2),
            Tensor.Zeros(checkd, 2, 1, 2), Tensor.Zeros(checkd, 5, 4), Tensor.Zeros(checkd, 5, 4)))!.Message, Does.Contain("1 ids outside [0, 5)"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PeerExperts(Tensor.Zeros(checkd, 2, 4), Tensor.FromArray(checkd, new[] { 0, 1, -1, 2 }, 2, 1, 2),
            Tensor.Zeros(checkd, 2, 1, 2), Tensor.Zeros(checkd, 5, 4), Tensor.Zeros(checkd, 5, 4)))!.Message, Does.Contain("indices"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PeerExperts(x, Tensor.ZerosInt(D, 2, 1, 2), g, Tensor.Zeros(D, 5, 3), Tensor.Zeros(D, 5, 3)))!.Message,
            Does.Contain("down").And.Contain("d = 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PeerExperts(x, Tensor.ZerosInt(D, 2, 1, 2), Tensor.Zeros(D, 2, 2, 1), tab, tab))!.Message,
            Does.Contain("weights"));
    }

    // Where ids are not checked on the host (GPUs, OpenCL; DeviceOptions.CheckIndices off), an id outside [0, N) is never used to read:
    // its token's output and gradients are NaN, other tokens are untouched, and the tables get no gradient from it.
    [Test]
    public void UncheckedBadIdsGiveNaNTokensAndReadNothingOutside()
    {
        Assume.That(!D.ChecksIndices, "this device checks ids on the host");
        int t = 3, d = 4, n = 5;
        var ids = new[] { 0, 1, 4, 2, n, -7 }; // token 0 fine, token 1 fine, token 2 has two bad ids
        float[] hx = GradCheck.Rand(t * d, 31), hg = GradCheck.Rand(t * 2, 32), table = GradCheck.Rand(n * d, 33);
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, hx, t, d); x.RequiresGrad = true;
        var g = Tensor.FromArray(D, hg, t, 1, 2); g.RequiresGrad = true;
        var down = Tensor.FromArray(D, table, n, d); down.RequiresGrad = true;
        var up = Tensor.FromArray(D, table, n, d); up.RequiresGrad = true;
        var y = Peer.Ops.PeerExperts(x, Tensor.FromArray(D, ids, t, 1, 2), g, down, up);
        D.Tape.Backward(y, Tensor.Full(D, 1f, t, d));
        var got = y.ToArray();
        Assert.That(got.Take(2 * d).All(float.IsFinite), "tokens with valid ids");
        Assert.That(got.Skip(2 * d).All(float.IsNaN), "the token with bad ids");
        Assert.That(x.Grad!.ToArray().Take(2 * d).All(float.IsFinite) && x.Grad!.ToArray().Skip(2 * d).All(float.IsNaN), "dx");
        Assert.That(g.Grad!.ToArray().Take(4).All(float.IsFinite) && g.Grad!.ToArray().Skip(4).All(float.IsNaN), "dg");
        var rows = down.SparseGrad!.Real().Rows;
        var values = down.SparseGrad!.Real().Values;
        for (int r = 0; r < rows.Length; r++)
            if (rows[r] is >= 0 and < 5) Assert.That(values.Skip(r * d).Take(d).All(float.IsFinite), $"row {rows[r]}");
            else Assert.That(values.Skip(r * d).Take(d).All(v => v == 0f), $"a row outside the table ({rows[r]}) gets nothing");
    }
}
