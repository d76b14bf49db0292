namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU selection body of product-key retrieval (loaded on <see cref="Devices.Cpu"/>) against the portable selection
/// kernel (the definition, loaded on <see cref="Devices.CpuPortable"/>), both launched directly on the same sub-key scores;
/// the public op is checked against brute force in ProductKeyTopKTests.</summary>
public sealed class ProductKeyTopKCpuTests
{
    // The selection kernel of device d's launcher over sub-key scores s1, s2 [rows, n], rows = t*h.
    static (int[] Indices, float[] Scores) Select(Device d, float[] s1, float[] s2, int t, int h, int n, int k) =>
        Select(d, d.Get(static d => new ProductKeyKernels(d)), s1, s2, t, h, n, k);

    /// <summary>The selection of launcher <paramref name="kernels"/> (built on <paramref name="d"/>) over sub-key scores s1, s2 [t*h, n].</summary>
    internal static (int[] Indices, float[] Scores) Select(Device d, ProductKeyKernels kernels, float[] s1, float[] s2, int t, int h, int n, int k)
    {
        using var s = Scope.Begin();
        int rows = t * h;
        var (a, b) = (Tensor.FromArray(d, s1, rows, n), Tensor.FromArray(d, s2, rows, n));
        var indices = Tensor.Empty(d, DType.I32, t, h, k);
        var scores = Tensor.Empty(d, DType.F32, t, h, k);
        kernels.RunSelect(d, new RetrievalShape(h, 2, n, k), rows, a.View, b.View, indices.IntView, scores.View, 0);
        return (indices.ToIntArray(), scores.ToArray());
    }

    // The CPU selection body runs the portable kernel's algorithm with the same comparisons in the same order (TopKList):
    // identical ids and scores. Odd sizes (one token, one head, k = 1, k = n) and coarse values, so that ties occur and must
    // break alike.
    [TestCase(1, 1, 1, 1, false)]
    [TestCase(5, 3, 7, 1, false)]
    [TestCase(7, 2, 9, 4, true)]
    [TestCase(4, 4, 64, 8, false)]
    [TestCase(3, 2, 20, 20, true)]
    [TestCase(9, 5, 33, 16, true)]
    [TestCase(2, 3, 80, 64, true)]
    public void SelectionBodyMatchesPortableKernelBitForBit(int t, int h, int n, int k, bool ties)
    {
        float[] Data(int seed) => GradCheck.Rand(t * h * n, seed).Select(v => ties ? MathF.Round(v * 2f) / 2f : v).ToArray();
        var (s1, s2) = (Data(22), Data(23));
        var (fi, fs) = Select(Devices.Cpu, s1, s2, t, h, n, k);
        var (pi, ps) = Select(Devices.CpuPortable, s1, s2, t, h, n, k);
        Assert.That(fi, Is.EqualTo(pi), "indices");
        Assert.That(fs.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(ps.Select(BitConverter.SingleToInt32Bits)), "scores");
        // And both are the brute-force top-k of the n*n sums, ties toward the smaller id.
        for (int item = 0; item < t * h; item++)
        {
            var want = Enumerable.Range(0, n * n).Select(i => (S: s1[item * n + i / n] + s2[item * n + i % n], I: i))
                .OrderByDescending(p => p.S).ThenBy(p => p.I).Take(k).ToArray();
            Assert.That(pi.Skip(item * k).Take(k), Is.EqualTo(want.Select(p => p.I)), $"item {item}");
        }
    }
}
