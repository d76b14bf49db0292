namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD bias bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition, loaded
/// on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator.</summary>
public sealed class LinearCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    // The bias add on hy [rows, cols], then the bias gradient (column sums) of the result, as device d's launcher loads them.
    static (float[] Y, float[] Db) Run(Device d, float[] hy, float[] hbias, int rows, int cols)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new LinearKernels(d));
        var y = Tensor.FromArray(d, hy, rows, cols);
        var bias = Tensor.FromArray(d, hbias, cols);
        var rowWork = d.Split(rows);
        if (rows > 0) k.AddBias(rowWork.Workers, rowWork, y.View, bias.View, cols);
        var db = Tensor.Empty(d, DType.F32, cols);
        var colWork = d.Split(cols);
        k.ColumnSums(colWork.Workers, colWork, y.View, db.View, rows);
        return (y.ToArray(), db.ToArray());
    }

    // Odd sizes: one row or column, widths below, at and across the 8-lane width with scalar tails; no rows at all.
    [TestCase(1, 1)]
    [TestCase(7, 5)]
    [TestCase(33, 8)]
    [TestCase(9, 13)]
    [TestCase(130, 288)]
    [TestCase(3, 37)]
    [TestCase(0, 19)]
    public void SimdBodiesAgreeWithPortableKernelsBitForBit(int rows, int cols)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        var hy = GradCheck.Rand(rows * cols, rows + 3 * cols, 3f);
        var hbias = GradCheck.Rand(cols, 5);
        var (y1, db1) = Run(D, hy, hbias, rows, cols);
        var (y2, db2) = Run(P, hy, hbias, rows, cols);
        // One IEEE addition per element on both paths: identical bits.
        Assert.That(y1, Is.EqualTo(y2), "bias add");
        // Each column summed over the rows in the same order with plain additions: identical bits.
        Assert.That(db1, Is.EqualTo(db2), "bias gradient");
        // And against the host in double: a float32 sum of `rows` terms errs by at most rows u Σ|terms|.
        for (int j = 0; j < cols; j++)
        {
            double want = 0, abs = 0;
            for (int r = 0; r < rows; r++) { want += y2[r * cols + j]; abs += Math.Abs(y2[r * cols + j]); }
            Assert.That(db1[j], Is.EqualTo(want).Within(rows * abs / (1 << 24) + 1e-30), $"column {j}");
        }
    }

    [Test]
    public void PublicOpOverZeroRowsGivesAZeroBiasGradient()
    {
        // The bias gradient of an empty batch reaches the body with an empty g: it must write zeros, not read g.
        using var s = Scope.Begin();
        var x = Tensor.Zeros(D, 0, 3);
        var weight = Tensor.FromArray(D, GradCheck.Rand(15, 1), 5, 3);
        var bias = Tensor.FromArray(D, GradCheck.Rand(5, 2), 5);
        bias.RequiresGrad = true;
        var y = Peer.Ops.Linear(x, weight, bias);
        D.Tape.Backward(y, Tensor.Zeros(D, 0, 5));
        Assert.That(bias.Grad!.ToArray(), Is.EqualTo(new float[5]));
    }

    // The fused bias + activation kernels (act: the activation's number, GeluExact, GeluTanh, Relu, Silu) as device d loads them.
    static (float[] Z, float[] Y, float[] Dz, float[] Db) RunFused(Device d, int act, float[] hz, float[] hbias, float[] hg, int rows, int cols)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new LinearKernels(d));
        var z = Tensor.FromArray(d, hz, rows, cols);
        var bias = Tensor.FromArray(d, hbias, cols);
        var g = Tensor.FromArray(d, hg, rows, cols);
        var (y, dz, db) = (Tensor.Empty(d, DType.F32, rows, cols), Tensor.Empty(d, DType.F32, rows, cols), Tensor.Empty(d, DType.F32, cols));
        var rowWork = d.Split(rows);
        if (rows > 0) k.BiasActivation[act](rowWork.Workers, rowWork, z.View, bias.View, y.View, cols);
        var colWork = d.Split(cols);
        k.BiasActivationBackward[act](colWork.Workers, colWork, z.View, g.View, dz.View, db.View, rows);
        return (z.ToArray(), y.ToArray(), dz.ToArray(), db.ToArray());
    }

    [Test]
    public void FusedBiasActivationBodiesAgreeWithPortableKernels([Values(0, 1, 2, 3)] int act,
        [Values(1, 7, 33, 0)] int rows, [Values(1, 5, 8, 13, 37)] int cols)
    {
        const double U = 1.0 / (1 << 24);
        foreach (var d in new[] { D, Devices.CpuNarrow })
        {
            Assume.That(d.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
            var hz = GradCheck.Rand(rows * cols, rows + 3 * cols, 4f);
            var hbias = GradCheck.Rand(cols, 5);
            var hg = GradCheck.Rand(rows * cols, 9);
            var fast = RunFused(d, act, hz, hbias, hg, rows, cols);
            var portable = RunFused(P, act, hz, hbias, hg, rows, cols);
            // The bias add is one IEEE addition per element on both paths: identical bits.
            Assert.That(fast.Z, Is.EqualTo(portable.Z), "z + bias");
            if (act != 0)
            {
                // The other activations' bodies call ActivationMath per element, and the columns are summed in row order: identical bits.
                Assert.That(fast.Y, Is.EqualTo(portable.Y), "y");
                Assert.That(fast.Dz, Is.EqualTo(portable.Dz), "dz");
                Assert.That(fast.Db, Is.EqualTo(portable.Db), "dbias");
                continue;
            }
            // The exact GELU's eight-lane exponential (ActivationsCpu.cs): within 5 u |z| forward and 9 u |g| backward per element;
            // the bias gradient sums those over the rows, adding (rows + 1) u of Σ|dz| for the sums' own rounding.
            for (int i = 0; i < rows * cols; i++)
            {
                Assert.That(fast.Y[i], Is.EqualTo(portable.Y[i]).Within(5 * U * Math.Abs(portable.Z[i]) + 1e-30), $"y[{i}]");
                Assert.That(fast.Dz[i], Is.EqualTo(portable.Dz[i]).Within(9 * U * Math.Abs(hg[i]) + 1e-30), $"dz[{i}]");
            }
            for (int j = 0; j < cols; j++)
            {
                double abs = 0;
                for (int r = 0; r < rows; r++) abs += Math.Abs(hg[r * cols + j]) * 1.13 + Math.Abs(portable.Dz[r * cols + j]);
                Assert.That(fast.Db[j], Is.EqualTo(portable.Db[j]).Within((rows + 10) * U * abs + 1e-30), $"dbias[{j}]");
            }
        }
    }
}
