namespace Peer.Tests.Ops;

/// <summary>The fused residual norm (<see cref="Peer.Ops.AddLayerNorm"/>, <see cref="Peer.Ops.AddRMSNorm"/>): against a double-precision
/// host reference, finite differences through either output and both, the unfused add and norm bit for bit, and its bad input.</summary>
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ResidualNormTests(string backend)
{
    Device D => Devices.Get(backend);

    static (Tensor Sum, Tensor Normed) Fused(Tensor x, Tensor r, Tensor w, Tensor? b) =>
        b is null ? Peer.Ops.AddRMSNorm(x, r, w) : Peer.Ops.AddLayerNorm(x, r, w, b);

    [TestCase(true)]
    [TestCase(false)]
    public void MatchesDoubleReference(bool layerNorm)
    {
        using var s = Scope.Begin();
        int rows = 6, c = 19;
        var x = GradCheck.Rand(rows * c, 1, 3f).Select(v => v + 4f).ToArray(); // an offset that a one-pass variance would suffer from
        var r = GradCheck.Rand(rows * c, 2, 2f);
        var w = GradCheck.Rand(c, 3);
        var b = GradCheck.Rand(c, 4);
        var (sum, y) = Fused(Tensor.FromArray(D, x, 2, 3, c), Tensor.FromArray(D, r, 2, 3, c), Tensor.FromArray(D, w, c), layerNorm ? Tensor.FromArray(D, b, c) : null);
        Assert.That(sum.Shape, Is.EqualTo(new[] { 2, 3, c }));
        var hs = sum.ToArray();
        var hy = y.ToArray();
        for (int row = 0; row < rows; row++)
        {
            // The reference sums in double: the float sum of two floats is within half an ulp of it.
            var z = Enumerable.Range(0, c).Select(j => (double)x[row * c + j] + r[row * c + j]).ToArray();
            double mu = layerNorm ? z.Average() : 0, var = z.Select(v => (v - mu) * (v - mu)).Average();
            double rs = 1 / Math.Sqrt(var + (layerNorm ? 1e-5 : 1e-6));
            for (int j = 0; j < c; j++)
            {
                Assert.That(hs[row * c + j], Is.EqualTo(z[j]).Within(Math.Abs(z[j]) * 6e-8), $"sum [{row}, {j}]");
                Assert.That(hy[row * c + j], Is.EqualTo((z[j] - mu) * rs * w[j] + (layerNorm ? b[j] : 0)).Within(2e-5), $"normed [{row}, {j}]");
            }
        }
    }

    // Which outputs the checked scalar reads: the normed one alone, the sum alone, or both (sum ⊙ c + normed, c fixed).
    public enum Through { Normed, Sum, Both }

    [Test]
    public void LayerNormGradients([Values] Through through, [Values] bool residualConstant)
    {
        var c = GradCheck.Rand(4 * 6, 9);
        GradCheck.Check(D, t => Output(t, through, c, withBias: true),
            [(GradCheck.Rand(4 * 6, 1, 2f), [4, 6]), (GradCheck.Rand(4 * 6, 2), [4, 6]), (GradCheck.Rand(6, 3), [6]), (GradCheck.Rand(6, 4), [6])],
            constant: residualConstant ? new HashSet<int> { 1 } : null);
    }

    [Test]
    public void RMSNormGradients([Values] Through through)
    {
        var c = GradCheck.Rand(3 * 7, 8);
        GradCheck.Check(D, t => Output(t, through, c, withBias: false),
            [(GradCheck.Rand(3 * 7, 5, 2f), [3, 7]), (GradCheck.Rand(3 * 7, 6), [3, 7]), (GradCheck.Rand(7, 7), [7])]);
    }

    Tensor Output(Tensor[] t, Through through, float[] c, bool withBias)
    {
        var (sum, y) = Fused(t[0], t[1], t[2], withBias ? t[3] : null);
        return through switch
        {
            Through.Normed => y,
            Through.Sum => sum,
            _ => Peer.Ops.Add(Peer.Ops.Mul(sum, Tensor.FromArray(D, c, sum.Shape)), y),
        };
    }

    // The fused op against Add then the norm, on this device, with the same gradients arriving at the sum (gs) and the normed
    // output (gy). Forward: the sum is one addition per element and the norm runs Norms.cs's row code (or on the CPU accelerator
    // its CPU body) on it, as the unfused norm does. Backward: the norm's input gradient is the same row code, then gs + dx is one
    // addition, as the unfused accumulate (gs += 1 * dx) is, and the parameter gradients are the same kernel on the same data.
    // So every value is expected to be identical, not merely close.
    [TestCase(true)]
    [TestCase(false)]
    public void AgreesWithTheUnfusedOpsBitForBit(bool layerNorm)
    {
        var fused = FusedAndUnfused(D, layerNorm, fused: true);
        var unfused = FusedAndUnfused(D, layerNorm, fused: false);
        for (int i = 0; i < OutputNames.Length; i++) Assert.That(fused[i], Is.EqualTo(unfused[i]), OutputNames[i]);
    }

    internal static readonly string[] OutputNames = ["sum", "normed", "dx", "dr", "dweight", "dbias"];

    // The outputs and gradients (OutputNames) of the fused op, or of Add then the norm, on device d.
    internal static float[][] FusedAndUnfused(Device d, bool layerNorm, bool fused)
    {
        int rows = 37, c = 40;
        using var s = Scope.Begin();
        var x = Tensor.FromArray(d, GradCheck.Rand(rows * c, 11, 2f), rows, c);
        var r = Tensor.FromArray(d, GradCheck.Rand(rows * c, 12), rows, c);
        var w = Tensor.FromArray(d, GradCheck.Rand(c, 13, 2f), c);
        var b = Tensor.FromArray(d, GradCheck.Rand(c, 14), c);
        foreach (var t in new[] { x, r, w, b }) t.RequiresGrad = true;
        Tensor sum, y;
        if (fused) (sum, y) = Fused(x, r, w, layerNorm ? b : null);
        else
        {
            sum = Peer.Ops.Add(x, r);
            y = layerNorm ? Peer.Ops.LayerNorm(sum, w, b) : Peer.Ops.RMSNorm(sum, w);
        }
        // loss = Σ sum ⊙ gs + Σ y ⊙ gy: the multiplications' backward hands over gs and gy exactly (1 * g).
        var gs = Tensor.FromArray(d, GradCheck.Rand(rows * c, 15), rows, c);
        var gy = Tensor.FromArray(d, GradCheck.Rand(rows * c, 16), rows, c);
        var loss = Peer.Ops.Add(Peer.Ops.Sum(Peer.Ops.Mul(sum, gs)), Peer.Ops.Sum(Peer.Ops.Mul(y, gy)));
        d.Tape.Backward(loss);
        return [sum.ToArray(), y.ToArray(), x.Grad!.ToArray(), r.Grad!.ToArray(), w.Grad!.ToArray(), layerNorm ? b.Grad!.ToArray() : []];
    }

    [Test]
    public void BadInputNamesTheArgument()
    {
        using var s = Scope.Begin();
        var x = Tensor.Zeros(D, 3, 4);
        var w = Tensor.Zeros(D, 4);
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.AddLayerNorm(x, Tensor.Zeros(D, 3, 5), w, w))!;
        Assert.That(e.Message, Does.Contain("r").And.Contain("[3, 5]").And.Contain("[3, 4]"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.AddRMSNorm(x, x, Tensor.Zeros(D, 5)))!.ParamName, Is.EqualTo("weight"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.AddLayerNorm(x, x, w, Tensor.Zeros(D, 3)))!.ParamName, Is.EqualTo("bias"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.AddRMSNorm(x, x, w, eps: 0f))!.ParamName, Is.EqualTo("eps"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.AddRMSNorm(x, Tensor.ZerosInt(D, 3, 4), w))!.ParamName, Is.EqualTo("r"));
    }

    [Test]
    public void ADisposedSumWhoseNormTakesAGradientIsAClearError()
    {
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, GradCheck.Rand(8, 1), 2, 4);
        x.RequiresGrad = true;
        var (sum, y) = Peer.Ops.AddRMSNorm(x, Tensor.FromArray(D, GradCheck.Rand(8, 2), 2, 4), Tensor.Full(D, 1f, 4));
        sum.Dispose();
        var e = Assert.Throws<InvalidOperationException>(() => D.Tape.Backward(Peer.Ops.Sum(y)))!;
        Assert.That(e.Message, Does.Contain("sum output was disposed"));
    }
}
