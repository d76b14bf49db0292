namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ElementwiseTests(string backend)
{
    Device D => Devices.Get(backend);

    [Test]
    public void AddMulScaleMatchHost()
    {
        using var s = Scope.Begin();
        var a = GradCheck.Rand(1001, 1);
        var b = GradCheck.Rand(1001, 2);
        var ta = Tensor.FromArray(D, a, 7, 143);
        var tb = Tensor.FromArray(D, b, 7, 143);
        var sum = Peer.Ops.Add(ta, tb).ToArray();
        var prod = Peer.Ops.Mul(ta, tb).ToArray();
        var scaled = Peer.Ops.Scale(ta, -2.5f).ToArray();
        for (int i = 0; i < a.Length; i++)
        {
            Assert.That(sum[i], Is.EqualTo((double)a[i] + b[i]).Within(1e-6));
            Assert.That(prod[i], Is.EqualTo((double)a[i] * b[i]).Within(1e-6));
            Assert.That(scaled[i], Is.EqualTo(-2.5 * a[i]).Within(1e-6));
        }
    }

    [Test]
    public void GradientsMatchFiniteDifferences()
    {
        GradCheck.Check(D, x => Peer.Ops.Mul(Peer.Ops.Add(x[0], x[1]), Peer.Ops.Scale(x[0], 3f)),
            [(GradCheck.Rand(12, 3), [3, 4]), (GradCheck.Rand(12, 4), [3, 4])]);
    }

    [Test]
    public void ShapeMismatchIsRefusedWithNames()
    {
        using var s = Scope.Begin();
        var a = Tensor.Zeros(D, 2, 3);
        var b = Tensor.Zeros(D, 3, 2);
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Add(a, b))!;
        Assert.That(e.Message, Does.Contain("b has shape [3, 2]").And.Contain("[2, 3]"));
    }
}
