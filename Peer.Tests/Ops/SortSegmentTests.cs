// The sort-and-segment reduction behind every row-sparse gradient, against a brute-force host computation: the stable
// sort against LINQ's stable OrderBy, the segments against the distinct kept keys, the sums against host sums in
// ascending pair order; at awkward sizes (empty, one, around the run length and the worker count), with many
// duplicates, all-equal keys, dropped keys and an older gradient merged in; and the same bits whatever the worker count
// and in the GPU's cut of the passes (short merge ranges, many head blocks scanned in log steps, a column per item).
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class SortSegmentTests(string backend)
{
    Device D => Devices.Get(backend);

    /// <summary>Host reference: stable sort of the kept pairs (dropped keys last, in pair order), distinct kept keys, bounds,
    /// in the padded layout: B = min(P, limit) segments, the R real ones then rows NoRow with empty bounds (the last repeated).</summary>
    static (int[] Keys, int[] Order, int[] Rows, int[] Starts, int Count) Reference(int[] keys, int limit)
    {
        int Key(int i) => keys[i] >= 0 && keys[i] < limit ? keys[i] : int.MaxValue;
        var order = Enumerable.Range(0, keys.Length).OrderBy(Key).ToArray();
        var sorted = order.Select(Key).ToArray();
        var rows = sorted.Where(k => k != int.MaxValue).Distinct().ToArray();
        int kept = sorted.Count(k => k != int.MaxValue), bound = Math.Min(keys.Length, limit);
        var starts = rows.Select(r => Array.IndexOf(sorted, r)).Append(kept).ToList();
        var padded = rows.Concat(Enumerable.Repeat(RowSparseGrad.NoRow, bound - rows.Length)).ToArray();
        starts.AddRange(Enumerable.Repeat(kept, bound - rows.Length));
        return (sorted, order, padded, keys.Length == 0 ? [0] : starts.ToArray(), rows.Length);
    }

    /// <summary>Host sums in float, each segment in ascending pair order, as the kernel adds them.</summary>
    static float[] HostSums(int[] order, int[] starts, float[] coef, float[] src, int cols)
    {
        var sums = new float[(starts.Length - 1) * cols];
        for (int s = 0; s + 1 < starts.Length; s++)
            for (int q = starts[s]; q < starts[s + 1]; q++)
                for (int c = 0; c < cols; c++) sums[s * cols + c] += coef[order[q]] * src[order[q] * cols + c];
        return sums;
    }

    // The CPU accelerator runs the kernel's float arithmetic as the host does: equal bits. OpenCL compilers may contract
    // a * b + c into one fused multiply-add (OpenCL C allows it by default), which rounds once: a few ulps.
    void AssertSums(float[] got, float[] want, string what)
    {
        if (backend == "cpu") Assert.That(got, Is.EqualTo(want), what);
        else Assert.That(got, Is.EqualTo(want).Within(1e-5), what);
    }

    [TestCase(0, 5)]
    [TestCase(1, 5)]
    [TestCase(2, 1)]
    [TestCase(7, 3)]
    [TestCase(8, 3)]
    [TestCase(9, 2)]
    [TestCase(17, 1000)]
    [TestCase(1000, 37)]
    [TestCase(1001, 4)]
    [TestCase(4097, 100000)]
    [TestCase(20011, 50)]
    public void SortSegmentsAndSumsMatchTheHost(int p, int range)
    {
        var rng = new Random(p + 17 * range);
        var keys = Enumerable.Range(0, p).Select(_ => rng.Next(0, range)).ToArray();
        int cols = 3;
        var coef = GradCheck.Rand(p, 2);
        var src = GradCheck.Rand(p * cols, 3);
        using var scope = Scope.Begin();
        using var s = SortSegment.Run(null, Tensor.FromArray(D, keys, p), range);
        var want = Reference(keys, range);
        Assert.That(s.Keys.ToIntArray(), Is.EqualTo(want.Keys), "sorted keys");
        Assert.That(s.Order.ToIntArray(), Is.EqualTo(want.Order), "order (stable)");
        Assert.That(s.Rows.ToIntArray(), Is.EqualTo(want.Rows), "rows");
        Assert.That(s.Starts.ToIntArray(), Is.EqualTo(want.Starts), "starts");
        Assert.That(s.Count.ToIntArray(), Is.EqualTo(new[] { want.Count }), "the count of segments, on the device");
        var sums = SortSegment.Sum(s, null, Tensor.FromArray(D, coef, p), Tensor.FromArray(D, src, p, cols), 1, cols, 0, cols);
        Assert.That(sums.Shape, Is.EqualTo(new[] { want.Rows.Length, cols }));
        AssertSums(sums.ToArray(), HostSums(want.Order, want.Starts, coef, src, cols), "sums");
    }

    [TestCase(1)]
    [TestCase(8)]
    [TestCase(1003)]
    public void AllEqualKeysMakeOneSegmentInPairOrder(int p)
    {
        var keys = Enumerable.Repeat(6, p).ToArray();
        using var scope = Scope.Begin();
        using var s = SortSegment.Run(null, Tensor.FromArray(D, keys, p), 7);
        Assert.That(s.Order.ToIntArray(), Is.EqualTo(Enumerable.Range(0, p).ToArray()));
        // One segment, padded to min(P, 7) rows: the padding rows are empty segments at P.
        int bound = Math.Min(p, 7);
        Assert.That(s.Rows.ToIntArray(), Is.EqualTo(new[] { 6 }.Concat(Enumerable.Repeat(RowSparseGrad.NoRow, bound - 1))));
        Assert.That(s.Starts.ToIntArray(), Is.EqualTo(new[] { 0 }.Concat(Enumerable.Repeat(p, bound))));
        Assert.That(s.Count.ToIntArray(), Is.EqualTo(new[] { 1 }));
    }

    [TestCase(0, 12)]
    [TestCase(5, 0)]
    [TestCase(6, 1)]
    [TestCase(40, 333)]
    [TestCase(90, 2048)]
    public void DroppedKeysAndAnOlderGradientMergeLikeTheHost(int n1, int n2)
    {
        // Pairs 0..n1-1 are an older gradient's rows (distinct); the new keys include ids outside [0, limit), which are dropped.
        const int limit = 97, cols = 2;
        var rng = new Random(n1 * 31 + n2);
        var old = Enumerable.Range(0, limit).OrderBy(_ => rng.Next()).Take(n1).OrderBy(r => r).ToArray();
        var ids = Enumerable.Range(0, n2).Select(_ => rng.Next(-3, limit + 3)).ToArray();
        var oldValues = GradCheck.Rand(n1 * cols, 4);
        var values = GradCheck.Rand(n2 * cols, 5);
        using var scope = Scope.Begin();
        using var s = SortSegment.Run(n1 == 0 ? null : Tensor.FromArray(D, old, n1), Tensor.FromArray(D, ids, n2), limit);
        var all = old.Concat(ids).ToArray();
        var want = Reference(all, limit);
        Assert.That(s.Order.ToIntArray(), Is.EqualTo(want.Order), "order");
        Assert.That(s.Rows.ToIntArray(), Is.EqualTo(want.Rows), "rows");
        Assert.That(s.Starts.ToIntArray(), Is.EqualTo(want.Starts), "starts: the last bound is the first dropped position");
        Assert.That(s.Count.ToIntArray(), Is.EqualTo(new[] { want.Count }), "the count of segments, on the device");
        var first = n1 == 0 ? null : Tensor.FromArray(D, oldValues, n1, cols);
        var sums = SortSegment.Sum(s, first, null, Tensor.FromArray(D, values, n2, cols), 1, cols, 0, cols);
        var ones = Enumerable.Repeat(1f, n1 + n2).ToArray();
        AssertSums(sums.ToArray(), HostSums(want.Order, want.Starts, ones, oldValues.Concat(values).ToArray(), cols), "sums");
    }

    [Test]
    public void SourceRowsFollowDivStrideAndOffset()
    {
        // Pair o reads row o / div of a [rows, stride] source at columns offset .. offset + cols - 1 (the PEER and PKM layout).
        const int p = 300, div = 4, stride = 7, offset = 2, cols = 3;
        var rng = new Random(3);
        var keys = Enumerable.Range(0, p).Select(_ => rng.Next(0, 20)).ToArray();
        var coef = GradCheck.Rand(p, 6);
        var src = GradCheck.Rand(p / div * stride, 7);
        using var scope = Scope.Begin();
        using var s = SortSegment.Run(null, Tensor.FromArray(D, keys, p), 20);
        var got = SortSegment.Sum(s, null, Tensor.FromArray(D, coef, p), Tensor.FromArray(D, src, p / div, stride), div, stride, offset, cols).ToArray();
        var want = Reference(keys, 20);
        var gathered = new float[p * cols];
        for (int o = 0; o < p; o++)
            for (int c = 0; c < cols; c++) gathered[o * cols + c] = src[o / div * stride + offset + c];
        AssertSums(got, HostSums(want.Order, want.Starts, coef, gathered, cols), "sums");
    }

    [Test]
    public void ResultDoesNotDependOnTheWorkerCount()
    {
        const int p = 10007, cols = 5, limit = 300;
        var rng = new Random(9);
        var keys = Enumerable.Range(0, p).Select(_ => rng.Next(-5, limit)).ToArray();
        var coef = GradCheck.Rand(p, 8);
        var src = GradCheck.Rand(p * cols, 9);
        (int[], int[], int[], float[]) Run(Device d)
        {
            using var scope = Scope.Begin();
            using var s = SortSegment.Run(null, Tensor.FromArray(d, keys, p), limit);
            var sums = SortSegment.Sum(s, null, Tensor.FromArray(d, coef, p), Tensor.FromArray(d, src, p, cols), 1, cols, 0, cols);
            return (s.Order.ToIntArray(), s.Rows.ToIntArray(), s.Starts.ToIntArray(), sums.ToArray());
        }
        using var one = Device.Open("cpu", new DeviceOptions { CpuThreads = 1 });
        using var three = Device.Open("cpu", new DeviceOptions { CpuThreads = 3 });
        var a = Run(one);
        var b = Run(three);
        var c = Run(D);
        Assert.That(b.Item1, Is.EqualTo(a.Item1), "order, 3 workers vs 1");
        Assert.That(b.Item2, Is.EqualTo(a.Item2), "rows, 3 workers vs 1");
        Assert.That(b.Item3, Is.EqualTo(a.Item3), "starts, 3 workers vs 1");
        Assert.That(b.Item4, Is.EqualTo(a.Item4), "sums bitwise, 3 workers vs 1");
        Assert.That(c.Item1, Is.EqualTo(a.Item1), $"order, {backend} vs 1 CPU worker");
        Assert.That(c.Item3, Is.EqualTo(a.Item3), $"starts, {backend} vs 1 CPU worker");
        AssertSums(c.Item4, a.Item4, $"sums, {backend} vs 1 CPU worker");
    }

    [TestCase(1)]
    [TestCase(33)]
    [TestCase(20011)]
    public void TheGpuShapeGivesTheSameBits(int p)
    {
        const int cols = 5, limit = 700;
        var rng = new Random(p);
        var keys = Enumerable.Range(0, p).Select(_ => rng.Next(-4, limit)).ToArray();
        var coef = GradCheck.Rand(p, 10);
        var src = GradCheck.Rand(p * cols, 11);
        (int[], int[], int[], float[]) Run(SortSegmentShape? shape)
        {
            using var scope = Scope.Begin();
            using var s = SortSegment.Run(null, Tensor.FromArray(D, keys, p), limit, shape);
            var sums = SortSegment.Sum(s, null, Tensor.FromArray(D, coef, p), Tensor.FromArray(D, src, p, cols), 1, cols, 0, cols, shape);
            return (s.Order.ToIntArray(), s.Rows.ToIntArray(), s.Starts.ToIntArray(), sums.ToArray());
        }
        var a = Run(null);
        var b = Run(SortSegmentShape.Gpu);
        var want = Reference(keys, limit);
        Assert.That(b.Item1, Is.EqualTo(want.Order), "order");
        Assert.That(b.Item2, Is.EqualTo(want.Rows), "rows");
        Assert.That(b.Item3, Is.EqualTo(want.Starts), "starts");
        Assert.That(b.Item4, Is.EqualTo(a.Item4), "sums: the same additions in the same order");
    }
}
