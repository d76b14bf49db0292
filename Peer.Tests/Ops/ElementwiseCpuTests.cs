namespace Peer.Tests.Ops;

/// <summary>The CPU SIMD elementwise bodies against the portable kernels (the definition), launched directly.</summary>
public sealed class ElementwiseCpuTests
{
    static Device D => Devices.Cpu;

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(100003)]
    public void SimdBodiesAgreeWithPortableKernels(int n)
    {
        using var s = Scope.Begin();
        var fast = D.Get(static d => new ElementwiseCpuKernels(d));
        var portable = D.Get(static d => new ElementwiseKernels(d));
        var w = D.Split(n);
        var hx = GradCheck.Rand(n, 1);
        var hy = GradCheck.Rand(n, 2).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray();
        var x = Tensor.FromArray(D, hx);
        var y1 = Tensor.FromArray(D, hy);
        var y2 = Tensor.FromArray(D, hy);
        fast.Axpy(w.Workers, w, y1.View, x.View, -1.5f);
        portable.Axpy(w.Workers, w, y2.View, x.View, -1.5f);
        Close(y1.ToArray(), y2.ToArray(), "axpy");
        // And against the host: y + alpha x in double.
        var got = y1.ToArray();
        for (int i = 0; i < n; i++) Assert.That(got[i], Is.EqualTo(hy[i] - 1.5 * hx[i]).Within(1e-6), $"axpy element {i}");

        var o1 = Tensor.Empty(D, DType.F32, n);
        var o2 = Tensor.Empty(D, DType.F32, n);
        fast.Affine(w.Workers, w, x.View, o1.View, 3f, -0.5f);
        portable.Affine(w.Workers, w, x.View, o2.View, 3f, -0.5f);
        Close(o1.ToArray(), o2.ToArray(), "affine");

        var kernels = new[] { portable.Add, portable.Sub, portable.Mul, portable.Div };
        var yv = Tensor.FromArray(D, hy);
        for (int op = 0; op < 4; op++)
        {
            fast.Binary(w.Workers, w, op, 0, n, x.View, yv.View, o1.View);
            kernels[op](w.Workers, w, x.View, yv.View, o2.View, n, 0);
            Assert.That(o1.ToArray(), Is.EqualTo(o2.ToArray()), $"binary op {op}: IEEE add/sub/mul/div give identical bits");
        }
    }

    [TestCase(1, 1)]
    [TestCase(3, 7)]
    [TestCase(5, 37)]
    [TestCase(64, 1000)]
    public void BroadcastBodiesAgreeWithPortableKernels(int rows, int n)
    {
        using var s = Scope.Begin();
        var fast = D.Get(static d => new ElementwiseCpuKernels(d));
        var portable = D.Get(static d => new ElementwiseKernels(d));
        var kernels = new[] { portable.Add, portable.Sub, portable.Mul, portable.Div };
        var w = D.Split(rows * n);
        var a = Tensor.FromArray(D, GradCheck.Rand(rows * n, 1));
        var row = Tensor.FromArray(D, GradCheck.Rand(n, 2).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray());
        var col = Tensor.FromArray(D, GradCheck.Rand(rows, 3).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray());
        var o1 = Tensor.Empty(D, DType.F32, rows * n);
        var o2 = Tensor.Empty(D, DType.F32, rows * n);
        foreach (var (mode, b) in new[] { (1, row), (2, col) })
            for (int op = 0; op < 4; op++)
            {
                fast.Binary(w.Workers, w, op, mode, n, a.View, b.View, o1.View);
                kernels[op](w.Workers, w, a.View, b.View, o2.View, n, mode);
                Assert.That(o1.ToArray(), Is.EqualTo(o2.ToArray()), $"op {op}, mode {mode}");
            }
    }

    // FMA in the SIMD body rounds once where the portable kernel rounds twice: they may differ in the last bit.
    static void Close(float[] a, float[] b, string what)
    {
        for (int i = 0; i < a.Length; i++) Assert.That(a[i], Is.EqualTo(b[i]).Within(1e-6 * (1 + Math.Abs(b[i]))), $"{what} element {i}");
    }
}
