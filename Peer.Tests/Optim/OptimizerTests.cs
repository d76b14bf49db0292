using Peer.Optim;

namespace Peer.Tests.Optim;

// Each optimizer against an independent double-precision host implementation of PyTorch's formulas.
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class OptimizerTests(string backend)
{
    Device D => Devices.Get(backend);

    // Float32 kernels against double references over a few steps of O(1) values; Adam's update is O(lr).
    const double Tol = 2e-6;

    Tensor Param(float[] data, params int[] shape)
    {
        var p = Tensor.FromArray(D, data, shape);
        p.RequiresGrad = true;
        return p;
    }

    static void SetGrad(Tensor p, float[] g)
    {
        p.Grad?.Dispose();
        p.Grad = Tensor.FromArray(p.Device, g, p.Shape);
    }

    // pad > 0: the gradient ends in that many padding rows (RowSparseGrad.NoRow, zero values), as a layer's gradient may.
    static void SetSparse(Tensor p, int[] rows, float[] values, int pad = 0)
    {
        if (pad > 0)
        {
            values = values.Concat(new float[pad * (values.Length / Math.Max(1, rows.Length))]).ToArray();
            rows = rows.Concat(Enumerable.Repeat(RowSparseGrad.NoRow, pad)).ToArray();
        }
        p.SparseGrad?.Dispose();
        p.SparseGrad = new RowSparseGrad(Tensor.FromArray(p.Device, rows, rows.Length), Tensor.FromArray(p.Device, values, rows.Length, values.Length / Math.Max(1, rows.Length)));
    }

    static double[] ToDouble(float[] x) => x.Select(v => (double)v).ToArray();

    // torch.optim.AdamW on one element; t counts from 1.
    static void HostAdamW(ref double p, ref double m, ref double v, double g, double lr, double wd, double b1, double b2, double eps, long t)
    {
        p *= 1 - lr * wd;
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        double denom = Math.Sqrt(v) / Math.Sqrt(1 - Math.Pow(b2, t)) + eps;
        p -= lr / (1 - Math.Pow(b1, t)) * m / denom;
    }

    // torch.optim.SGD on one element (dampening 0, nesterov off); the buffer starts at 0, which equals PyTorch's clone on step 1.
    static void HostSgd(ref double p, ref double b, double g, double lr, double mu, double wd)
    {
        double d = g + wd * p;
        if (mu != 0)
        {
            b = mu * b + d;
            d = b;
        }
        p -= lr * d;
    }

    [TestCase(0f, 0f)]
    [TestCase(0.9f, 0f)]
    [TestCase(0.9f, 0.1f)]
    [TestCase(0f, 0.05f)]
    public void SgdMatchesHost(float momentum, float weightDecay)
    {
        using var s = Scope.Begin();
        var init = GradCheck.Rand(15, 11);
        var p = Param(init, 3, 5);
        using var opt = new Sgd([("w", p)], lr: 0.1f, momentum, weightDecay);
        var hp = ToDouble(init);
        var hb = new double[15];
        for (int step = 0; step < 4; step++)
        {
            var g = GradCheck.Rand(15, 100 + step);
            SetGrad(p, g);
            if (step == 2) opt.LearningRate = 0.05f;
            opt.Step();
            for (int i = 0; i < 15; i++) HostSgd(ref hp[i], ref hb[i], g[i], opt.LearningRate, momentum, weightDecay);
            var got = p.ToArray();
            for (int i = 0; i < 15; i++) Assert.That(got[i], Is.EqualTo(hp[i]).Within(Tol), $"step {step}, element {i}");
        }
    }

    [TestCase(0f)]
    [TestCase(0.1f)]
    public void AdamWMatchesHost(float weightDecay)
    {
        using var s = Scope.Begin();
        var init = GradCheck.Rand(24, 21);
        var p = Param(init, 4, 6);
        const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
        using var opt = new AdamW([("w", p)], lr, b1, b2, eps, weightDecay);
        var hp = ToDouble(init);
        var hm = new double[24];
        var hv = new double[24];
        for (int step = 1; step <= 5; step++)
        {
            var g = GradCheck.Rand(24, 200 + step);
            g[3] = 0f; // an element with no gradient yet keeps m = v = 0 and moves by decay only
            SetGrad(p, g);
            if (step == 4) opt.LearningRate = 3e-3f;
            opt.Step();
            for (int i = 0; i < 24; i++) HostAdamW(ref hp[i], ref hm[i], ref hv[i], g[i], opt.LearningRate, weightDecay, b1, b2, eps, step);
            var got = p.ToArray();
            for (int i = 0; i < 24; i++) Assert.That(got[i], Is.EqualTo(hp[i]).Within(Tol), $"step {step}, element {i}");
        }
        var state = opt.StateDict().ToDictionary(e => e.Name, e => e.T);
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "w.exp_avg", "w.exp_avg_sq", "w.step" }));
        Assert.That(state["w.step"].ToIntArray(), Is.EqualTo(new[] { 5 }));
        var m = state["w.exp_avg"].ToArray();
        var v = state["w.exp_avg_sq"].ToArray();
        for (int i = 0; i < 24; i++)
        {
            Assert.That(m[i], Is.EqualTo(hm[i]).Within(1e-6));
            Assert.That(v[i], Is.EqualTo(hv[i]).Within(1e-7));
        }
    }

    // Sparse (lazy) AdamW beside a dense parameter in one optimizer, several steps with different row sets, against
    // the host: listed rows take AdamW's update at the parameter's step count; every other row (values and moments) is untouched.
    [TestCase(0)]
    [TestCase(3)]
    public void SparseAdamWIsLazyAndMatchesHost(int pad)
    {
        using var s = Scope.Begin();
        const int n = 10, cols = 4;
        const float lr = 2e-2f, wd = 0.1f, b1 = 0.8f, b2 = 0.99f, eps = 1e-6f;
        var tableInit = GradCheck.Rand(n * cols, 31);
        var denseInit = GradCheck.Rand(6, 32);
        var table = Param(tableInit, n, cols);
        var dense = Param(denseInit, 6);
        using var opt = new AdamW([("dense", dense), ("table", table)], lr, b1, b2, eps, wd);
        var hp = ToDouble(tableInit);
        var hm = new double[n * cols];
        var hv = new double[n * cols];
        var dp = ToDouble(denseInit);
        var dm = new double[6];
        var dv = new double[6];
        int[][] rowSets = [[1, 4, 7], [0, 4], [7, 9], [4]];
        for (int step = 1; step <= rowSets.Length; step++)
        {
            var rows = rowSets[step - 1];
            var values = GradCheck.Rand(rows.Length * cols, 300 + step);
            SetSparse(table, rows, values, pad);
            var dg = GradCheck.Rand(6, 400 + step);
            SetGrad(dense, dg);
            var before = table.ToArray();
            var stateBefore = opt.StateDict().Where(e => e.Name.StartsWith("table.exp")).Select(e => e.T.ToArray()).ToArray();
            opt.Step();
            for (int r = 0; r < rows.Length; r++)
                for (int c = 0; c < cols; c++)
                {
                    int j = rows[r] * cols + c;
                    HostAdamW(ref hp[j], ref hm[j], ref hv[j], values[r * cols + c], lr, wd, b1, b2, eps, step);
                }
            for (int i = 0; i < 6; i++) HostAdamW(ref dp[i], ref dm[i], ref dv[i], dg[i], lr, wd, b1, b2, eps, step);

            var got = table.ToArray();
            var stateAfter = opt.StateDict().Where(e => e.Name.StartsWith("table.exp")).Select(e => e.T.ToArray()).ToArray();
            for (int row = 0; row < n; row++)
                for (int c = 0; c < cols; c++)
                {
                    int j = row * cols + c;
                    if (rows.Contains(row))
                        Assert.That(got[j], Is.EqualTo(hp[j]).Within(Tol), $"step {step}, row {row}");
                    else
                    {
                        Assert.That(BitConverter.SingleToInt32Bits(got[j]), Is.EqualTo(BitConverter.SingleToInt32Bits(before[j])), $"untouched row {row} changed at step {step}");
                        for (int k = 0; k < 2; k++)
                            Assert.That(stateAfter[k][j], Is.EqualTo(stateBefore[k][j]), $"moment {k} of untouched row {row} changed at step {step}");
                    }
                    Assert.That(got[j], Is.EqualTo(hp[j]).Within(Tol));
                }
            var gotDense = dense.ToArray();
            for (int i = 0; i < 6; i++) Assert.That(gotDense[i], Is.EqualTo(dp[i]).Within(Tol));
        }
    }

    // On fresh state the lazy step on the listed rows is exactly the dense step on a gradient that is zero elsewhere.
    // (Elsewhere the two differ by design: dense AdamW applies weight decay to every row.)
    [Test]
    public void SparseFirstStepEqualsDenseOnTouchedRows()
    {
        using var s = Scope.Begin();
        const int n = 8, cols = 3;
        var init = GradCheck.Rand(n * cols, 41);
        var a = Param(init, n, cols);
        var b = Param(init, n, cols);
        int[] rows = [2, 3, 6];
        var values = GradCheck.Rand(rows.Length * cols, 42);
        var full = new float[n * cols];
        for (int r = 0; r < rows.Length; r++) Array.Copy(values, r * cols, full, rows[r] * cols, cols);
        SetSparse(a, rows, values);
        SetGrad(b, full);
        using var sparse = new AdamW([("t", a)], 1e-2f, weightDecay: 0.05f);
        using var denseOpt = new AdamW([("t", b)], 1e-2f, weightDecay: 0.05f);
        sparse.Step();
        denseOpt.Step();
        var ga = a.ToArray();
        var gb = b.ToArray();
        foreach (int r in rows)
            for (int c = 0; c < cols; c++)
                Assert.That(ga[r * cols + c], Is.EqualTo(gb[r * cols + c]), $"row {r}");
        Assert.That(ga[0], Is.EqualTo(init[0]), "sparse leaves row 0 alone");
        Assert.That((double)gb[0], Is.EqualTo(init[0] * (1 - 1e-2 * 0.05)).Within(1e-7), "dense decays row 0");
    }

    [TestCase(0f, 0.1f, 0)]
    [TestCase(0.9f, 0.1f, 0)]
    [TestCase(0f, 0.1f, 2)]
    [TestCase(0.9f, 0.1f, 2)]
    public void SparseSgdIsLazyAndMatchesHost(float momentum, float wd, int pad)
    {
        using var s = Scope.Begin();
        const int n = 6, cols = 2;
        var init = GradCheck.Rand(n * cols, 51);
        var table = Param(init, n, cols);
        using var opt = new Sgd([("table", table)], 0.1f, momentum, wd);
        var hp = ToDouble(init);
        var hb = new double[n * cols];
        int[][] rowSets = [[0, 5], [1, 5], [5]];
        for (int step = 0; step < rowSets.Length; step++)
        {
            var rows = rowSets[step];
            var values = GradCheck.Rand(rows.Length * cols, 500 + step);
            SetSparse(table, rows, values, pad);
            var before = table.ToArray();
            opt.Step();
            for (int r = 0; r < rows.Length; r++)
                for (int c = 0; c < cols; c++)
                    HostSgd(ref hp[rows[r] * cols + c], ref hb[rows[r] * cols + c], values[r * cols + c], 0.1, momentum, wd);
            var got = table.ToArray();
            for (int j = 0; j < n * cols; j++)
            {
                Assert.That(got[j], Is.EqualTo(hp[j]).Within(Tol), $"step {step}, element {j}");
                if (!rows.Contains(j / cols)) Assert.That(got[j], Is.EqualTo(before[j]), $"untouched element {j} changed");
            }
        }
    }

    [Test]
    public void ParametersWithoutGradientAreSkippedAndKeepTheirStepCount()
    {
        using var s = Scope.Begin();
        var a = Param(GradCheck.Rand(4, 61), 4);
        var b = Param(GradCheck.Rand(4, 62), 4);
        var bInit = b.ToArray();
        using var opt = new AdamW([("a", a), ("b", b)], 1e-2f);
        SetGrad(a, GradCheck.Rand(4, 63));
        opt.Step();
        opt.Step();
        Assert.That(b.ToArray(), Is.EqualTo(bInit));
        var steps = opt.StateDict().Where(e => e.Name.EndsWith(".step")).ToDictionary(e => e.Name, e => e.T.ToIntArray()[0]);
        Assert.That(steps, Is.EqualTo(new Dictionary<string, int> { ["a.step"] = 2, ["b.step"] = 0 }));
        opt.ZeroGrad();
        Assert.That(a.Grad, Is.Null);
    }

    [Test]
    public void StepAllocatesNoDeviceMemoryAfterTheFirst()
    {
        using var s = Scope.Begin();
        var dense = Param(GradCheck.Rand(64, 71), 8, 8);
        var table = Param(GradCheck.Rand(80, 72), 20, 4);
        SetGrad(dense, GradCheck.Rand(64, 73));
        SetSparse(table, [3, 9, 19], GradCheck.Rand(12, 74));
        using var opt = new AdamW([("dense", dense), ("table", table)], 1e-3f);
        opt.Step();
        GradClip.ClipGlobalNorm([dense, table], 0.5f);
        long live = D.LiveBytes;
        for (int i = 0; i < 5; i++)
        {
            GradClip.ClipGlobalNorm([dense, table], 0.5f);
            opt.Step();
        }
        Assert.That(D.LiveBytes, Is.EqualTo(live));
    }
}
