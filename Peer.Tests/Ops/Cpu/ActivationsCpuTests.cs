namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU activation bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator. The public ops are checked against
/// double references and finite differences in ActivationsTests.</summary>
public sealed class ActivationsCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    const double U = 1.0 / (1 << 24); // float32 unit roundoff

    // The exact GELU's eight-lane body repeats ActivationMath's operations in order; only exp differs: Vector256.Exp is
    // within 3 u (relative) of MathF.Exp for normal results (measured over [-104, 0]: at most 2.83 u, 2 ulp). Then
    // r exp(-a^2) (at most 0.29) differs by 3u + 2 roundings, erf by <= 3 u, 1 + erf by <= 5 u with its rounding, and
    // y = (x/2)(1 + erf) by <= 2.5 u |x| + 2 u |y| <= 4.5 u |x|; allowed: 5 u |x|. Backward: 0.5 (1 + erf) differs by
    // <= 2.5 u, x phi(x) (at most 0.242) by 5 u of it, the sum's rounding by 2 u: dg by <= 6 u, dx = g dg by
    // <= 6 u |g| + 2 u |dx| <= 9 u |g|. Denormal exponentials add at most 1e-37 absolute. NaN must stay NaN.
    static void AssertGeluClose(float[] x, float[] g, float[] fast, float[] portable, bool backward, string what)
    {
        for (int i = 0; i < x.Length; i++)
        {
            if (float.IsNaN(portable[i]) || float.IsInfinity(portable[i]))
            {
                Assert.That(fast[i], Is.EqualTo(portable[i]), $"{what}: x = {x[i]:R}");
                continue;
            }
            double tol = (backward ? 9 * U * Math.Abs(g[i]) : 5 * U * Math.Abs(x[i])) + 1e-37;
            Assert.That(Math.Abs((double)fast[i] - portable[i]), Is.LessThanOrEqualTo(tol), $"{what}: x = {x[i]:R}, g = {g[i]:R}");
        }
    }

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
    public void BodiesAgreeWithPortableKernels(int n)
    {
        var (hx, hg) = (Inputs(n, n), GradCheck.Rand(n, n + 1, 2f));
        string[] names = ["GeluExact", "GeluTanh", "Relu", "Silu"];
        foreach (var w in new[] { D.Split(n), new Work(n, 3, 5), new Work(n, 2, 1) })
            for (int act = 0; act < names.Length; act++)
            {
                var (y1, d1) = Run(D, act, w, hx, hg);
                var (y2, d2) = Run(P, act, w, hx, hg);
                string what = $"{names[act]}, workers {w.Workers}, chunk {w.Chunk}";
                if (act == 0)
                {
                    AssertGeluClose(hx, hg, y1, y2, false, what + " forward");
                    AssertGeluClose(hx, hg, d1, d2, true, what + " backward");
                    continue;
                }
                // The other activations call the same ActivationMath function per element: identical bits.
                Assert.That(GradCheck.Bits(y1), Is.EqualTo(GradCheck.Bits(y2)), what + " forward");
                Assert.That(GradCheck.Bits(d1), Is.EqualTo(GradCheck.Bits(d2)), what + " backward");
            }
    }

    // The forward and backward kernels of activation `act` as device d's launcher loads them, over chunks w.
    static (float[] Y, float[] Dx) Run(Device d, int act, Work w, float[] hx, float[] hg)
    {
        using var s = Scope.Begin();
        int n = hx.Length;
        var k = d.Get(static d => new ActivationKernels(d));
        var (x, g) = (Tensor.FromArray(d, hx, n), Tensor.FromArray(d, hg, n));
        var (y, dx) = (Tensor.Empty(d, DType.F32, n), Tensor.Empty(d, DType.F32, n));
        k.Forward[act](w.Workers, w, x.View, y.View);
        k.Backward[act](w.Workers, w, x.View, g.View, dx.View);
        return (y.ToArray(), dx.ToArray());
    }

    [Test]
    public void PublicGeluAgreesWithThePortableKernelsOnADenseRange()
    {
        using var s = Scope.Begin();
        // Every 1/64 from -16 to 16 (both Erf branches and both tails), then the special values; 2059 elements, odd.
        var hx = Enumerable.Range(0, 2049).Select(i => (i - 1024) / 64f).Concat(Inputs(10, 3)).ToArray();
        int n = hx.Length;
        var x = Tensor.FromArray(D, hx, 29, 71);
        x.RequiresGrad = true;
        var hg = GradCheck.Rand(n, 4);
        var y = Peer.Ops.Gelu(x);
        D.Tape.Backward(y, Tensor.FromArray(D, hg, 29, 71));
        var (y2, d2) = Run(P, 0, P.Split(n), hx, hg);
        AssertGeluClose(hx, hg, y.ToArray(), y2, false, "forward");
        AssertGeluClose(hx, hg, x.Grad!.ToArray(), d2, true, "backward");
    }
}
