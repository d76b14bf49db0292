namespace Peer.Tests.Ops;

/// <summary>The one sorted-insertion top-k (Ops/TopKList.cs) on the host, against sorting: the k best pairs by score
/// descending, ties toward the smaller id, whatever order they arrive in.</summary>
public sealed class TopKListTests
{
    readonly struct ArrayList(float[] scores, int[] ids) : ITopKList
    {
        public float Score(int m) => scores[m];
        public int Id(int m) => ids[m];
        public void Set(int m, float score, int id) { scores[m] = score; ids[m] = id; }
    }

    [TestCase(1, 1, false)]
    [TestCase(10, 1, true)]
    [TestCase(10, 10, false)]
    [TestCase(50, 7, true)]
    [TestCase(200, 64, true)]
    [TestCase(200, 13, false)]
    public void KeepsTheKBestInOrderWithTiesToTheSmallerId(int n, int k, bool ties)
    {
        var rng = new Random(n * 100 + k);
        var pairs = Enumerable.Range(0, n).Select(i => (S: ties ? rng.Next(5) / 2f : (float)rng.NextDouble(), I: i)).ToArray();
        var order = pairs.OrderBy(_ => rng.Next()).ToArray(); // arrival order unrelated to ids
        var (scores, ids) = (new float[k], new int[k]);
        var list = new ArrayList(scores, ids);
        int count = 0;
        foreach (var (s, i) in order) count = TopKList.Insert(list, count, k, s, i);
        var want = pairs.OrderByDescending(p => p.S).ThenBy(p => p.I).Take(k).ToArray();
        Assert.That(count, Is.EqualTo(Math.Min(n, k)));
        Assert.That(ids.Take(count), Is.EqualTo(want.Select(p => p.I)));
        Assert.That(scores.Take(count), Is.EqualTo(want.Select(p => p.S)));
    }

    [Test]
    public void BetterIsScoreThenSmallerId()
    {
        Assert.That(TopKList.Better(2f, 9, 1f, 0), Is.True);
        Assert.That(TopKList.Better(1f, 3, 1f, 4), Is.True);
        Assert.That(TopKList.Better(1f, 4, 1f, 4), Is.False);
        Assert.That(TopKList.Better(1f, 5, 1f, 4), Is.False);
        Assert.That(TopKList.Better(float.NaN, 0, 1f, 1), Is.False);
    }
}
