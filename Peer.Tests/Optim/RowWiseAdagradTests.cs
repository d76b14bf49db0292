using Peer.Optim;

namespace Peer.Tests.Optim;

// Row-wise AdaGrad against a double-precision host implementation of its documented formula, dense and sparse (lazy).
[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class RowWiseAdagradTests(string backend)
{
    Device D => Devices.Get(backend);

    // Float32 kernels against double references over a few steps of O(1) values; each update is O(lr).
    const double Tol = 2e-6;

    Tensor Param(int n, int seed, params int[] shape)
    {
        var p = Tensor.FromArray(D, GradCheck.Rand(n, seed), shape);
        p.RequiresGrad = true;
        return p;
    }

    // Dense steps, sparse steps with different row sets, and both mixed, at a changing learning rate; with and without decay.
    [TestCase(0f, 7, 5, false)]
    [TestCase(0.1f, 7, 5, false)]
    [TestCase(0f, 10, 4, true)]
    [TestCase(0.05f, 10, 4, true)]
    [TestCase(0.05f, 9, 1, true)]
    [TestCase(0.05f, 10, 4, true, 3)]
    [TestCase(0.05f, 9, 1, true, 2)]
    public void MatchesHost(float wd, int rows, int cols, bool sparse, int pad = 0)
    {
        using var s = Scope.Begin();
        var p = Param(rows * cols, 11, rows, cols);
        const float eps = 1e-6f;
        using var opt = new RowWiseAdagrad([("t", p)], 0.1f, eps, wd);
        int[]?[] steps = sparse ? [[1, 4, rows - 1], [0, 4], null, [rows - 1], [2, 3, 4, 5]] : [null, null, null, null];
        var sum = new double[rows];
        RowWiseReference.Run(opt, p, rows, cols, steps, step => step == 3 ? 0.05f : 0.1f,
            (hp, r, g, at, step, lr) => RowWiseReference.Adagrad(hp, sum, r, cols, g, at, lr, wd, eps),
            step =>
            {
                var state = opt.StateDict().Single();
                Assert.That(state.Name, Is.EqualTo("t.sum"));
                Assert.That(state.T.Shape, Is.EqualTo(new[] { rows }));
                var got = state.T.ToArray();
                for (int r = 0; r < rows; r++) Assert.That(got[r], Is.EqualTo(sum[r]).Within(1e-6 * (1 + sum[r])), $"sum of row {r} after step {step}");
            }, Tol, 100, pad);
    }

    // A vector [n] is n rows of one element: plain AdaGrad (torch.optim.Adagrad without lr decay), one state per element.
    [Test]
    public void VectorIsElementWiseAdagrad()
    {
        using var s = Scope.Begin();
        var p = Param(6, 21, 6);
        using var opt = new RowWiseAdagrad([("b", p)], 0.2f);
        var hp = p.ToArray().Select(x => (double)x).ToArray();
        var hs = new double[6];
        for (int step = 0; step < 3; step++)
        {
            var g = GradCheck.Rand(6, 30 + step);
            p.Grad?.Dispose();
            p.Grad = Tensor.FromArray(D, g, 6);
            opt.Step();
            for (int i = 0; i < 6; i++)
            {
                hs[i] += (double)g[i] * g[i];
                hp[i] -= 0.2 * g[i] / (Math.Sqrt(hs[i]) + 1e-8);
            }
            var got = p.ToArray();
            for (int i = 0; i < 6; i++) Assert.That(got[i], Is.EqualTo(hp[i]).Within(Tol), $"step {step}, element {i}");
        }
        Assert.That(opt.StateDict().Single().T.Shape, Is.EqualTo(new[] { 6 }));
    }

    // Without weight decay a zero gradient row changes nothing, so the lazy step equals the dense step on a gradient that is
    // zero outside the listed rows, bit for bit, over several steps.
    [Test]
    public void SparseEqualsDenseWithZeroRowsWithoutDecay()
    {
        using var s = Scope.Begin();
        const int rows = 8, cols = 3;
        var a = Param(rows * cols, 41, rows, cols);
        var b = Param(rows * cols, 41, rows, cols);
        using var sparse = new RowWiseAdagrad([("t", a)], 0.05f);
        using var dense = new RowWiseAdagrad([("t", b)], 0.05f);
        int[][] sets = [[2, 3, 6], [0, 6], [7]];
        for (int step = 0; step < sets.Length; step++)
        {
            var values = GradCheck.Rand(sets[step].Length * cols, 50 + step);
            var full = new float[rows * cols];
            for (int r = 0; r < sets[step].Length; r++) Array.Copy(values, r * cols, full, sets[step][r] * cols, cols);
            a.SparseGrad?.Dispose();
            a.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, sets[step], sets[step].Length), Tensor.FromArray(D, values, sets[step].Length, cols));
            b.Grad?.Dispose();
            b.Grad = Tensor.FromArray(D, full, rows, cols);
            sparse.Step();
            dense.Step();
            Assert.That(a.ToArray(), Is.EqualTo(b.ToArray()), $"step {step}");
            Assert.That(sparse.StateDict().Single().T.ToArray(), Is.EqualTo(dense.StateDict().Single().T.ToArray()), $"step {step}");
        }
    }
}
