using static Peer.Tests.Ops.Cpu.ProductKeyTopKCpuTests;

namespace Peer.Tests.Ops.Gpu;

/// <summary>The grouped selection chosen for GPUs (Gpu/ProductKeyTopKGpu.cs) against the definition (ProductKeyTopK.cs), bit for bit
/// on scores without NaN, on CPU accelerators with small groups and on OpenCL (PoCL) with the GPU's group size; with NaN scores,
/// both give k distinct ids inside the table. Likewise with experts switched off (ProductKeyTopKGpuTests.Masked.cs).</summary>
public sealed partial class ProductKeyTopKGpuTests
{
    static readonly Dictionary<int, Device> small = new();

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

    static float[] Scores(int count, int seed, bool ties) => GradCheck.Rand(count, seed).Select(v => ties ? MathF.Round(v * 2f) / 2f : v).ToArray();

    static (int[] Indices, float[] Scores) Definition(float[] s1, float[] s2, int t, int h, int n, int k) =>
        Select(Devices.CpuPortable, new ProductKeyKernels(Devices.CpuPortable, 0), s1, s2, t, h, n, k);

    static void SameBits((int[] Indices, float[] Scores) got, (int[] Indices, float[] Scores) want, string what = "")
    {
        Assert.That(got.Indices, Is.EqualTo(want.Indices), $"{what}indices");
        Assert.That(got.Scores.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Scores.Select(BitConverter.SingleToInt32Bits)), $"{what}scores");
    }

    // Groups of one thread to eight, k = 1 and k = n, coarse values so that ties occur and must break toward the smaller id.
    [TestCase(1, 2, 2, 5, 3, true)]
    [TestCase(2, 3, 1, 7, 1, false)]
    [TestCase(4, 2, 3, 9, 4, true)]
    [TestCase(4, 1, 2, 6, 6, true)]
    [TestCase(8, 3, 2, 33, 8, true)]
    [TestCase(8, 2, 1, 20, 16, false)]
    public void GroupedMatchesTheDefinitionBitForBit(int group, int t, int h, int n, int k, bool ties)
    {
        var (s1, s2) = (Scores(t * h * n, 40 + n, ties), Scores(t * h * n, 41 + n, ties));
        SameBits(Select(Small(group), new ProductKeyKernels(Small(group), group), s1, s2, t, h, n, k), Definition(s1, s2, t, h, n, k));
    }

    [Test]
    public void GroupedMatchesTheDefinitionOnOpenCl()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        foreach (int group in new[] { 4, ProductKeyTopKGpu.GroupSize })
            foreach (var (t, h, n, k, ties) in new[] { (3, 2, 33, 8, true), (2, 3, 100, 16, false), (1, 2, 64, 64, true) })
            {
                var (s1, s2) = (Scores(t * h * n, n, ties), Scores(t * h * n, n + 1, ties));
                SameBits(Select(d, new ProductKeyKernels(d, group), s1, s2, t, h, n, k), Select(d, new ProductKeyKernels(d, 0), s1, s2, t, h, n, k));
            }
    }

    // With NaN among the scores (a diverged query) the two may order differently, but every id is an expert and none repeats.
    [Test]
    public void NaNScoresStillGiveDistinctIdsInsideTheTable()
    {
        const int t = 2, h = 2, n = 7, k = 5;
        var (s1, s2) = (Scores(t * h * n, 3, false), Scores(t * h * n, 4, false));
        for (int i = 0; i < s1.Length; i += 3) s1[i] = float.NaN;
        for (int i = 1; i < s2.Length; i += 2) s2[i] = float.NaN;
        s1[5] = s1[6] = float.NaN;
        foreach (var (name, got) in new[] { ("grouped", Select(Small(4), new ProductKeyKernels(Small(4), 4), s1, s2, t, h, n, k)), ("definition", Definition(s1, s2, t, h, n, k)) })
            for (int item = 0; item < t * h; item++)
            {
                var ids = got.Indices.Skip(item * k).Take(k).ToArray();
                Assert.That(ids.All(i => i is >= 0 and < n * n) && ids.Distinct().Count() == k, $"{name}, item {item}: {string.Join(", ", ids)}");
            }
    }

    [Test]
    public void DevicesChooseByAcceleratorType()
    {
        using var gpu = Device.ForInventory(InventoryShape.CudaGpu);
        _ = new ProductKeyKernels(gpu);
        Assert.That(gpu.Loaded.Select(k => k.Method.DeclaringType), Does.Contain(typeof(ProductKeyTopKGpu)));
        using var pocl = Device.ForInventory(InventoryShape.OpenClOnCpu);
        _ = new ProductKeyKernels(pocl);
        Assert.That(pocl.Loaded.Select(k => k.Method.DeclaringType), Does.Not.Contain(typeof(ProductKeyTopKGpu)));
    }

    [Test]
    public void GroupSizeIsChecked() =>
        Assert.That(Assert.Throws<ArgumentException>(() => new ProductKeyKernels(Small(8), 6))!.Message, Does.Contain("groupSize").And.Contain("power of two"));
}
