// The sort-and-segment reduction behind every row-sparse PEER gradient: stable sort against LINQ's
// stable OrderBy, segments and per-row sums against host sums, at awkward sizes.
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class PeerSegmentsTests(string backend)
{
    Device D => Devices.Get(backend);

    [TestCase(1, 5)]
    [TestCase(2, 1)]
    [TestCase(7, 3)]
    [TestCase(1000, 37)]
    [TestCase(4097, 100000)]
    public void SortIsStableAndSegmentsSumPerRow(int p, int range)
    {
        var rng = new Random(p);
        var keys = Enumerable.Range(0, p).Select(_ => rng.Next(0, range)).ToArray();
        var coef = GradCheck.Rand(p, 2);
        int cols = 3;
        var src = GradCheck.Rand(p * cols, 3);
        using var s = Scope.Begin();
        var (sorted, order) = RowSparse.Sort(Tensor.FromArray(D, keys, p));
        var want = Enumerable.Range(0, p).OrderBy(i => keys[i]).ToArray();
        Assert.That(order.ToIntArray(), Is.EqualTo(want));
        Assert.That(sorted.ToIntArray(), Is.EqualTo(want.Select(i => keys[i]).ToArray()));
        var (rows, starts) = RowSparse.Segment(sorted);
        var distinct = keys.Distinct().OrderBy(k => k).ToArray();
        Assert.That(rows.ToIntArray(), Is.EqualTo(distinct));
        var values = RowSparse.Reduce(starts, order, Tensor.FromArray(D, coef, p), Tensor.FromArray(D, src, p, cols), 1, cols, 0, cols).ToArray();
        for (int r = 0; r < distinct.Length; r++)
            for (int c = 0; c < cols; c++)
            {
                double sum = Enumerable.Range(0, p).Where(i => keys[i] == distinct[r]).Sum(i => (double)coef[i] * src[i * cols + c]);
                Assert.That(values[r * cols + c], Is.EqualTo(sum).Within(1e-4));
            }
    }
}
