using MathNet.Numerics.LinearAlgebra;

namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class LinearTests(string backend)
{
    Device D => Devices.Get(backend);

    [TestCase(true)]
    [TestCase(false)]
    public void ForwardMatchesMathNet(bool withBias)
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(2 * 3 * 4, 1);
        var wt = GradCheck.Rand(5 * 4, 2);
        var b = GradCheck.Rand(5, 3);
        var y = Peer.Ops.Linear(Tensor.FromArray(D, x, 2, 3, 4), Tensor.FromArray(D, wt, 5, 4), withBias ? Tensor.FromArray(D, b, 5) : null);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, 5 }));
        var want = Matrix<double>.Build.Dense(6, 4, (i, j) => x[i * 4 + j]) * Matrix<double>.Build.Dense(5, 4, (i, j) => wt[i * 4 + j]).Transpose();
        var got = y.ToArray();
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 5; j++)
                Assert.That(got[i * 5 + j], Is.EqualTo(want[i, j] + (withBias ? b[j] : 0)).Within(1e-5));
    }

    // Both orientations of the weight gradient: out 5 > in 4 here, out 2 < in 4 below (where cores chunk the work, the weight
    // gradient of a layer with fewer outputs than inputs comes from the transposed product xᵀ g, Linear.cs).
    [Test]
    public void GradientsMatchFiniteDifferences() =>
        GradCheck.Check(D, x => Peer.Ops.Linear(x[0], x[1], x[2]),
            [(GradCheck.Rand(2 * 3 * 4, 4), [2, 3, 4]), (GradCheck.Rand(5 * 4, 5), [5, 4]), (GradCheck.Rand(5, 6), [5])]);

    [Test]
    public void GradientsWithoutBias() =>
        GradCheck.Check(D, x => Peer.Ops.Linear(x[0], x[1]), [(GradCheck.Rand(3 * 4, 7), [3, 4]), (GradCheck.Rand(2 * 4, 8), [2, 4])]);

    [Test]
    public void BiasGradientIsColumnSumAndDeterministic()
    {
        float[] Run()
        {
            using var s = Scope.Begin();
            var bias = Tensor.FromArray(D, new float[3], 3);
            bias.RequiresGrad = true;
            var y = Peer.Ops.Linear(Tensor.FromArray(D, GradCheck.Rand(50 * 2, 9), 50, 2), Tensor.FromArray(D, GradCheck.Rand(6, 10), 3, 2), bias);
            var g = GradCheck.Rand(150, 11);
            D.Tape.Backward(y, Tensor.FromArray(D, g, 50, 3));
            var db = bias.Grad!.ToArray();
            for (int j = 0; j < 3; j++)
                Assert.That(db[j], Is.EqualTo(Enumerable.Range(0, 50).Sum(r => (double)g[r * 3 + j])).Within(1e-5));
            return db;
        }
        Assert.That(Run(), Is.EqualTo(Run()));
    }

    [Test]
    public void BadShapesAreNamed()
    {
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Linear(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 4, 5)))!;
        Assert.That(e.Message, Does.Contain("x = [2, 3]").And.Contain("last dimension 5"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Linear(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 4, 3), Tensor.Zeros(D, 3)))!;
        Assert.That(e.Message, Does.Contain("bias has shape [3]").And.Contain("[4]"));
        e = Assert.Throws<ArgumentException>(() => Peer.Ops.Linear(Tensor.Zeros(D, 2, 3), Tensor.Zeros(D, 12)))!;
        Assert.That(e.Message, Does.Contain("weight has shape [12]"));
    }
}
