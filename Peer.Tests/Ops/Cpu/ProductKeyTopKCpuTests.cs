namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU bodies of product-key retrieval (the selection, the halves' copy, the query's gradient; loaded on
/// <see cref="Devices.Cpu"/>) against the portable kernels (the definition, loaded on <see cref="Devices.CpuPortable"/>), both
/// launched directly on the same inputs; the public op is checked against brute force in ProductKeyTopKTests.</summary>
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
    // The body's floor (k <= 8, n >= 16): every group size (k = 1, 2, 3..4, 5..8), n at, above and off a multiple of 8, columns
    // past the last 8-wide block, ties at the floor itself.
    [TestCase(6, 4, 64, 4, true)]
    [TestCase(6, 4, 64, 4, false)]
    [TestCase(5, 3, 16, 1, true)]
    [TestCase(4, 3, 17, 2, true)]
    [TestCase(7, 2, 37, 3, true)]
    [TestCase(3, 4, 100, 5, false)]
    [TestCase(3, 3, 71, 8, true)]
    [TestCase(2, 2, 256, 8, false)]
    public void SelectionBodyMatchesPortableKernelBitForBit(int t, int h, int n, int k, bool ties)
    {
        Assume.That(Devices.Cpu.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable selection");
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

    // Scores the floor must not mislead: rows of one repeated value (every column ties), +0 and -0 mixed (equal, different
    // bits: each kept score must be its own column's), a NaN in a row (the body then scans as the portable kernel does,
    // whose result depends on where the NaN falls), infinities.
    [TestCase(16, 4)]
    [TestCase(64, 4)]
    [TestCase(40, 8)]
    [TestCase(64, 1)]
    public void SelectionBodyMatchesPortableKernelOnTiesZerosAndNaNs(int n, int k)
    {
        Assume.That(Devices.Cpu.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable selection");
        const int t = 6, h = 2;
        var rng = new Random(n * 10 + k);
        float[] Data()
        {
            var a = new float[t * h * n];
            for (int row = 0; row < t * h; row++)
                for (int c = 0; c < n; c++)
                    a[row * n + c] = (row % 6) switch
                    {
                        0 => 1.5f,
                        1 => rng.Next(2) == 0 ? 0f : -0f,
                        2 => c == rng.Next(n) ? float.NaN : rng.Next(-3, 4) * 0.5f,
                        3 => c % 9 == 4 ? float.NaN : (float)rng.NextDouble(),
                        4 => rng.Next(4) == 0 ? float.PositiveInfinity : rng.Next(4) == 0 ? float.NegativeInfinity : (float)rng.NextDouble(),
                        _ => rng.Next(-1, 2) * 0.25f,
                    };
            return a;
        }
        var (s1, s2) = (Data(), Data());
        var (fi, fs) = Select(Devices.Cpu, s1, s2, t, h, n, k);
        var (pi, ps) = Select(Devices.CpuPortable, s1, s2, t, h, n, k);
        Assert.That(fi, Is.EqualTo(pi), "indices");
        Assert.That(fs.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(ps.Select(BitConverter.SingleToInt32Bits)), "scores");
    }

    // The query's gradient and the halves' copy of device d's launcher: dS, ids [t, h, k] and sub-keys [n, dq/2] -> dq [t, h*dq];
    // q [t*h, dq] -> its halves, copied from row `start` on.
    static (float[] Dq, float[] Qa, float[] Qb) Backward(Device d, float[] dS, int[] ids, float[] k1, float[] k2, float[] q, int t, int h, int n, int k, int dq, int start)
    {
        using var s = Scope.Begin();
        var kernels = d.Get(static d => new ProductKeyKernels(d));
        var shape = new RetrievalShape(h, dq, n, k);
        var grad = Tensor.Empty(d, DType.F32, t, h * dq);
        var w = d.Split(t * h);
        kernels.BackwardQuery(w.Workers, w, shape, Tensor.FromArray(d, dS, t, h, k).View, Tensor.FromArray(d, ids, t, h, k).IntView,
            Tensor.FromArray(d, k1, n, dq / 2).View, Tensor.FromArray(d, k2, n, dq / 2).View, grad.View);
        int rows = t * h - start;
        var (qa, qb) = (Tensor.Empty(d, DType.F32, rows, dq / 2), Tensor.Empty(d, DType.F32, rows, dq / 2));
        var wr = d.Split(rows);
        kernels.SplitHalves(wr.Workers, wr, shape, Tensor.FromArray(d, q, t * h, dq).View, qa.View, qb.View, start);
        return (grad.ToArray(), qa.ToArray(), qb.ToArray());
    }

    // Query sizes below, at and across the 8-lane width (the halves 1, 3, 8, 13, 128 floats), repeated ids (the same sub-key row
    // taken twice), a chunk that starts mid-way.
    [TestCase(1, 1, 2, 1, 2, 0)]
    [TestCase(3, 2, 5, 3, 6, 1)]
    [TestCase(4, 3, 9, 4, 16, 0)]
    [TestCase(5, 2, 7, 7, 26, 3)]
    [TestCase(6, 8, 33, 16, 256, 5)]
    public void QueryGradientAndHalvesAgreeWithPortableKernelsBitForBit(int t, int h, int n, int k, int dq, int start)
    {
        Assume.That(Devices.Cpu.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable gradient");
        var rng = new Random(t * 100 + dq);
        var ids = Enumerable.Range(0, t * h * k).Select(_ => rng.Next(0, n * n)).ToArray();
        var dS = GradCheck.Rand(t * h * k, 31);
        var (k1, k2) = (GradCheck.Rand(n * dq / 2, 32), GradCheck.Rand(n * dq / 2, 33));
        var q = GradCheck.Rand(t * h * dq, 34);
        var a = Backward(Devices.Cpu, dS, ids, k1, k2, q, t, h, n, k, dq, start);
        var b = Backward(Devices.CpuPortable, dS, ids, k1, k2, q, t, h, n, k, dq, start);
        Assert.That(a.Dq, Is.EqualTo(b.Dq), "dq: the same products and sums in the same order");
        Assert.That(a.Qa, Is.EqualTo(b.Qa), "first halves");
        Assert.That(a.Qb, Is.EqualTo(b.Qb), "second halves");
        // And dq against the host in double: k terms per element, each within k u Σ|terms| of the exact sum.
        for (int item = 0; item < t * h; item++)
            for (int p = 0; p < dq; p++)
            {
                double want = 0, abs = 0;
                for (int m = 0; m < k; m++)
                {
                    int i = ids[item * k + m], r = i / n, c = i % n;
                    double term = dS[item * k + m] * (p < dq / 2 ? k1[r * (dq / 2) + p] : k2[c * (dq / 2) + p - dq / 2]);
                    want += term;
                    abs += Math.Abs(term);
                }
                Assert.That(a.Dq[item * dq + p], Is.EqualTo(want).Within(2 * k * abs / (1 << 24) + 1e-30), $"dq[{item}, {p}]");
            }
    }
}
