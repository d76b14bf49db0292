namespace Peer.Tests.Ops.Gpu;

// The grouped masked selection chosen for GPUs (Gpu/ProductKeyTopKGpu.cs with a mask) against the one-item-per-thread masked
// kernel (ProductKeyMask.cs) and a brute-force search over the enabled experts, bit for bit: on CPU accelerators with small
// groups and on OpenCL (PoCL) with the GPU's group size; masks with a whole sub-key row or column off, rows with fewer
// enabled experts than k, exactly k enabled experts in all, and tied scores.
public sealed partial class ProductKeyTopKGpuTests
{
    /// <summary>The masked selection of <paramref name="kernels"/> (built on <paramref name="d"/>) over sub-key scores s1, s2 [t*h, n].</summary>
    static (int[] Indices, float[] Scores) SelectMasked(Device d, ProductKeyMaskKernels kernels, float[] s1, float[] s2, int t, int h, int n, int k, int[] off)
    {
        using var s = Scope.Begin();
        using var mask = new ExpertMask(d, n, off);
        var (k1, k2) = mask.CheckTopK(k);
        int rows = t * h;
        var (a, b) = (Tensor.FromArray(d, s1, rows, n), Tensor.FromArray(d, s2, rows, n));
        var indices = Tensor.Empty(d, DType.I32, t, h, k);
        var scores = Tensor.Empty(d, DType.F32, t, h, k);
        kernels.RunSelect(d, new SelectionShape(new RetrievalShape(h, 2, n, k), k1, k2), rows, a.View, b.View, mask.Flags.IntView,
            indices.IntView, scores.View, 0);
        return (indices.ToIntArray(), scores.ToArray());
    }

    /// <summary>Brute force over every enabled expert: the same float sums, ordered by (score desc, index asc), k kept.</summary>
    static (int[] Indices, float[] Scores) BruteForceMasked(float[] s1, float[] s2, int t, int h, int n, int k, int[] off)
    {
        var disabled = off.ToHashSet();
        var (idx, sc) = (new int[t * h * k], new float[t * h * k]);
        for (int item = 0; item < t * h; item++)
        {
            var top = Enumerable.Range(0, n * n).Where(i => !disabled.Contains(i))
                .Select(i => (S: s1[item * n + i / n] + s2[item * n + i % n], I: i))
                .OrderByDescending(p => p.S).ThenBy(p => p.I).Take(k).ToArray();
            for (int m = 0; m < k; m++) (idx[item * k + m], sc[item * k + m]) = (top[m].I, top[m].S);
        }
        return (idx, sc);
    }

    /// <summary>The masks of the edge cases, by name, for n sub-keys and k kept.</summary>
    static int[] MaskOf(string kind, int n, int k, int seed)
    {
        var rng = new Random(seed);
        return kind switch
        {
            "random" => Enumerable.Range(0, n * n).OrderBy(_ => rng.Next()).Take(n * n / 3).ToArray(),
            "row" => Enumerable.Range(0, n).Select(c => 1 * n + c).ToArray(),                        // every expert of sub-key row 1
            "column" => Enumerable.Range(0, n).Select(r => r * n + 2).ToArray(),                     // every expert of column 2
            "sparse rows" => Enumerable.Range(0, n).SelectMany(r => Enumerable.Range(0, n - k + 1).Select(c => r * n + (c + r) % n)).ToArray(), // k - 1 enabled per row
            "k left" => Enumerable.Range(0, n * n).OrderBy(_ => rng.Next()).Skip(k).ToArray(),       // exactly k enabled experts in all
            _ => throw new ArgumentException(kind),
        };
    }

    static void CheckMasked(Device d, int group, int t, int h, int n, int k, bool ties, string kind, int seed)
    {
        var (s1, s2) = (Scores(t * h * n, seed, ties), Scores(t * h * n, seed + 1, ties));
        var off = MaskOf(kind, n, k, seed);
        var grouped = SelectMasked(d, new ProductKeyMaskKernels(d, group), s1, s2, t, h, n, k, off);
        SameBits(grouped, SelectMasked(d, new ProductKeyMaskKernels(d, 0), s1, s2, t, h, n, k, off), $"group {group}, {kind}, against the one-item-per-thread kernel: ");
        SameBits(grouped, BruteForceMasked(s1, s2, t, h, n, k, off), $"group {group}, {kind}, against brute force: ");
        Assert.That(grouped.Indices.Intersect(off), Is.Empty, "no disabled expert is returned");
    }

    // Groups of one thread to eight; coarse values so that ties occur and must break toward the smaller enabled id.
    [TestCase(1, 2, 2, 5, 3, true, "random")]
    [TestCase(2, 3, 1, 7, 1, false, "row")]
    [TestCase(4, 2, 3, 9, 4, true, "column")]
    [TestCase(4, 2, 2, 6, 4, true, "sparse rows")]
    [TestCase(8, 3, 2, 12, 5, false, "sparse rows")]
    [TestCase(4, 1, 2, 6, 6, true, "k left")]
    [TestCase(8, 2, 2, 10, 7, true, "k left")]
    [TestCase(8, 3, 2, 33, 8, true, "random")]
    [TestCase(8, 2, 1, 20, 16, false, "row")]
    public void GroupedMaskedMatchesTheDefinitionAndBruteForceBitForBit(int group, int t, int h, int n, int k, bool ties, string kind) =>
        CheckMasked(Small(group), group, t, h, n, k, ties, kind, 60 + n + k);

    [Test]
    public void GroupedMaskedMatchesTheDefinitionAndBruteForceOnOpenCl()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        foreach (int group in new[] { 4, ProductKeyTopKGpu.GroupSize })
            foreach (var (t, h, n, k, ties, kind) in new[] { (3, 2, 33, 8, true, "random"), (2, 2, 9, 4, true, "row"), (2, 3, 11, 5, false, "column"),
                         (2, 2, 12, 6, true, "sparse rows"), (2, 2, 8, 8, true, "k left"), (1, 2, 64, 20, false, "random") })
                CheckMasked(d, group, t, h, n, k, ties, kind, n + k);
    }

    // With NaN among the scores (a diverged query) the order is no longer the definition's, but every id is an enabled expert and
    // none repeats: k enabled candidates exist whatever the scores (ProductKeyMask.cs).
    [Test]
    public void NaNScoresUnderAMaskStillGiveDistinctEnabledIds()
    {
        const int t = 2, h = 2, n = 7, k = 5;
        var (s1, s2) = (Scores(t * h * n, 3, false), Scores(t * h * n, 4, false));
        for (int i = 0; i < s1.Length; i += 3) s1[i] = float.NaN;
        for (int i = 1; i < s2.Length; i += 2) s2[i] = float.NaN;
        var off = MaskOf("sparse rows", n, k, 5);
        var got = SelectMasked(Small(4), new ProductKeyMaskKernels(Small(4), 4), s1, s2, t, h, n, k, off);
        for (int item = 0; item < t * h; item++)
        {
            var ids = got.Indices.Skip(item * k).Take(k).ToArray();
            Assert.That(ids.All(i => i is >= 0 and < n * n && !off.Contains(i)) && ids.Distinct().Count() == k, $"item {item}: {string.Join(", ", ids)}");
        }
    }

    [Test]
    public void MaskedSelectionDevicesChooseByAcceleratorType()
    {
        using var gpu = Device.ForInventory(InventoryShape.CudaGpu);
        _ = new ProductKeyMaskKernels(gpu);
        Assert.That(gpu.Loaded.Select(k => k.Method.Name), Is.EqualTo(new[] { "SelectMaskedKernel" }));
        Assert.That(gpu.Loaded.Select(k => (k.Method.DeclaringType, k.ExplicitlyGrouped)), Is.EqualTo(new[] { (typeof(ProductKeyTopKGpu), true) }));
        using var pocl = Device.ForInventory(InventoryShape.OpenClOnCpu);
        _ = new ProductKeyMaskKernels(pocl);
        Assert.That(pocl.Loaded.Select(k => (k.Method.DeclaringType, k.ExplicitlyGrouped)), Is.EqualTo(new[] { (typeof(ProductKeyMaskKernels), false) }));
    }
}
