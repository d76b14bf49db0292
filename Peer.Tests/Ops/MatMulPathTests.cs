using static Peer.Ops;

namespace Peer.Tests.Ops;

/// <summary>The fast matmul paths against the portable kernel (the definition) and a double host reference.</summary>
public sealed class MatMulPathTests
{
    static Device D => Devices.Cpu;

    // c (+)= op(a) @ op(b) through the given path; a [batchA?, ..], b [batchB?, ..]; c starts as `initial`
    static float[] Run(Device d, MatMulPath path, float[] a, float[] b, float[] initial, int batch, int m, int n, int k, bool ta, bool tb, bool aBatched, bool bBatched, bool accumulate)
    {
        using var s = Scope.Begin();
        var ta_ = Tensor.FromArray(d, a, aBatched ? [batch, ta ? k : m, ta ? m : k] : [ta ? k : m, ta ? m : k]);
        var tb_ = Tensor.FromArray(d, b, bBatched ? [batch, tb ? n : k, tb ? k : n] : [tb ? n : k, tb ? k : n]);
        var c = Tensor.FromArray(d, initial, batch, m, n);
        MatMulInto(ta_, tb_, c, ta, tb, batch, m, n, k, aBatched, bBatched, accumulate, path);
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

    static void Agree(Device d, MatMulPath path, int batch, int m, int n, int k, bool ta, bool tb, bool aBatched = true, bool bBatched = true, bool accumulate = false)
    {
        var a = GradCheck.Rand((aBatched ? batch : 1) * m * k, m + 7 * k);
        var b = GradCheck.Rand((bBatched ? batch : 1) * k * n, n + 3 * k);
        var init = GradCheck.Rand(batch * m * n, 5);
        var fast = Run(d, path, a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        var portable = Run(d, MatMulPath.Portable, a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        var (want, abs) = Reference(a, b, init, batch, m, n, k, ta, tb, aBatched, bBatched, accumulate);
        for (int i = 0; i < want.Length; i++)
        {
            // The classical bound on a float32 sum of k+1 terms in any order: (k+1) u sum|terms|, u = 2^-24 (plus a product rounding each).
            double tol = 1e-7 + (k + 2) * 6e-8 * abs[i];
            Assert.That(portable[i], Is.EqualTo(want[i]).Within(tol), $"portable, element {i}");
            Assert.That(fast[i], Is.EqualTo(portable[i]).Within(2 * tol), $"{path} vs portable, element {i} of [{batch}, {m}, {n}] (k {k}, ta {ta}, tb {tb})");
        }
    }

    static readonly object[] Sizes =
    [
        new object[] { 1, 1, 1 }, new object[] { 17, 33, 9 }, new object[] { 128, 64, 257 },
        new object[] { 9, 600, 520 }, new object[] { 33, 17, 1 }, new object[] { 5, 40, 300 }, new object[] { 40, 600, 300 },
    ];

    [TestCaseSource(nameof(Sizes))]
    public void CpuSimdAgreesWithPortable(int m, int n, int k)
    {
        Assume.That(MatMulCpu.IsSupported, "no 256-bit vector unit");
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(D, MatMulPath.CpuSimd, 1, m, n, k, ta, tb);
    }

    [Test]
    public void CpuSimdNarrowKernelAgreesWithPortable()
    {
        Assume.That(Vector256IsAccelerated, "no 256-bit vector unit");
        MatMulCpu.PreferNarrow = true;
        try
        {
            foreach (var size in Sizes.Cast<object[]>())
                Agree(D, MatMulPath.CpuSimd, 1, (int)size[0], (int)size[1], (int)size[2], (int)size[0] % 2 == 1, (int)size[1] % 2 == 0);
        }
        finally { MatMulCpu.PreferNarrow = false; }
    }

    static bool Vector256IsAccelerated => System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated;

    [Test]
    public void CpuSimdBatchBroadcastAccumulateAndEmptyK()
    {
        Assume.That(MatMulCpu.IsSupported, "no 256-bit vector unit");
        Agree(D, MatMulPath.CpuSimd, 3, 19, 35, 21, false, true);
        Agree(D, MatMulPath.CpuSimd, 3, 19, 35, 21, true, false, aBatched: false);
        Agree(D, MatMulPath.CpuSimd, 3, 19, 35, 21, false, false, bBatched: false);
        Agree(D, MatMulPath.CpuSimd, 2, 40, 70, 300, true, true, accumulate: true);
        Agree(D, MatMulPath.CpuSimd, 2, 5, 6, 0, false, false, accumulate: true);
        Agree(D, MatMulPath.CpuSimd, 2, 5, 6, 0, false, false);
    }

    [Test]
    public void AutoPathOnCpuIsTheSimdBody()
    {
        Assert.That(ChoosePath(D), Is.EqualTo(MatMulCpu.IsSupported ? MatMulPath.CpuSimd : MatMulPath.Portable));
    }

    [Test]
    public void TiledAgreesWithPortable()
    {
        // The GPU kernel, run on a CPU accelerator whose group holds Tile^2 threads (slow: barriers), on small sizes.
        using var big = Device.Open("cpu", new DeviceOptions { CpuThreads = MatMulTiledKernels.Tile * MatMulTiledKernels.Tile });
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(big, MatMulPath.Tiled, 1, 17, 33, 9, ta, tb);
        Agree(big, MatMulPath.Tiled, 2, 5, 18, 40, true, false, bBatched: false, accumulate: true);
        Agree(big, MatMulPath.Tiled, 1, 1, 1, 1, false, false);
    }

    [Test]
    public void TiledOnEveryNonCpuBackend()
    {
        var others = Devices.Backends().Where(b => b != "cpu").ToArray();
        Assume.That(others, Is.Not.Empty, "no non-CPU backend present");
        foreach (var backend in others)
        {
            var d = Devices.Get(backend);
            Assert.That(ChoosePath(d), Is.EqualTo(d.ChunksWork ? MatMulPath.Rows : MatMulPath.Tiled));
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    Agree(d, MatMulPath.Tiled, 2, 37, 29, 70, ta, tb);
        }
    }

    // The row kernel (chosen on non-CPU devices that chunk work over CPU cores, i.e. PoCL) is a portable kernel:
    // checked on every backend present, the OpenCL one being where it runs for real.
    static IEnumerable<TestCaseData> RowsCases() =>
        from backend in Devices.Backends()
        from size in Sizes.Cast<object[]>()
        select new TestCaseData(backend, (int)size[0], (int)size[1], (int)size[2]);

    [TestCaseSource(nameof(RowsCases))]
    public void RowsAgreesWithPortable(string backend, int m, int n, int k)
    {
        var d = Devices.Get(backend);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(d, MatMulPath.Rows, 1, m, n, k, ta, tb);
    }

    [TestCaseSource(typeof(Devices), nameof(Devices.Backends))]
    public void RowsEveryTransposeBatchAndAccumulateCombination(string backend)
    {
        var d = Devices.Get(backend);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var (aBatched, bBatched) in new[] { (true, true), (false, true), (true, false) })
                    foreach (bool accumulate in new[] { false, true })
                    {
                        Agree(d, MatMulPath.Rows, 3, 19, 35, 21, ta, tb, aBatched, bBatched, accumulate);
                        Agree(d, MatMulPath.Rows, 2, 1, 7, 33, ta, tb, aBatched, bBatched, accumulate);
                        Agree(d, MatMulPath.Rows, 2, 5, 6, 0, ta, tb, aBatched, bBatched, accumulate);
                    }
    }

    [Test]
    public void AutoPathOnAChunkedNonCpuDeviceIsRows()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        Assume.That(d.ChunksWork, "the OpenCL device here is not on the host CPU");
        Assert.That(ChoosePath(d), Is.EqualTo(MatMulPath.Rows));
    }
}
