using static Peer.Tests.MatMulCheck;

namespace Peer.Tests.Ops;

/// <summary>The matmul kernels chosen by accelerator type (MatMul.cs: the row kernel for OpenCL on CPU cores, the tiled kernel
/// for GPUs) against the portable kernel (the definition) and a double host reference, and which one each device runs.</summary>
public sealed class MatMulVariantsTests
{
    [Test]
    public void TiledAgreesWithPortable()
    {
        // The GPU kernel, run on a CPU accelerator whose group holds Tile^2 threads (slow: barriers), on small sizes.
        using var big = Device.Open("cpu", new DeviceOptions { CpuThreads = MatMulTiledKernels.Tile * MatMulTiledKernels.Tile });
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(big, Tiled, "tiled", 1, 17, 33, 9, ta, tb);
        Agree(big, Tiled, "tiled", 2, 5, 18, 40, true, false, bBatched: false, accumulate: true);
        Agree(big, Tiled, "tiled", 1, 1, 1, 1, false, false);
    }

    [Test]
    public void TiledOnEveryNonCpuBackend()
    {
        var others = Devices.Backends().Where(b => b != "cpu").ToArray();
        Assume.That(others, Is.Not.Empty, "no non-CPU backend present");
        foreach (var backend in others)
        {
            var d = Devices.Get(backend);
            Assert.That(d.Get(static d => new MatMulKernels(d)).Chosen, Is.EqualTo(d.ChunksWork ? "rows" : "tiled"));
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    Agree(d, Tiled, "tiled", 2, 37, 29, 70, ta, tb);
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
                Agree(d, Rows, "rows", 1, m, n, k, ta, tb);
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
                        Agree(d, Rows, "rows", 3, 19, 35, 21, ta, tb, aBatched, bBatched, accumulate);
                        Agree(d, Rows, "rows", 2, 1, 7, 33, ta, tb, aBatched, bBatched, accumulate);
                        Agree(d, Rows, "rows", 2, 5, 6, 0, ta, tb, aBatched, bBatched, accumulate);
                    }
    }

    [Test]
    public void AChunkedNonCpuDeviceRunsRows()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        Assume.That(d.ChunksWork, "the OpenCL device here is not on the host CPU");
        var k = d.Get(static d => new MatMulKernels(d));
        Assert.That((k.Chosen, k.Tiled), Is.EqualTo(("rows", false)));
        Agree(d, Chosen, "the chosen kernel", 2, 19, 35, 21, true, false, bBatched: false, accumulate: true);
    }

    [Test]
    public void ThePortableCpuDeviceRunsTheDefinition()
    {
        var k = Devices.CpuPortable.Get(static d => new MatMulKernels(d));
        Assert.That((k.Chosen, k.Tiled), Is.EqualTo(("portable", false)));
    }
}
