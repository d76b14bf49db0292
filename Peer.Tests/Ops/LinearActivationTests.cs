using MathNet.Numerics;

namespace Peer.Tests.Ops;

/// <summary>The fused linear + activation ops (<see cref="Peer.Ops.LinearGelu"/>, <see cref="Peer.Ops.LinearRelu"/>,
/// <see cref="Peer.Ops.LinearSilu"/>): against a double-precision host reference, finite differences, the unfused Linear then
/// activation, and bad input.</summary>
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class LinearActivationTests(string backend)
{
    Device D => Devices.Get(backend);
    const double U = 1.0 / (1 << 24); // float32 unit roundoff

    public enum Act { Gelu, GeluTanh, Relu, Silu }

    internal static Tensor Fused(Act act, Tensor x, Tensor w, Tensor b) => act switch
    {
        Act.Gelu => Peer.Ops.LinearGelu(x, w, b),
        Act.GeluTanh => Peer.Ops.LinearGelu(x, w, b, GeluApproximation.Tanh),
        Act.Relu => Peer.Ops.LinearRelu(x, w, b),
        _ => Peer.Ops.LinearSilu(x, w, b),
    };

    internal static Tensor Unfused(Act act, Tensor x, Tensor w, Tensor b)
    {
        var z = Peer.Ops.Linear(x, w, b);
        return act switch
        {
            Act.Gelu => Peer.Ops.Gelu(z),
            Act.GeluTanh => Peer.Ops.Gelu(z, GeluApproximation.Tanh),
            Act.Relu => Peer.Ops.Relu(z),
            _ => Peer.Ops.Silu(z),
        };
    }

    static double Reference(Act act, double z) => act switch
    {
        Act.Gelu => 0.5 * z * (1 + SpecialFunctions.Erf(z / Math.Sqrt(2))),
        Act.GeluTanh => 0.5 * z * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z))),
        Act.Relu => Math.Max(z, 0),
        _ => z / (1 + Math.Exp(-z)),
    };

    [Test]
    public void MatchesDoubleReference([Values] Act act)
    {
        using var s = Scope.Begin();
        int rows = 2 * 5, inF = 13, outF = 11;
        var x = GradCheck.Rand(rows * inF, 1, 2f);
        var w = GradCheck.Rand(outF * inF, 2);
        var b = GradCheck.Rand(outF, 3);
        var y = Fused(act, Tensor.FromArray(D, x, 2, 5, inF), Tensor.FromArray(D, w, outF, inF), Tensor.FromArray(D, b, outF));
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 5, outF }));
        var got = y.ToArray();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < outF; j++)
            {
                double z = b[j], abs = Math.Abs(b[j]);
                for (int k = 0; k < inF; k++) { z += (double)x[r * inF + k] * w[j * inF + k]; abs += Math.Abs((double)x[r * inF + k] * w[j * inF + k]); }
                // z in float errs by at most (in + 1) u Σ|terms|; each activation's slope is below 1.13, and its own float
                // evaluation adds a few u of |z| (erf's fit 1.5e-7 absolute for the exact GELU).
                double tol = 1.13 * (inF + 1) * U * abs + 8 * U * Math.Abs(z) + 1.5e-7 * Math.Abs(z) + 1e-7;
                Assert.That(got[r * outF + j], Is.EqualTo(Reference(act, z)).Within(tol), $"y[{r}, {j}]");
            }
    }

    [Test]
    public void GradientsMatchFiniteDifferences([Values(Act.Gelu, Act.GeluTanh, Act.Silu)] Act act) =>
        GradCheck.Check(D, t => Fused(act, t[0], t[1], t[2]),
            [(GradCheck.Rand(2 * 3 * 4, 4), [2, 3, 4]), (GradCheck.Rand(5 * 4, 5), [5, 4]), (GradCheck.Rand(5, 6), [5])]);

    // Outputs at least Ops.NarrowColumns wide per worker take the fused column kernel for the gradient, narrower ones the
    // element-wise map and the column sums (Linear.cs): both against finite differences (on 2 to 8 CPU workers the wide case is
    // the fused kernel; where the device has more workers, both cases are the pair).
    [Test]
    public void GradientsMatchFiniteDifferencesNarrowAndWide([Values] bool wide)
    {
        int outF = wide ? Math.Min(Peer.Ops.NarrowColumns * D.Split(1 << 20).Workers, 256) : 3;
        GradCheck.Check(D, t => Fused(Act.Gelu, t[0], t[1], t[2]),
            [(GradCheck.Rand(3 * 4, 9), [3, 4]), (GradCheck.Rand(outF * 4, 10), [outF, 4]), (GradCheck.Rand(outF, 11), [outF])]);
    }

    [Test]
    public void ReluGradientsMatchFiniteDifferencesAwayFromTheKink()
    {
        // Biases of ±2 and |x W| <= 4 * 0.3 * 0.5 keep every pre-activation at least 1.4 from 0, so the finite differences (step
        // 1e-2) never straddle the kink, and both sides of it (gradient 0 and 1) are checked.
        var bias = Enumerable.Range(0, 6).Select(j => j % 2 == 0 ? 2f : -2f).ToArray();
        GradCheck.Check(D, t => Peer.Ops.LinearRelu(t[0], t[1], t[2]),
            [(GradCheck.Rand(3 * 4, 7, 0.3f), [3, 4]), (GradCheck.Rand(6 * 4, 8, 0.5f), [6, 4]), (bias, [6])]);
    }

    // Against Linear then the activation, on this device, with the same output gradient. The portable kernels do the same float
    // operations in the same order as the unfused ones (the sum z + b, act(z) and g act'(z) per element, the bias gradient
    // summed over the rows in order), and so do the CPU bodies, which call the same bias and activation bodies: identical bits,
    // except for the exact GELU's CPU body, whose eight lanes and scalar tail fall on other elements when the work is split by
    // rows rather than by elements (ActivationsCpu.cs: within 5 u |z| forward and 9 u |g| backward per element; the matmuls and
    // the bias gradient then sum such differences, bounded below by the sums of |terms| they carry).
    [Test]
    public void AgreesWithTheUnfusedOps([Values] Act act)
    {
        var fused = FusedAndUnfused(D, act, fused: true);
        var unfused = FusedAndUnfused(D, act, fused: false);
        bool exact = act != Act.Gelu || D.Backend != Backend.Cpu || D.CpuBodyBits < 256;
        Compare(fused, unfused, exact);
    }

    internal const int Rows = 29, In = 12, Out = 21;
    internal static readonly string[] OutputNames = ["y", "dx", "dweight", "dbias"];

    // y and the gradients (OutputNames) of the fused op or of Linear then the activation on device d, with their sums of |terms|
    // (|z|; Σ|g W|; Σ|g x|; Σ|g|) for the bounds.
    internal static (float[][] Values, double[][] Scales) FusedAndUnfused(Device d, Act act, bool fused)
    {
        using var s = Scope.Begin();
        var hx = GradCheck.Rand(Rows * In, 21, 2f);
        var hw = GradCheck.Rand(Out * In, 22);
        var hg = GradCheck.Rand(Rows * Out, 24);
        var x = Tensor.FromArray(d, hx, Rows, In);
        var w = Tensor.FromArray(d, hw, Out, In);
        var hb = GradCheck.Rand(Out, 23);
        var b = Tensor.FromArray(d, hb, Out);
        foreach (var t in new[] { x, w, b }) t.RequiresGrad = true;
        var y = fused ? Fused(act, x, w, b) : Unfused(act, x, w, b);
        var hy = y.ToArray();
        d.Tape.Backward(y, Tensor.FromArray(d, hg, Rows, Out));
        var scales = new double[4][];
        scales[0] = new double[Rows * Out]; // |z|
        for (int r = 0; r < Rows; r++)
            for (int j = 0; j < Out; j++)
            {
                double z = hb[j];
                for (int k = 0; k < In; k++) z += (double)hx[r * In + k] * hw[j * In + k];
                scales[0][r * Out + j] = Math.Abs(z);
            }
        scales[1] = new double[Rows * In];
        scales[2] = new double[Out * In];
        scales[3] = new double[Out];
        for (int r = 0; r < Rows; r++)
            for (int j = 0; j < Out; j++)
            {
                double g = Math.Abs(hg[r * Out + j]);
                scales[3][j] += g;
                for (int k = 0; k < In; k++)
                {
                    scales[1][r * In + k] += g * Math.Abs(hw[j * In + k]);
                    scales[2][j * In + k] += g * Math.Abs(hx[r * In + k]);
                }
            }
        return ([hy, x.Grad!.ToArray(), w.Grad!.ToArray(), b.Grad!.ToArray()], scales);
    }

    internal static void Compare((float[][] Values, double[][] Scales) a, (float[][] Values, double[][] Scales) b, bool exact)
    {
        for (int i = 0; i < OutputNames.Length; i++)
        {
            if (exact)
            {
                Assert.That(a.Values[i], Is.EqualTo(b.Values[i]), OutputNames[i]);
                continue;
            }
            // Forward 5 u |z| per element; backward 9 u |g| per element of dz (times act' <= 1.13, already in |g|'s bound), summed
            // over Out (dx) or Rows (dweight, dbias) terms whose float sums add (terms + 1) u of their magnitudes.
            double perTerm = i == 0 ? 5 * U : (9 + (i == 1 ? Out : Rows) + 1) * 1.13 * U;
            for (int e = 0; e < a.Values[i].Length; e++)
                Assert.That(a.Values[i][e], Is.EqualTo(b.Values[i][e]).Within(perTerm * a.Scales[i][e] + 1e-30), $"{OutputNames[i]}[{e}]");
        }
    }

    [Test]
    public void BadInputNamesTheArgument()
    {
        using var s = Scope.Begin();
        var x = Tensor.Zeros(D, 3, 4);
        var w = Tensor.Zeros(D, 5, 4);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.LinearGelu(Tensor.Zeros(D, 3, 6), w, Tensor.Zeros(D, 5)))!.ParamName, Is.EqualTo("x"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.LinearRelu(x, w, Tensor.Zeros(D, 4)))!.ParamName, Is.EqualTo("bias"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.LinearSilu(x, Tensor.Zeros(D, 20), Tensor.Zeros(D, 5)))!.ParamName, Is.EqualTo("weight"));
        Assert.Throws<ArgumentNullException>(() => Peer.Ops.LinearGelu(x, w, null!));
    }

    [Test]
    public void ZeroRowsGiveAZeroBiasGradient()
    {
        using var s = Scope.Begin();
        var w = Tensor.FromArray(D, GradCheck.Rand(15, 1), 5, 3);
        var b = Tensor.FromArray(D, GradCheck.Rand(5, 2), 5);
        b.RequiresGrad = true;
        var y = Peer.Ops.LinearGelu(Tensor.Zeros(D, 0, 3), w, b);
        D.Tape.Backward(y, Tensor.Zeros(D, 0, 5));
        Assert.That(b.Grad!.ToArray(), Is.EqualTo(new float[5]));
    }
}
