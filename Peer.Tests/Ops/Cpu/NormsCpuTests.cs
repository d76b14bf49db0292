namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD norm bodies (row norms, and batch norm) (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator; the public ops are checked against
/// double references in NormsTests.</summary>
public sealed class NormsCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;
    const double U = 1.0 / (1 << 24); // float32 unit roundoff

    sealed record Outputs(float[] Y, float[] Mean, float[] Rstd, float[] Dx, float[] Dw, float[] Db);

    // The three row kernels as device d's launcher loads them. The backward passes get the statistics `mean`, `rstd` given
    // (the portable ones), so that the differences between devices are the backward's own.
    static Outputs Run(Device d, NormShape shape, float[] hx, float[] hg, float[] hw, float[] hb, int rows, int cols, float[]? mean = null, float[]? rstd = null)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new NormKernels(d));
        var x = Tensor.FromArray(d, hx, rows, cols);
        var g = Tensor.FromArray(d, hg, rows, cols);
        var w = Tensor.FromArray(d, hw, cols);
        var b = Tensor.FromArray(d, hb, cols);
        var rowWork = d.Split(rows);
        var colWork = d.Split(cols);
        Tensor Empty(params int[] shape) => Tensor.Empty(d, DType.F32, shape);
        var (y, m, r) = (Empty(rows, cols), Empty(Math.Max(rows, 1)), Empty(Math.Max(rows, 1)));
        if (rows > 0) k.RowForward(rowWork.Workers, rowWork, shape, x.View, w.View, b.View, y.View, m.View, r.View);
        var (ms, rs) = mean is null ? (m, r) : (Tensor.FromArray(d, mean), Tensor.FromArray(d, rstd!));
        var (dx, dw, db) = (Empty(rows, cols), Empty(cols), Empty(cols));
        if (rows > 0) k.RowBackward(rowWork.Workers, rowWork, shape, x.View, w.View, g.View, ms.View, rs.View, dx.View);
        k.RowParams(colWork.Workers, colWork, x.View, g.View, ms.View, rs.View, dw.View, db.View, rows);
        return new Outputs(y.ToArray(), m.ToArray(), r.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray());
    }

    // Odd sizes: one row or column, widths below, at and across the 8-lane width with scalar tails; no rows at all.
    [TestCase(1, 1)]
    [TestCase(7, 5)]
    [TestCase(33, 8)]
    [TestCase(9, 13)]
    [TestCase(65, 96)]
    [TestCase(3, 37)]
    [TestCase(0, 11)]
    public void SimdBodiesAgreeWithPortableKernels(int rows, int cols)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        var hx = GradCheck.Rand(rows * cols, rows + cols, 3f).Select(v => v + 2f).ToArray();
        var hg = GradCheck.Rand(rows * cols, 7 * cols);
        var hw = GradCheck.Rand(cols, 5, 2f);
        var hb = GradCheck.Rand(cols, 6);
        foreach (bool center in new[] { true, false })
        {
            var shape = new NormShape(cols, 1e-5f, center, center);
            var portable = Run(P, shape, hx, hg, hw, hb, rows, cols);
            var fast = Run(D, shape, hx, hg, hw, hb, rows, cols, portable.Mean, portable.Rstd);

            // The parameter gradients sum each column in the same row order with the same operations: identical bits.
            Assert.That(fast.Dw, Is.EqualTo(portable.Dw), $"dweight, center {center}");
            Assert.That(fast.Db, Is.EqualTo(portable.Db), $"dbias, center {center}");

            // The row sums (mean, variance, Σg, Σg·xh) are taken in another order: each differs by at most (C + 1) u times
            // the row's mean of absolute terms on either path, and the elementwise maps add a few roundings; hence
            // rel = 2 (C + 6) u against the scale of each quantity (A: mean |x|, Ag: mean |g w|, Agx: mean |g w xh|).
            double rel = 2 * (cols + 6) * U;
            float[] mean = portable.Mean, rstd = portable.Rstd, fy = fast.Y, py = portable.Y, fdx = fast.Dx, pdx = portable.Dx;
            float[] fm = fast.Mean, fr = fast.Rstd;
            for (int r = 0; r < rows; r++)
            {
                double a = 0, ag = 0, agx = 0, rs = rstd[r];
                for (int j = 0; j < cols; j++)
                {
                    double xh = (hx[r * cols + j] - mean[r]) * rs, gw = (double)hg[r * cols + j] * hw[j];
                    a += Math.Abs(hx[r * cols + j]) / cols;
                    ag += Math.Abs(gw) / cols;
                    agx += Math.Abs(gw * xh) / cols;
                }
                Assert.That(fm[r], Is.EqualTo(mean[r]).Within(rel * a), $"mean of row {r}, center {center}");
                // rstd = (var + eps)^-1/2: relative error of var (scale A^2 rstd^2 through the mean) over 2, plus the root's
                Assert.That(fr[r], Is.EqualTo(rs).Within(rel * rs * (1 + a * a * rs * rs)), $"rstd of row {r}, center {center}");
                for (int j = 0; j < cols; j++)
                {
                    int i = r * cols + j;
                    double xh = Math.Abs((hx[i] - mean[r]) * rs);
                    // y = (x - mean) rstd w + b: the mean's error scaled by rstd |w|, rstd's relative error by |xh w|
                    double tolY = rel * (a * rs + xh * (1 + a * a * rs * rs) + 1) * Math.Abs(hw[j]) + rel;
                    Assert.That(fy[i], Is.EqualTo(py[i]).Within(tolY), $"y[{r}, {j}], center {center}");
                    double tolDx = rel * rs * (Math.Abs((double)hg[i] * hw[j]) + ag + xh * agx);
                    Assert.That(fdx[i], Is.EqualTo(pdx[i]).Within(tolDx + 1e-7), $"dx[{r}, {j}], center {center}");
                }
            }
        }
    }

    [Test]
    public void PublicOpOverZeroRowsGivesZeroParameterGradients()
    {
        // The parameter gradients of an empty batch reach the body with empty x and dy: it must write zeros, not read them.
        using var s = Scope.Begin();
        var w = Tensor.FromArray(D, GradCheck.Rand(6, 1), 6);
        var b = Tensor.FromArray(D, GradCheck.Rand(6, 2), 6);
        w.RequiresGrad = b.RequiresGrad = true;
        var y = Peer.Ops.LayerNorm(Tensor.Zeros(D, 0, 6), w, b);
        D.Tape.Backward(y, Tensor.Zeros(D, 0, 6));
        Assert.That(w.Grad!.ToArray(), Is.EqualTo(new float[6]));
        Assert.That(b.Grad!.ToArray(), Is.EqualTo(new float[6]));
    }

    // Batch norm's two kernels as device d's launcher loads them, the running statistics updated in training.
    static (float[] Y, float[] Mean, float[] Rstd, float[] RunMean, float[] RunVar, float[] Dx, float[] Dw, float[] Db) RunBatch(Device d,
        bool training, float[] hx, float[] hg, float[] hw, float[] hb, float[] rm, float[] rv, int rows, int cols)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new NormKernels(d));
        var shape = new BatchNormShape(rows, cols, 1e-5f, 0.1f, training);
        Tensor F(float[] a, params int[] shape) => Tensor.FromArray(d, a, shape);
        var (x, g, w, b, runMean, runVar) = (F(hx, rows, cols), F(hg, rows, cols), F(hw, cols), F(hb, cols), F(rm, cols), F(rv, cols));
        var (y, mean, rstd) = (Tensor.Empty(d, DType.F32, rows, cols), Tensor.Empty(d, DType.F32, cols), Tensor.Empty(d, DType.F32, cols));
        var (dx, dw, db) = (Tensor.Empty(d, DType.F32, rows, cols), Tensor.Empty(d, DType.F32, cols), Tensor.Empty(d, DType.F32, cols));
        var colWork = d.Split(cols);
        k.BatchForward(colWork.Workers, colWork, shape, x.View, w.View, b.View, runMean.View, runVar.View, y.View, mean.View, rstd.View);
        k.BatchBackward(colWork.Workers, colWork, shape, x.View, w.View, g.View, mean.View, rstd.View, dx.View, dw.View, db.View);
        return (y.ToArray(), mean.ToArray(), rstd.ToArray(), runMean.ToArray(), runVar.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray());
    }

    // Each lane of a body does one column's portable arithmetic in the portable order: every output bit agrees, in training and
    // in evaluation; column counts below, at and across the 8-lane width and the worker split; no rows in evaluation.
    [TestCase(2, 1, true)]
    [TestCase(5, 7, true)]
    [TestCase(17, 8, true)]
    [TestCase(64, 37, true)]
    [TestCase(300, 2048, true)]
    [TestCase(9, 19, false)]
    [TestCase(0, 11, false)]
    public void BatchNormBodiesAgreeWithPortableKernelsBitForBit(int rows, int cols, bool training)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        var hx = GradCheck.Rand(rows * cols, 41, 3f).Select(v => v + 0.5f).ToArray();
        var hg = GradCheck.Rand(rows * cols, 42);
        var (hw, hb) = (GradCheck.Rand(cols, 43), GradCheck.Rand(cols, 44));
        var (rm, rv) = (GradCheck.Rand(cols, 45), GradCheck.Rand(cols, 46).Select(v => 1f + Math.Abs(v)).ToArray());
        var a = RunBatch(D, training, hx, hg, hw, hb, rm, rv, rows, cols);
        var b = RunBatch(P, training, hx, hg, hw, hb, rm, rv, rows, cols);
        Assert.That(a.Y, Is.EqualTo(b.Y), "y");
        Assert.That(a.Mean, Is.EqualTo(b.Mean), "mean");
        Assert.That(a.Rstd, Is.EqualTo(b.Rstd), "rstd");
        Assert.That(a.RunMean, Is.EqualTo(b.RunMean), "running mean");
        Assert.That(a.RunVar, Is.EqualTo(b.RunVar), "running variance");
        Assert.That(a.Dx, Is.EqualTo(b.Dx), "dx");
        Assert.That(a.Dw, Is.EqualTo(b.Dw), "dweight");
        Assert.That(a.Db, Is.EqualTo(b.Db), "dbias");
    }
}
