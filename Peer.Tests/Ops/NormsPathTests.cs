namespace Peer.Tests.Ops;

/// <summary>The CPU SIMD row-norm bodies against the portable kernels (the definition), both launched directly on the CPU
/// accelerator; the public ops (which take the SIMD path there) are checked against double references in NormsTests.</summary>
public sealed class NormsPathTests
{
    static Device D => Devices.Cpu;
    const double U = 1.0 / (1 << 24); // float32 unit roundoff

    // Odd sizes: one row or column, widths below, at and across the 8-lane width with scalar tails.
    [TestCase(1, 1)]
    [TestCase(7, 5)]
    [TestCase(33, 8)]
    [TestCase(9, 13)]
    [TestCase(65, 96)]
    [TestCase(3, 37)]
    public void SimdBodiesAgreeWithPortableKernels(int rows, int cols)
    {
        Assume.That(NormsCpu.IsSupported, "no 256-bit vector unit");
        using var s = Scope.Begin();
        var fast = D.Get(static d => new NormCpuKernels(d));
        var portable = D.Get(static d => new NormKernels(d));
        var hx = GradCheck.Rand(rows * cols, rows + cols, 3f).Select(v => v + 2f).ToArray();
        var hg = GradCheck.Rand(rows * cols, 7 * cols);
        var hw = GradCheck.Rand(cols, 5, 2f);
        var x = Tensor.FromArray(D, hx, rows, cols);
        var g = Tensor.FromArray(D, hg, rows, cols);
        var w = Tensor.FromArray(D, hw, cols);
        var b = Tensor.FromArray(D, GradCheck.Rand(cols, 6), cols);
        var rowWork = D.Split(rows);
        var colWork = D.Split(cols);
        foreach (bool center in new[] { true, false })
        {
            var shape = new NormShape(cols, 1e-5f, center, center);
            var (y1, m1, r1, y2, m2, r2) = (Empty(rows, cols), Empty(rows), Empty(rows), Empty(rows, cols), Empty(rows), Empty(rows));
            fast.RowForward(rowWork.Workers, rowWork, shape, x.View, w.View, b.View, y1.View, m1.View, r1.View);
            portable.RowForward(rowWork.Workers, rowWork, shape, x.View, w.View, b.View, y2.View, m2.View, r2.View);
            // Both backward passes get the portable statistics, so their differences are the backward's own.
            var (dx1, dx2) = (Empty(rows, cols), Empty(rows, cols));
            fast.RowBackward(rowWork.Workers, rowWork, shape, x.View, w.View, g.View, m2.View, r2.View, dx1.View);
            portable.RowBackward(rowWork.Workers, rowWork, shape, x.View, w.View, g.View, m2.View, r2.View, dx2.View);
            var (dw1, db1, dw2, db2) = (Empty(cols), Empty(cols), Empty(cols), Empty(cols));
            fast.RowParams(colWork.Workers, colWork, x.View, g.View, m2.View, r2.View, dw1.View, db1.View, rows);
            portable.RowParams(colWork.Workers, colWork, x.View, g.View, m2.View, r2.View, dw2.View, db2.View, rows);

            // The parameter gradients sum each column in the same row order with the same operations: identical bits.
            Assert.That(dw1.ToArray(), Is.EqualTo(dw2.ToArray()), $"dweight, center {center}");
            Assert.That(db1.ToArray(), Is.EqualTo(db2.ToArray()), $"dbias, center {center}");

            // The row sums (mean, variance, Σg, Σg·xh) are taken in another order: each differs by at most (C + 1) u times
            // the row's mean of absolute terms on either path, and the elementwise maps add a few roundings; hence
            // rel = 2 (C + 6) u against the scale of each quantity (A: mean |x|, Ag: mean |g w|, Agx: mean |g w xh|).
            double rel = 2 * (cols + 6) * U;
            float[] mean = m2.ToArray(), rstd = r2.ToArray(), fy = y1.ToArray(), py = y2.ToArray(), fdx = dx1.ToArray(), pdx = dx2.ToArray();
            float[] fm = m1.ToArray(), fr = r1.ToArray();
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

    static Tensor Empty(params int[] shape) => Tensor.Empty(D, DType.F32, shape);
}
