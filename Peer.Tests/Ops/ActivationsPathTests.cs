namespace Peer.Tests.Ops;

/// <summary>The CPU activation bodies against the portable kernels (the definition), both launched directly on the CPU
/// accelerator: each element runs the same ActivationMath function, so the outputs must be identical bits. The public ops
/// (which take the CPU path there) are checked against double references and finite differences in ActivationsTests.</summary>
public sealed class ActivationsPathTests
{
    static Device D => Devices.Cpu;

    static int[] Bits(Tensor t) => t.ToArray().Select(BitConverter.SingleToInt32Bits).ToArray();

    // Inputs across both branches of Erf (|x/sqrt 2| below and above 0.75), the tails, and the special values.
    static float[] Inputs(int n, int seed)
    {
        var x = GradCheck.Rand(n, seed, 8f);
        float[] special = [0f, -0f, 1.0606601f, -1.0606601f, 30f, -30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 1e-30f, -1e-30f];
        for (int i = 0; i < Math.Min(n, special.Length); i++) x[i * (n / Math.Min(n, special.Length))] = special[i];
        return x;
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(1001)]
    [TestCase(4099)]
    public void BodiesAreBitIdentical(int n)
    {
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, Inputs(n, n), n);
        var g = Tensor.FromArray(D, GradCheck.Rand(n, n + 1, 2f), n);
        var fast = D.Get(static d => new ActivationCpuKernels(d));
        var portable = D.Get(static d => new ActivationKernels(d));
        string[] names = ["GeluExact", "GeluTanh", "Relu", "Silu"];
        foreach (var w in new[] { D.Split(n), new Work(n, 3, 5), new Work(n, 2, 1) })
            for (int act = 0; act < names.Length; act++)
            {
                var (y1, y2, d1, d2) = (Tensor.Empty(D, DType.F32, n), Tensor.Empty(D, DType.F32, n), Tensor.Empty(D, DType.F32, n), Tensor.Empty(D, DType.F32, n));
                fast.Forward(w.Workers, w, act, x.View, y1.View);
                portable.Forward[act](w.Workers, w, x.View, y2.View);
                fast.Backward(w.Workers, w, act, x.View, g.View, d1.View);
                portable.Backward[act](w.Workers, w, x.View, g.View, d2.View);
                Assert.That(Bits(y1), Is.EqualTo(Bits(y2)), $"{names[act]} forward, workers {w.Workers}, chunk {w.Chunk}");
                Assert.That(Bits(d1), Is.EqualTo(Bits(d2)), $"{names[act]} backward, workers {w.Workers}, chunk {w.Chunk}");
            }
    }

    [Test]
    public void PublicGeluTakesTheCpuPathWithThePortableBits()
    {
        using var s = Scope.Begin();
        int n = 517;
        var x = Tensor.FromArray(D, Inputs(n, 3), 11, 47);
        x.RequiresGrad = true;
        var hg = GradCheck.Rand(n, 4);
        var y = Peer.Ops.Gelu(x);
        D.Tape.Backward(y, Tensor.FromArray(D, hg, 11, 47));
        var portable = D.Get(static d => new ActivationKernels(d));
        var g = Tensor.FromArray(D, hg, n);
        var (y2, d2) = (Tensor.Empty(D, DType.F32, n), Tensor.Empty(D, DType.F32, n));
        var w = D.Split(n);
        portable.Forward[0](w.Workers, w, x.View, y2.View);
        portable.Backward[0](w.Workers, w, x.View, g.View, d2.View);
        Assert.That(Bits(y), Is.EqualTo(Bits(y2)), "forward");
        Assert.That(Bits(x.Grad!), Is.EqualTo(Bits(d2)), "backward");
    }
}
