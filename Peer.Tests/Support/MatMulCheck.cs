// One matmul launched from host data through a given kernel, held to a double host reference and to the portable kernel
// (the definition): shared by the tests of the kernel variants (Ops/MatMulVariantsTests) and of the CPU body (Ops/Cpu/MatMulCpuTests).
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Tests;

internal static class MatMulCheck
{
    /// <summary>Launches <c>c (+)= op(a) @ op(b)</c> for a validated shape and batch.</summary>
    public delegate void Launch(MatMulShape s, int batch, Tensor a, Tensor b, Tensor c);

    // The definition and the row kernel loaded on a device (cached by Device.Get), to launch them where the device's
    // launcher would choose another kernel.
    sealed class Definitions(Device d)
    {
        public readonly Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Portable =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MatMulKernels.PortableKernel);
        public readonly Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Rows =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MatMulKernels.RowsKernel);
    }

    static Launch Chunked(Func<Device, Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>> kernel) => (s, batch, a, b, c) =>
    {
        var w = a.Device.Split(batch * s.M);
        kernel(a.Device)(w.Workers, w, s, a.View, b.View, c.View);
    };

    /// <summary>The product the device's launcher chose (<see cref="MatMulKernels.Product"/>).</summary>
    public static readonly Launch Chosen = Chunked(d => d.Get(static d => new MatMulKernels(d)).Product);
    /// <summary>The portable kernel, the definition.</summary>
    public static readonly Launch Portable = Chunked(d => d.Get(static d => new Definitions(d)).Portable);
    /// <summary>The row kernel (chosen on OpenCL devices that chunk work over CPU cores).</summary>
    public static readonly Launch Rows = Chunked(d => d.Get(static d => new Definitions(d)).Rows);
    // The CPU body's 512-bit kernel loaded on a CPU accelerator device whatever the device would choose: where the CPU has no
    // 512-bit unit, .NET runs Vector512 in software with the same lane results, so the body is checked on every machine.
    sealed class Wide(Device d)
    {
        public readonly Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Rows512 =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MatMulCpu.Rows512Kernel);
    }

    /// <summary>The CPU body with its 512-bit micro-kernel (CPU accelerator devices only).</summary>
    public static readonly Launch Cpu512 = Chunked(d => d.Get(static d => new Wide(d)).Rows512);
    /// <summary>The shared-memory tiled kernel (chosen on GPUs); needs groups of Tile^2 threads.</summary>
    public static readonly Launch Tiled = (s, batch, a, b, c) =>
    {
        int t = MatMulTiledKernels.Tile;
        var grid = new Index3D((s.N + t - 1) / t, (s.M + t - 1) / t, batch);
        a.Device.Get(static d => new MatMulTiledKernels(d)).Tiled((grid, new Index3D(t, t, 1)), s, a.View, b.View, c.View);
    };

    // c (+)= op(a) @ op(b) on device d through `launch`; a [batchA?, ..], b [batchB?, ..]; c starts as `initial`
    static float[] Run(Device d, Launch launch, float[] a, float[] b, float[] initial, int batch, int m, int n, int k, bool ta, bool tb, bool aBatched, bool bBatched, bool accumulate)
    {
        using var s = Scope.Begin();
        var ta_ = Tensor.FromArray(d, a, aBatched ? [batch, ta ? k : m, ta ? m : k] : [ta ? k : m, ta ? m : k]);
        var tb_ = Tensor.FromArray(d, b, bBatched ? [batch, tb ? n : k, tb ? k : n] : [tb ? n : k, tb ? k : n]);
        var c = Tensor.FromArray(d, initial, batch, m, n);
        if (c.Length > 0) launch(new MatMulShape(m, n, k, ta, tb, aBatched ? m * k : 0, bBatched ? k * n : 0, accumulate), batch, ta_, tb_, c);
        return c.ToArray();
    }

    // Returns op(a) @ op(b) (+ initial) in double, and per element the sum of |terms| that bounds float32 rounding.
    static (double[] C, double[] Abs) Reference(float[] a, float[] b, float[] initial, int batch, int m, int n, int k, bool ta, bool tb, bool aBatched, bool bBatched, bool accumulate)
    {
        var c = new double[batch * m * n];
        var abs = new double[batch * m * n];
        for (int bi = 0; bi < batch; bi++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double acc = accumulate ? initial[(bi * m + i) * n + j] : 0, sum = Math.Abs(acc);
                    int ao = aBatched ? bi * m * k : 0, bo = bBatched ? bi * k * n : 0;
                    for (int p = 0; p < k; p++)
                    {
                        double term = (double)(ta ? a[ao + p * m + i] : a[ao + i * k + p]) * (tb ? b[bo + j * k + p] : b[bo + p * n + j]);
                        acc += term;
                        sum += Math.Abs(term);
                    }
                    c[(bi * m + i) * n + j] = acc;
                    abs[(bi * m + i) * n + j] = sum;
                }
        return (c, abs);
    }

    /// <summary>
    /// The product through <paramref name="launch"/> on <paramref name="d"/> against the portable kernel on
    /// <see cref="Devices.CpuPortable"/>, which itself must match the double reference.
    /// </summary>
    public static void Agree(Device d, Launch launch, string what, int batch, int m, int n, int k, bool ta, bool tb, bool aBatched = true, bool bBatched = true, bool accumulate = false)
    {
        var a = GradCheck.Rand((aBatched ? batch : 1) * m * k, m + 7 * k);
        var b = GradCheck.Rand((bBatched ? batch : 1) * k * n, n + 3 * k);
        var init = GradCheck.Rand(batch * m * n, 5);
        var fast = Run(d, launch, a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        var portable = Run(Devices.CpuPortable, Portable, a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        var (want, abs) = Reference(a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        for (int i = 0; i < want.Length; i++)
        {
            // The classical bound on a float32 sum of k+1 terms in any order: (k+1) u sum|terms|, u = 2^-24 (plus a product rounding each).
            double tol = 1e-7 + (k + 2) * 6e-8 * abs[i];
            Assert.That(portable[i], Is.EqualTo(want[i]).Within(tol), $"portable, element {i}");
            Assert.That(fast[i], Is.EqualTo(portable[i]).Within(2 * tol), $"{what} vs portable, element {i} of [{batch}, {m}, {n}] (k {k}, ta {ta}, tb {tb})");
        }
    }

    /// <summary>Odd sizes (m, n, k): single elements, sizes across the micro-tiles and the packing blocks, k = 1.</summary>
    public static readonly object[] Sizes =
    [
        new object[] { 1, 1, 1 }, new object[] { 17, 33, 9 }, new object[] { 128, 64, 257 },
        new object[] { 9, 600, 520 }, new object[] { 33, 17, 1 }, new object[] { 5, 40, 300 }, new object[] { 40, 600, 300 },
    ];
}
