using MathNet.Numerics;

namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ActivationsTests(string backend)
{
    Device D => Devices.Get(backend);

    /// <summary>Erf's accuracy: fit error 2e-9 plus float32 rounding of results near 1 (ulp 6e-8) and of exp.</summary>
    const double ErfAbs = 1.5e-7;

    static double GeluRef(double x) => 0.5 * x * (1 + SpecialFunctions.Erf(x / Math.Sqrt(2)));
    static double GeluTanhRef(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    static double SiluRef(double x) => x / (1 + Math.Exp(-x));

    [Test]
    public void ErfMatchesMathNetOnADenseGrid()
    {
        double worst = 0, worstRelSmall = 0;
        for (int i = -120000; i <= 120000; i++)
        {
            double x = i * 5e-5;
            double want = SpecialFunctions.Erf((float)x);
            double got = ActivationMath.Erf((float)x);
            worst = Math.Max(worst, Math.Abs(got - want));
            if (x != 0 && Math.Abs(x) < 0.5) worstRelSmall = Math.Max(worstRelSmall, Math.Abs(got - want) / Math.Abs(want));
        }
        Assert.That(worst, Is.LessThanOrEqualTo(ErfAbs));
        Assert.That(worstRelSmall, Is.LessThanOrEqualTo(1e-6), "near 0 erf keeps float relative accuracy");
        Assert.That(ActivationMath.Erf(10f), Is.EqualTo(1f));
        Assert.That(ActivationMath.Erf(-10f), Is.EqualTo(-1f));
        Assert.That(ActivationMath.Erf(float.PositiveInfinity), Is.EqualTo(1f));
    }

    [Test]
    public void ForwardMatchesDoubleReference()
    {
        using var s = Scope.Begin();
        var x = Enumerable.Range(0, 2001).Select(i => (i - 1000) * 0.008f).Concat([0f, -1e-3f, 1e-3f, 30f, -30f]).ToArray();
        var t = Tensor.FromArray(D, x);
        void Expect(Tensor y, Func<double, double> f, double tol)
        {
            var got = y.ToArray();
            for (int i = 0; i < x.Length; i++)
                Assert.That(got[i], Is.EqualTo(f(x[i])).Within(tol * (1 + Math.Abs(f(x[i])))), $"x = {x[i]}");
        }
        // |x| <= 8 and erf error <= 1.5e-7: GELU error <= 0.5 |x| 1.5e-7 + float rounding of the result
        Expect(Peer.Ops.Gelu(t), GeluRef, 1.2e-6);
        Expect(Peer.Ops.Gelu(t, GeluApproximation.Tanh), GeluTanhRef, 1e-6);
        Expect(Peer.Ops.Relu(t), v => Math.Max(v, 0), 0);
        Expect(Peer.Ops.Silu(t), SiluRef, 1e-6);
        // The two GELU forms are different functions: their gap reaches about 1e-3 around |x| ~ 2.
        var gap = Peer.Ops.Gelu(t).ToArray().Zip(Peer.Ops.Gelu(t, GeluApproximation.Tanh).ToArray(), (a, b) => Math.Abs(a - b)).Max();
        Assert.That(gap, Is.GreaterThan(1e-4));
    }

    [Test]
    public void ScalarDerivativesMatchDoubleDifferences()
    {
        for (double x = -6; x <= 6; x += 0.01)
        {
            const double h = 1e-5;
            Assert.That(ActivationMath.GeluExactGrad((float)x), Is.EqualTo((GeluRef(x + h) - GeluRef(x - h)) / (2 * h)).Within(1e-6), $"x = {x}");
            Assert.That(ActivationMath.GeluTanhGrad((float)x), Is.EqualTo((GeluTanhRef(x + h) - GeluTanhRef(x - h)) / (2 * h)).Within(1e-6), $"x = {x}");
            Assert.That(ActivationMath.SiluGrad((float)x), Is.EqualTo((SiluRef(x + h) - SiluRef(x - h)) / (2 * h)).Within(1e-6), $"x = {x}");
        }
    }

    [Test]
    public void GradientsMatchFiniteDifferences()
    {
        // ReLU is checked away from its kink (|x| >= 0.1 > the FD step).
        var x = GradCheck.Rand(40, 3, 3f);
        var away = x.Select(v => v >= 0 ? v + 0.1f : v - 0.1f).ToArray();
        GradCheck.Check(D, t => Peer.Ops.Gelu(t[0]), [(x, [5, 8])]);
        GradCheck.Check(D, t => Peer.Ops.Gelu(t[0], GeluApproximation.Tanh), [(x, [5, 8])]);
        GradCheck.Check(D, t => Peer.Ops.Silu(t[0]), [(x, [5, 8])]);
        GradCheck.Check(D, t => Peer.Ops.Relu(t[0]), [(away, [5, 8])]);
    }

    [Test]
    public void IntTensorIsRefused()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Gelu(Tensor.ZerosInt(D, 3)))!;
        Assert.That(e.Message, Does.Contain("x has dtype I32").And.Contain("expected F32"));
    }
}
