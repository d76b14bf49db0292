namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD elementwise bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly.</summary>
public sealed class ElementwiseCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    sealed record Outputs(float[] Axpy, float[] Affine, float[][] Binary);

    // Axpy, affine and the four binary ops (b of a's shape) as device d's launcher loads them.
    static Outputs RunSame(Device d, float[] hx, float[] hy)
    {
        using var s = Scope.Begin();
        int n = hx.Length;
        var k = d.Get(static d => new ElementwiseKernels(d));
        var w = d.Split(n);
        var x = Tensor.FromArray(d, hx);
        var y = Tensor.FromArray(d, hy);
        k.Axpy(w.Workers, w, y.View, x.View, -1.5f);
        var axpy = y.ToArray();
        var o = Tensor.Empty(d, DType.F32, n);
        k.Affine(w.Workers, w, x.View, o.View, 3f, -0.5f);
        var affine = o.ToArray();
        var yv = Tensor.FromArray(d, hy);
        var binary = new[] { k.Add, k.Sub, k.Mul, k.Div }.Select(kernel =>
        {
            kernel(w.Workers, w, x.View, yv.View, o.View, n, 0);
            return o.ToArray();
        }).ToArray();
        return new Outputs(axpy, affine, binary);
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(100003)]
    public void SimdBodiesAgreeWithPortableKernels(int n)
    {
        var hx = GradCheck.Rand(n, 1);
        var hy = GradCheck.Rand(n, 2).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray();
        var fast = RunSame(D, hx, hy);
        var portable = RunSame(P, hx, hy);
        Close(fast.Axpy, portable.Axpy, "axpy");
        // And against the host: y + alpha x in double.
        for (int i = 0; i < n; i++) Assert.That(fast.Axpy[i], Is.EqualTo(hy[i] - 1.5 * hx[i]).Within(1e-6), $"axpy element {i}");
        Close(fast.Affine, portable.Affine, "affine");
        for (int op = 0; op < 4; op++)
            Assert.That(fast.Binary[op], Is.EqualTo(portable.Binary[op]), $"binary op {op}: IEEE add/sub/mul/div give identical bits");
    }

    // The four binary ops with b a row [n] (mode 1) or a column [rows, 1] (mode 2), as device d's launcher loads them.
    static float[][] RunBroadcast(Device d, float[] ha, float[] hrow, float[] hcol, int n)
    {
        using var s = Scope.Begin();
        var k = d.Get(static d => new ElementwiseKernels(d));
        var w = d.Split(ha.Length);
        var a = Tensor.FromArray(d, ha);
        var o = Tensor.Empty(d, DType.F32, ha.Length);
        var results = new List<float[]>();
        foreach (var (mode, b) in new[] { (1, Tensor.FromArray(d, hrow)), (2, Tensor.FromArray(d, hcol)) })
            foreach (var kernel in new[] { k.Add, k.Sub, k.Mul, k.Div })
            {
                kernel(w.Workers, w, a.View, b.View, o.View, n, mode);
                results.Add(o.ToArray());
            }
        return [.. results];
    }

    [TestCase(1, 1)]
    [TestCase(3, 7)]
    [TestCase(5, 37)]
    [TestCase(64, 1000)]
    public void BroadcastBodiesAgreeWithPortableKernels(int rows, int n)
    {
        var a = GradCheck.Rand(rows * n, 1);
        var row = GradCheck.Rand(n, 2).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray();
        var col = GradCheck.Rand(rows, 3).Select(v => v + (v >= 0 ? 0.25f : -0.25f)).ToArray();
        var fast = RunBroadcast(D, a, row, col, n);
        var portable = RunBroadcast(P, a, row, col, n);
        for (int i = 0; i < fast.Length; i++)
            Assert.That(fast[i], Is.EqualTo(portable[i]), $"op {i % 4}, mode {1 + i / 4}");
    }

    // FMA in the SIMD body rounds once where the portable kernel rounds twice: they may differ in the last bit.
    static void Close(float[] a, float[] b, string what)
    {
        for (int i = 0; i < a.Length; i++) Assert.That(a[i], Is.EqualTo(b[i]).Within(1e-6 * (1 + Math.Abs(b[i]))), $"{what} element {i}");
    }
}
