namespace Peer.Tests.Ops.Cpu;

/// <summary>The sort-and-segment CPU bodies (the whole sort and segmentation in the runs pass, the SIMD segment sums; loaded on
/// <see cref="Devices.Cpu"/>) against the portable kernels (runs, merge levels, sums; loaded on <see cref="Devices.CpuPortable"/>):
/// a stable sort's result is unique and each output element adds the same terms in the same order, so every bit agrees.</summary>
public sealed class SortSegmentCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    static (int[] Keys, int[] Order, int[] Rows, int[] Starts, float[] Sums) Run(Device d, int[] old, int[] ids, int limit, float[] oldValues,
        float[]? coef, float[] src, int div, int stride, int offset, int cols, SortSegmentShape? shape)
    {
        using var scope = Scope.Begin();
        using var s = SortSegment.Run(old.Length == 0 ? null : Tensor.FromArray(d, old, old.Length), Tensor.FromArray(d, ids, ids.Length), limit, shape);
        var first = old.Length == 0 ? null : Tensor.FromArray(d, oldValues, old.Length, cols);
        var c = coef is null ? null : Tensor.FromArray(d, coef, coef.Length);
        var sums = SortSegment.Sum(s, first, c, Tensor.FromArray(d, src, src.Length / stride, stride), div, stride, offset, cols, shape);
        return (s.Keys.ToIntArray(), s.Order.ToIntArray(), s.Rows.ToIntArray(), s.Starts.ToIntArray(), sums.ToArray());
    }

    // Sizes around the run length, the digit width and the 8-lane width; limits of one, two and three radix digits (11 bits
    // each) and int.MaxValue; dropped (negative, too large) keys; an older gradient's rows merged first; source rows read with
    // a divisor, stride and offset as PEER and PKM read them; the GPU's cut (one column per item) on the CPU. Both sorts of
    // the body: counting (limits up to 2^16, or up to twice the pairs: the vision preset's experts, 32768 pairs into 4096
    // rows, and sub-keys, into 64 rows; a limit of 0, every key dropped) and radix (larger limits), either side of the switch.
    [TestCase(1, 1, 0, 1, false)]
    [TestCase(37, 0, 0, 4, false)]
    [TestCase(32768, 4096, 0, 64, false)]
    [TestCase(32768, 64, 0, 16, false)]
    [TestCase(32768, 4096, 3000, 24, false)]
    [TestCase(40000, 80000, 0, 3, false)]
    [TestCase(40000, 80001, 0, 3, false)]
    [TestCase(9, 5, 0, 3, false)]
    [TestCase(300, 2048, 17, 8, false)]
    [TestCase(5000, 100_000, 40, 13, false)]
    [TestCase(20011, 1 << 22, 0, 16, false)]
    [TestCase(7001, int.MaxValue, 25, 9, false)]
    [TestCase(2049, 700, 30, 11, true)]
    public void BodiesAgreeWithThePortableKernelsBitForBit(int p, int limit, int n1, int cols, bool gpuShape)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable sums");
        var rng = new Random(p + limit % 1000 + n1);
        int range = (int)Math.Min(limit, 3L * p + 7);
        // Kept ids in [0, range), and a few dropped ones: negative, the limit itself, int.MaxValue.
        var ids = Enumerable.Range(0, p).Select(_ => rng.Next(-1, range + 2) is var k && k < range ? k : k == range ? limit : int.MaxValue).ToArray();
        var old = Enumerable.Range(0, Math.Min(range, 2 * n1 + 1)).OrderBy(_ => rng.Next()).Take(n1).Order().ToArray();
        const int div = 3, offset = 2;
        int stride = cols + 4;
        var oldValues = GradCheck.Rand(n1 * cols, 4);
        var coef = p % 2 == 0 ? null : GradCheck.Rand(p, 5);
        var src = GradCheck.Rand((p / div + 1) * stride, 6);
        var shape = gpuShape ? SortSegmentShape.Gpu : (SortSegmentShape?)null;
        var a = Run(D, old, ids, limit, oldValues, coef, src, div, stride, offset, cols, shape);
        var b = Run(P, old, ids, limit, oldValues, coef, src, div, stride, offset, cols, shape);
        Assert.That(a.Keys, Is.EqualTo(b.Keys), "sorted keys");
        Assert.That(a.Order, Is.EqualTo(b.Order), "order");
        Assert.That(a.Rows, Is.EqualTo(b.Rows), "rows");
        Assert.That(a.Starts, Is.EqualTo(b.Starts), "starts");
        Assert.That(a.Sums, Is.EqualTo(b.Sums), "sums, bit for bit");
        if (p > 1 && limit > 0) Assert.That(a.Rows.Length, Is.GreaterThan(0), "the case has segments to sum");
    }

    [Test]
    public void TheSortBodySkipsTheMergeAndHeadsPasses()
    {
        // The point of the body: a sort is one launch of the runs kernel, not one per merge level and heads pass (the profiler
        // counts them).
        using var device = Device.Open("cpu");
        Assume.That(device.CpuBodyBits, Is.GreaterThanOrEqualTo(0));
        var ids = Enumerable.Range(0, 5000).Select(i => (i * 7919) % 1000).ToArray();
        using (var warm = Scope.Begin()) SortSegment.Run(null, Tensor.FromArray(device, ids, ids.Length), 1000).Dispose();
        using var p = device.Profile();
        using (var scope = Scope.Begin()) SortSegment.Run(null, Tensor.FromArray(device, ids, ids.Length), 1000).Dispose();
        var launches = p.Rows().Where(r => r.IsKernel).ToDictionary(r => r.Op, r => r.Calls);
        Assert.That(launches.GetValueOrDefault("SortSegment.Runs"), Is.EqualTo(1));
        // The body also writes the segments: the heads, scan and padding passes are skipped too.
        Assert.That(launches.Keys.Where(op => op.StartsWith("SortSegment.", StringComparison.Ordinal)), Is.EqualTo(new[] { "SortSegment.Runs" }));
    }
}
