using Peer.Optim;

namespace Peer.Tests.Optim;

// AdamW with a row-wise second moment against a double-precision host implementation of its documented formula,
// with the first moment per element and without one, dense and sparse (lazy).
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class RowWiseAdamWTests(string backend)
{
    Device D => Devices.Get(backend);

    // Float32 kernels against double references over a few steps of O(1) values; Adam's update is O(lr).
    const double Tol = 2e-6;

    Tensor Param(int n, int seed, params int[] shape)
    {
        var p = Tensor.FromArray(D, GradCheck.Rand(n, seed), shape);
        p.RequiresGrad = true;
        return p;
    }

    [TestCase(0.9f, 0f, 6, 5, false)]
    [TestCase(0.8f, 0.1f, 6, 5, false)]
    [TestCase(0f, 0.1f, 6, 5, false)]
    [TestCase(0.8f, 0.1f, 10, 4, true)]
    [TestCase(0f, 0.05f, 10, 4, true)]
    [TestCase(0.9f, 0.05f, 9, 1, true)]
    [TestCase(0.8f, 0.1f, 10, 4, true, 3)]
    [TestCase(0f, 0.05f, 10, 4, true, 2)]
    public void MatchesHost(float b1, float wd, int rows, int cols, bool sparse, int pad = 0)
    {
        using var s = Scope.Begin();
        var p = Param(rows * cols, 12, rows, cols);
        const float b2 = 0.99f, eps = 1e-6f;
        using var opt = new RowWiseAdamW([("t", p)], 2e-2f, b1, b2, eps, wd);
        int[]?[] steps = sparse ? [[1, 4, rows - 1], [0, 4], null, [rows - 1], [2, 3, 4, 5]] : [null, null, null, null];
        double[]? m = b1 == 0f ? null : new double[rows * cols];
        var v = new double[rows];
        RowWiseReference.Run(opt, p, rows, cols, steps, step => step == 3 ? 1e-2f : 2e-2f,
            (hp, r, g, at, step, lr) => RowWiseReference.AdamW(hp, m, v, r, cols, g, at, lr, wd, b1, b2, eps, step),
            step =>
            {
                var state = opt.StateDict().ToDictionary(e => e.Name, e => e.T);
                Assert.That(state.Keys, Is.EquivalentTo(b1 == 0f ? new[] { "t.exp_avg_sq", "t.step" } : new[] { "t.exp_avg", "t.exp_avg_sq", "t.step" }));
                Assert.That(state["t.step"].ToIntArray(), Is.EqualTo(new[] { step }));
                Assert.That(state["t.exp_avg_sq"].Shape, Is.EqualTo(new[] { rows }));
                var gotV = state["t.exp_avg_sq"].ToArray();
                for (int r = 0; r < rows; r++) Assert.That(gotV[r], Is.EqualTo(v[r]).Within(1e-7), $"exp_avg_sq of row {r} after step {step}");
                if (m is null) return;
                Assert.That(state["t.exp_avg"].Shape, Is.EqualTo(new[] { rows, cols }));
                var gotM = state["t.exp_avg"].ToArray();
                for (int k = 0; k < m.Length; k++) Assert.That(gotM[k], Is.EqualTo(m[k]).Within(1e-6), $"exp_avg {k} after step {step}");
            }, Tol, 200, pad);
    }

    // With one element per row (cols = 1) the row's mean squared gradient is the element's: AdamW's formula (torch.optim.AdamW).
    [Test]
    public void OneColumnIsAdamW()
    {
        using var s = Scope.Begin();
        var a = Param(5, 31, 5, 1);
        var b = Param(5, 31, 5, 1);
        using var rowWise = new RowWiseAdamW([("t", a)], 1e-2f, weightDecay: 0.1f);
        using var adamW = new AdamW([("t", b)], 1e-2f, weightDecay: 0.1f);
        for (int step = 0; step < 4; step++)
        {
            var g = GradCheck.Rand(5, 40 + step);
            a.Grad?.Dispose();
            b.Grad?.Dispose();
            a.Grad = Tensor.FromArray(D, g, 5, 1);
            b.Grad = Tensor.FromArray(D, g, 5, 1);
            rowWise.Step();
            adamW.Step();
            var ga = a.ToArray();
            var gb = b.ToArray();
            for (int i = 0; i < 5; i++) Assert.That(ga[i], Is.EqualTo(gb[i]).Within(1e-6), $"step {step}, element {i}");
        }
    }
}
