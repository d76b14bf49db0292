namespace Peer.Tests.Ops.Cpu;

/// <summary>The fused residual norm's CPU bodies (loaded on <see cref="Devices.Cpu"/> and <see cref="Devices.CpuNarrow"/>) against its
/// portable kernels (the definition, loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator.</summary>
public sealed class ResidualNormCpuTests
{
    static Device P => Devices.CpuPortable;

    sealed record Outputs(float[] Sum, float[] Y, float[] Mean, float[] Rstd, float[] Da, float[] Db, float[] RowY, float[] RowDx);

    // The fused kernels as device d's launcher loads them, and the row norm's own kernels on the fused sum (RowY, RowDx) for
    // comparison: the fused kernels run the row norm's code of that device on the sum.
    static Outputs Run(Device d, NormShape shape, ResidualGrads f, float[] hx, float[] hr, float[] hw, float[] hb, float[] hgy, float[] hgs, int rows, int cols)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new ResidualNormKernels(d));
        var norms = d.Get(static d => new NormKernels(d));
        Tensor T(float[] h, params int[] shape) => Tensor.FromArray(d, h, shape);
        Tensor Empty(params int[] shape) => Tensor.Empty(d, DType.F32, shape);
        var (x, r, w, b, gy, gs) = (T(hx, rows, cols), T(hr, rows, cols), T(hw, cols), T(hb, cols), T(hgy, rows, cols), T(hgs, rows, cols));
        var (sum, y, mean, rstd) = (Empty(rows, cols), Empty(rows, cols), Empty(Math.Max(rows, 1)), Empty(Math.Max(rows, 1)));
        var (da, db, rowY, rowDx) = (Empty(rows, cols), Tensor.Zeros(d, rows, cols), Empty(rows, cols), Empty(rows, cols));
        var work = d.Split(rows);
        k.Forward(work.Workers, work, shape, x.View, r.View, w.View, b.View, sum.View, y.View, mean.View, rstd.View);
        k.Backward(work.Workers, work, shape, f, sum.View, w.View, gy.View, gs.View, mean.View, rstd.View, da.View, db.View);
        var (m2, r2) = (Empty(rows), Empty(rows));
        norms.RowForward(work.Workers, work, shape, sum.View, w.View, b.View, rowY.View, m2.View, r2.View);
        norms.RowBackward(work.Workers, work, shape, sum.View, w.View, gy.View, mean.View, rstd.View, rowDx.View);
        return new Outputs(sum.ToArray(), y.ToArray(), mean.ToArray(), rstd.ToArray(), da.ToArray(), db.ToArray(), rowY.ToArray(), rowDx.ToArray());
    }

    // Odd sizes: one row or column, widths below, at and across the 8-lane width with scalar tails; and every combination of
    // the gradients present (normed output, sum) and of the second copy.
    [Test]
    public void SimdBodiesAgreeWithPortableKernels([Values(1, 7, 33)] int rows, [Values(1, 5, 8, 13, 37)] int cols,
        [Values(0, 1, 2)] int grads, [Values] bool second, [Values] bool center)
    {
        foreach (var d in new[] { Devices.Cpu, Devices.CpuNarrow })
        {
            Assume.That(d.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
            var hx = GradCheck.Rand(rows * cols, rows + cols, 3f).Select(v => v + 2f).ToArray();
            var hr = GradCheck.Rand(rows * cols, 2 * cols + 1);
            var hw = GradCheck.Rand(cols, 5, 2f);
            var hb = GradCheck.Rand(cols, 6);
            var hgy = GradCheck.Rand(rows * cols, 7 * cols);
            var hgs = GradCheck.Rand(rows * cols, 8 * cols);
            var shape = new NormShape(cols, 1e-5f, center, center);
            var f = new ResidualGrads(normGrad: grads != 1, sumGrad: grads != 0, second);
            var fast = Run(d, shape, f, hx, hr, hw, hb, hgy, hgs, rows, cols);
            var portable = Run(P, shape, f, hx, hr, hw, hb, hgy, hgs, rows, cols);

            // The sum is one addition per element on both paths: identical bits.
            Assert.That(fast.Sum, Is.EqualTo(portable.Sum), "sum");
            // On each device the fused kernels compute the row norm's values on the sum: identical bits to that device's row
            // norm kernels; how far the row norm's CPU body may be from its portable kernel is NormsCpuTests' bound.
            foreach (var o in new[] { fast, portable })
            {
                Assert.That(o.Y, Is.EqualTo(o.RowY), "normed output against the row norm on the sum");
                var want = new float[rows * cols];
                for (int i = 0; i < want.Length; i++) want[i] = f.NormGrad == 0 ? hgs[i] : f.SumGrad != 0 ? hgs[i] + o.RowDx[i] : o.RowDx[i];
                Assert.That(o.Da, Is.EqualTo(want), "gradient: gs + the row norm's dx");
                Assert.That(o.Db, Is.EqualTo(second ? want : new float[rows * cols]), "the second copy, written only when asked for");
            }
            // Without the norm's gradient the backward copies gs: identical bits on both paths.
            if (f.NormGrad == 0) Assert.That(fast.Da, Is.EqualTo(portable.Da), "gs alone");
        }
    }

    // The public op's fused-versus-unfused agreement (ResidualNormTests) on the portable kernels and on the 256-bit bodies.
    [Test]
    public void PortableAndNarrowDevicesAgreeWithTheirUnfusedOps([Values] bool layerNorm)
    {
        foreach (var d in new[] { Devices.CpuPortable, Devices.CpuNarrow })
        {
            var fused = ResidualNormTests.FusedAndUnfused(d, layerNorm, fused: true);
            var unfused = ResidualNormTests.FusedAndUnfused(d, layerNorm, fused: false);
            for (int i = 0; i < fused.Length; i++) Assert.That(fused[i], Is.EqualTo(unfused[i]), $"{d.Name}: {ResidualNormTests.OutputNames[i]}");
        }
    }
}
