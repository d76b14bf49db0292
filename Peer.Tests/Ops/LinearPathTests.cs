namespace Peer.Tests.Ops;

/// <summary>The CPU SIMD bias bodies against the portable kernels (the definition), both launched directly on the CPU accelerator.</summary>
public sealed class LinearPathTests
{
    static Device D => Devices.Cpu;

    // Odd sizes: one row or column, widths below, at and across the 8-lane width with scalar tails.
    [TestCase(1, 1)]
    [TestCase(7, 5)]
    [TestCase(33, 8)]
    [TestCase(9, 13)]
    [TestCase(130, 288)]
    [TestCase(3, 37)]
    public void SimdBodiesAgreeWithPortableKernelsBitForBit(int rows, int cols)
    {
        Assume.That(LinearCpu.IsSupported, "no 256-bit vector unit");
        using var s = Scope.Begin();
        var fast = D.Get(static d => new LinearCpuKernels(d));
        var portable = D.Get(static d => new LinearKernels(d));
        var hy = GradCheck.Rand(rows * cols, rows + 3 * cols, 3f);
        var bias = Tensor.FromArray(D, GradCheck.Rand(cols, 5), cols);
        var y1 = Tensor.FromArray(D, hy, rows, cols);
        var y2 = Tensor.FromArray(D, hy, rows, cols);
        var rowWork = D.Split(rows);
        fast.AddBias(rowWork.Workers, rowWork, y1.View, bias.View, cols);
        portable.AddBias(rowWork.Workers, rowWork, y2.View, bias.View, cols);
        // One IEEE addition per element on both paths: identical bits.
        Assert.That(y1.ToArray(), Is.EqualTo(y2.ToArray()), "bias add");

        var colWork = D.Split(cols);
        var db1 = Tensor.Empty(D, DType.F32, cols);
        var db2 = Tensor.Empty(D, DType.F32, cols);
        fast.ColumnSums(colWork.Workers, colWork, y2.View, db1.View, rows);
        portable.ColumnSums(colWork.Workers, colWork, y2.View, db2.View, rows);
        // Each column summed over the rows in the same order with plain additions: identical bits.
        Assert.That(db1.ToArray(), Is.EqualTo(db2.ToArray()), "bias gradient");
        // And against the host in double: a float32 sum of `rows` terms errs by at most rows u Σ|terms|.
        var got = db1.ToArray();
        var hy2 = y2.ToArray();
        for (int j = 0; j < cols; j++)
        {
            double want = 0, abs = 0;
            for (int r = 0; r < rows; r++) { want += hy2[r * cols + j]; abs += Math.Abs(hy2[r * cols + j]); }
            Assert.That(got[j], Is.EqualTo(want).Within(rows * abs / (1 << 24) + 1e-30), $"column {j}");
        }
    }
}
