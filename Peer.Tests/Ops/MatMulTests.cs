using MathNet.Numerics.LinearAlgebra;

namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class MatMulTests(string backend)
{
    Device D => Devices.Get(backend);

    static Matrix<double> M(float[] data, int rows, int cols) => Matrix<double>.Build.Dense(rows, cols, (i, j) => data[i * cols + j]);

    [TestCase(3, 5, 4, false, false)]
    [TestCase(3, 5, 4, true, false)]
    [TestCase(3, 5, 4, false, true)]
    [TestCase(17, 9, 33, true, true)]
    public void ForwardMatchesMathNet(int m, int n, int k, bool ta, bool tb)
    {
        using var s = Scope.Begin();
        var a = GradCheck.Rand(m * k, 1);
        var b = GradCheck.Rand(k * n, 2);
        var c = Peer.Ops.MatMul(Tensor.FromArray(D, a, ta ? [k, m] : [m, k]), Tensor.FromArray(D, b, tb ? [n, k] : [k, n]), ta, tb).ToArray();
        var ma = ta ? M(a, k, m).Transpose() : M(a, m, k);
        var mb = tb ? M(b, n, k).Transpose() : M(b, k, n);
        var want = ma * mb;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                Assert.That(c[i * n + j], Is.EqualTo(want[i, j]).Within(1e-5));
    }

    [Test]
    public void BatchedWithBroadcastOperand()
    {
        using var s = Scope.Begin();
        var a = GradCheck.Rand(2 * 3 * 4, 1);
        var b = GradCheck.Rand(4 * 5, 2);
        var c = Peer.Ops.MatMul(Tensor.FromArray(D, a, 2, 3, 4), Tensor.FromArray(D, b, 4, 5)).ToArray();
        for (int bi = 0; bi < 2; bi++)
        {
            var want = M(a.Skip(bi * 12).Take(12).ToArray(), 3, 4) * M(b, 4, 5);
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 5; j++)
                    Assert.That(c[bi * 15 + i * 5 + j], Is.EqualTo(want[i, j]).Within(1e-5));
        }
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(true, true)]
    public void GradientsMatchFiniteDifferences(bool ta, bool tb)
    {
        GradCheck.Check(D, x => Peer.Ops.MatMul(x[0], x[1], ta, tb),
            [(GradCheck.Rand(12, 3), ta ? [4, 3] : [3, 4]), (GradCheck.Rand(20, 4), tb ? [5, 4] : [4, 5])]);
    }

    [Test]
    public void BatchedBroadcastGradients()
    {
        GradCheck.Check(D, x => Peer.Ops.MatMul(x[0], x[1]),
            [(GradCheck.Rand(24, 3), [2, 3, 4]), (GradCheck.Rand(20, 4), [4, 5])]);
    }

    [Test]
    public void InnerMismatchNamesShapes()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.MatMul(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 4, 5)))!;
        Assert.That(e.Message, Does.Contain("[4, 5]").And.Contain("inner dimension 3"));
    }
}
