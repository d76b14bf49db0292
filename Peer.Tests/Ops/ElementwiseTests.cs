namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ElementwiseTests(string backend)
{
    Device D => Devices.Get(backend);

    // Host reference of a broadcast binary op in double: b indexed by the same element, by column j (row broadcast) or by row r (column broadcast).
    static double[] HostBinary(float[] a, float[] b, int n, string mode, Func<double, double, double> op) =>
        Enumerable.Range(0, a.Length).Select(i => op(a[i], b[mode == "same" ? i : mode == "row" ? i % n : i / n])).ToArray();

    static int[] BShape(string mode) => mode switch { "same" => [2, 3, 5], "row" => [5], _ => [2, 3, 1] };

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
    public void BroadcastForwardMatchesHost([Values("same", "row", "column")] string mode)
    {
        using var s = Scope.Begin();
        var a = GradCheck.Rand(30, 5);
        var bShape = BShape(mode);
        var b = GradCheck.Rand((int)Tensor.Numel(bShape), 6).Select(v => v + (v >= 0 ? 0.5f : -0.5f)).ToArray(); // away from 0 for Div
        var ta = Tensor.FromArray(D, a, 2, 3, 5);
        var tb = Tensor.FromArray(D, b, bShape);
        var cases = new (Func<Tensor, Tensor, Tensor> Op, Func<double, double, double> Ref)[]
        {
            (Peer.Ops.Add, (x, y) => x + y), (Peer.Ops.Sub, (x, y) => x - y),
            (Peer.Ops.Mul, (x, y) => x * y), (Peer.Ops.Div, (x, y) => x / y),
        };
        foreach (var (op, reference) in cases)
        {
            var got = op(ta, tb);
            Assert.That(got.Shape, Is.EqualTo(new[] { 2, 3, 5 }));
            var want = HostBinary(a, b, 5, mode, reference);
            var arr = got.ToArray();
            for (int i = 0; i < arr.Length; i++) Assert.That(arr[i], Is.EqualTo(want[i]).Within(1e-6 * (1 + Math.Abs(want[i]))), $"element {i}");
        }
    }

    [Test]
    public void BroadcastGradientsMatchFiniteDifferences([Values("same", "row", "column")] string mode)
    {
        var bShape = BShape(mode);
        var b = GradCheck.Rand((int)Tensor.Numel(bShape), 8).Select(v => v + (v >= 0 ? 0.7f : -0.7f)).ToArray();
        (float[], int[])[] inputs = [(GradCheck.Rand(30, 7), [2, 3, 5]), (b, bShape)];
        GradCheck.Check(D, x => Peer.Ops.Add(x[0], x[1]), inputs);
        GradCheck.Check(D, x => Peer.Ops.Sub(x[0], x[1]), inputs);
        GradCheck.Check(D, x => Peer.Ops.Mul(x[0], x[1]), inputs);
        GradCheck.Check(D, x => Peer.Ops.Div(x[0], x[1]), inputs);
    }

    [Test]
    public void UnaryAndScalarOpsMatchHost()
    {
        using var s = Scope.Begin();
        var x = GradCheck.Rand(257, 9).Select(v => v * 3f).ToArray();
        var pos = x.Select(v => Math.Abs(v) + 0.1f).ToArray();
        var tx = Tensor.FromArray(D, x);
        var tp = Tensor.FromArray(D, pos);
        void Expect(Tensor t, float[] src, Func<double, double> f, double rel)
        {
            var got = t.ToArray();
            for (int i = 0; i < got.Length; i++) Assert.That(got[i], Is.EqualTo(f(src[i])).Within(rel * (1 + Math.Abs(f(src[i])))), $"element {i} (x = {src[i]})");
        }
        Expect(Peer.Ops.AddScalar(tx, 1.25f), x, v => v + 1.25, 1e-6);
        Expect(Peer.Ops.Neg(tx), x, v => -v, 0);
        Expect(Peer.Ops.Affine(tx, 2f, -1f), x, v => 2 * v - 1, 1e-6);
        Expect(Peer.Ops.Exp(tx), x, Math.Exp, 1e-6);
        Expect(Peer.Ops.Log(tp), pos, Math.Log, 1e-6);
        Expect(Peer.Ops.Sqrt(tp), pos, Math.Sqrt, 1e-6);
        Expect(Peer.Ops.Square(tx), x, v => v * v, 1e-6);
    }

    [Test]
    public void GradientsMatchFiniteDifferences()
    {
        GradCheck.Check(D, x => Peer.Ops.Mul(Peer.Ops.Add(x[0], x[1]), Peer.Ops.Scale(x[0], 3f)),
            [(GradCheck.Rand(12, 3), [3, 4]), (GradCheck.Rand(12, 4), [3, 4])]);
    }

    [Test]
    public void UnaryGradientsMatchFiniteDifferences()
    {
        var pos = GradCheck.Rand(12, 11).Select(v => Math.Abs(v) + 0.5f).ToArray();
        (float[], int[])[] x = [(GradCheck.Rand(12, 10), [3, 4])], p = [(pos, [3, 4])];
        GradCheck.Check(D, t => Peer.Ops.Exp(t[0]), x);
        GradCheck.Check(D, t => Peer.Ops.Square(t[0]), x);
        GradCheck.Check(D, t => Peer.Ops.Neg(Peer.Ops.AddScalar(t[0], 2f)), x);
        GradCheck.Check(D, t => Peer.Ops.Log(t[0]), p);
        GradCheck.Check(D, t => Peer.Ops.Sqrt(t[0]), p);
    }

    [Test]
    public void ShapeMismatchIsRefusedWithNames()
    {
        using var s = Scope.Begin();
        var a = Tensor.Zeros(D, 2, 3);
        var b = Tensor.Zeros(D, 3, 2);
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.Add(a, b))!;
        Assert.That(e.Message, Does.Contain("b has shape [3, 2]").And.Contain("[2, 3]").And.Contain("[3] (a row broadcast)").And.Contain("[2, 1] (a column broadcast)"));
        Assert.Throws<ArgumentException>(() => Peer.Ops.Mul(a, Tensor.Zeros(D, 2)));   // a row must match the last dimension
        Assert.Throws<ArgumentException>(() => Peer.Ops.Div(a, Tensor.Zeros(D, 1, 3))); // [1, n] is not a supported broadcast
        var i = Tensor.ZerosInt(D, 2, 3);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.Sub(a, i))!.Message, Does.Contain("b has dtype I32"));
    }
}
