using static Peer.Tests.Ops.Cpu.PeerExpertsCpuTests;

namespace Peer.Tests.Ops.Gpu;

/// <summary>The grouped fused-expert kernels chosen for GPUs (Gpu/PeerExpertsGpu.cs) against the definition (PeerExperts.cs), bit
/// for bit: on CPU accelerators whose groups hold 4 and 8 threads (so that slots take several rounds), and on OpenCL (PoCL) with
/// the GPU's group size, where both are compiled by ILGPU's OpenCL backend.</summary>
public sealed class PeerExpertsGpuTests
{
    static readonly Dictionary<int, Device> small = new();

    // A CPU accelerator loading portable kernels only, whose group holds `threads` threads.
    static Device Small(int threads)
    {
        lock (small)
        {
            if (!small.TryGetValue(threads, out var d)) small[threads] = d = Device.Open("cpu", new DeviceOptions { CpuThreads = threads, PortableKernels = true });
            return d;
        }
    }

    [OneTimeTearDown]
    public void Close()
    {
        foreach (var d in small.Values) d.Dispose();
        small.Clear();
    }

    static Outputs Case(Device d, int groupSize, int t, int dm, int hk, int n, int act, int seed)
    {
        var rng = new Random(seed);
        var hIdx = Enumerable.Range(0, t * hk).Select(_ => rng.Next(n)).ToArray();
        float[] hx = GradCheck.Rand(t * dm, seed + 1, 2f), hg = GradCheck.Rand(t * hk, seed + 2), hDown = GradCheck.Rand(n * dm, seed + 3),
            hUp = GradCheck.Rand(n * dm, seed + 4), hDy = GradCheck.Rand(t * dm, seed + 5);
        return Run(d, new PeerExpertKernels(d, groupSize), new ExpertShape(dm, hk, act, n), t, dm, n, hIdx, hx, hg, hDown, hUp, hDy);
    }

    static void SameBits(Outputs got, Outputs want)
    {
        static IEnumerable<int> Bits(float[] v) => v.Select(BitConverter.SingleToInt32Bits);
        Assert.That(Bits(got.Y), Is.EqualTo(Bits(want.Y)), "y");
        Assert.That(Bits(got.Z), Is.EqualTo(Bits(want.Z)), "z");
        Assert.That(Bits(got.Dx), Is.EqualTo(Bits(want.Dx)), "dx");
        Assert.That(Bits(got.DG), Is.EqualTo(Bits(want.DG)), "dg");
        Assert.That(Bits(got.CoefDown), Is.EqualTo(Bits(want.CoefDown)), "coefDown");
        Assert.That(Bits(got.CoefUp), Is.EqualTo(Bits(want.CoefUp)), "coefUp");
    }

    // Slots below, at and across a round (group of 4 or 8) and the four-slot grouping; widths below and across the group.
    [TestCase(4, 1, 1, 1, 3, 0)]
    [TestCase(4, 5, 13, 3, 7, 0)]
    [TestCase(4, 3, 6, 12, 9, 1)]
    [TestCase(8, 4, 17, 13, 11, 0)]
    [TestCase(8, 2, 3, 7, 5, 1)]
    [TestCase(8, 3, 9, 20, 40, 0)]
    public void GroupedMatchesTheDefinitionBitForBit(int group, int t, int dm, int hk, int n, int act)
    {
        var want = Case(Devices.CpuPortable, 0, t, dm, hk, n, act, 100 + t);
        SameBits(Case(Small(group), group, t, dm, hk, n, act, 100 + t), want);
    }

    [Test]
    public void GroupedMatchesTheDefinitionOnOpenCl()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        foreach (int group in new[] { 4, PeerExpertsGpu.GroupSize })
            foreach (var (t, dm, hk, n, act) in new[] { (5, 13, 12, 7, 0), (3, 40, 130, 50, 1), (2, 129, 9, 11, 0) })
                SameBits(Case(d, group, t, dm, hk, n, act, 7 * t + hk), Case(d, 0, t, dm, hk, n, act, 7 * t + hk));
    }

    [Test]
    public void DevicesChooseByAcceleratorType()
    {
        using var gpu = Device.ForInventory(InventoryShape.CudaGpu);
        _ = new PeerExpertKernels(gpu);
        Assert.That(gpu.Loaded.Select(k => k.Method.DeclaringType), Does.Contain(typeof(PeerExpertsGpu)), "a GPU runs the grouped kernels");
        using var pocl = Device.ForInventory(InventoryShape.OpenClOnCpu);
        _ = new PeerExpertKernels(pocl);
        Assert.That(pocl.Loaded.Select(k => k.Method.DeclaringType), Does.Not.Contain(typeof(PeerExpertsGpu)), "OpenCL on CPU cores runs the definition");
    }

    [Test]
    public void GroupSizeIsChecked()
    {
        Assert.That(Assert.Throws<ArgumentException>(() => new PeerExpertKernels(Small(8), 6))!.Message, Does.Contain("groupSize").And.Contain("multiple of 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => new PeerExpertKernels(Small(4), 8))!.Message, Does.Contain("up to 4"));
    }
}
