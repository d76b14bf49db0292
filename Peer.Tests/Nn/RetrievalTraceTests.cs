// RetrievalTrace: what it records is exactly what the layer retrieved, under the sample and position numbering announced;
// forwards nobody announced are left out; a row count that contradicts the announcement is an error; disposing detaches.
using Peer.Nn;

namespace Peer.Tests.Nn;

public sealed class RetrievalTraceTests
{
    static PeerLayer Layer(ulong seed) => new(Devices.Cpu, 8, new PeerOptions { Experts = 36, Heads = 2, TopK = 3, QueryDim = 4, QueryNorm = PeerQueryNorm.None, Seed = seed });

    [Test]
    public void RecordsEachAnnouncedSelectionWithItsSamplePositionAndHead()
    {
        using var a = Layer(1);
        using var b = Layer(2);
        using var trace = new RetrievalTrace([("a", a), ("b", b)]);
        using var s = Scope.Begin();
        var x = Tensor.FromArray(Devices.Cpu, GradCheck.Rand(6 * 8, 3), 6, 8);
        trace.BeginBatch(firstSample: 10, samples: 2, positions: 3);
        a.Forward(x);
        b.Forward(x);
        var ids = a.LastIndices!.ToIntArray();
        var weights = a.LastWeights!.ToArray();
        var got = trace["a"].Selections().ToArray();
        Assert.That(got, Has.Length.EqualTo(6 * 2 * 3));
        for (int i = 0; i < got.Length; i++)
        {
            int row = i / 6, head = i / 3 % 2;
            Assert.That(got[i], Is.EqualTo(new ExpertSelection(10 + row / 3, row % 3, "a", head, ids[i], weights[i])));
        }
        Assert.That(trace["b"].Count, Is.EqualTo(36));
        Assert.That(trace["a"].SelectionCounts().Sum(), Is.EqualTo(36));
        var sums = trace["a"].WeightSums();
        Assert.That(sums.Sum(), Is.EqualTo(weights.Sum(w => (double)w)).Within(1e-5));
        Assert.That(trace["a"].Rows().Select(r => (r.Sample, r.Position)), Is.EqualTo(new[] { (10, 0), (10, 1), (10, 2), (11, 0), (11, 1), (11, 2) }));
    }

    [Test]
    public void UnannouncedForwardsAreNotRecordedAndAMismatchIsAnError()
    {
        using var a = Layer(3);
        using var s = Scope.Begin();
        var x = Tensor.FromArray(Devices.Cpu, GradCheck.Rand(4 * 8, 4), 4, 8);
        using (var trace = new RetrievalTrace([("a", a)]))
        {
            a.Forward(x);
            Assert.That((trace["a"].Count, trace.Unannounced), Is.EqualTo((0L, 1)));
            trace.BeginBatch(0, 3, 1);
            Assert.That(Assert.Throws<InvalidOperationException>(() => a.Forward(x))!.Message, Does.Contain("4 rows").And.Contain("3 samples x 1"));
            trace.BeginBatch(0, 4, 1);
            a.Forward(x);
            a.Forward(x);
            Assert.That((trace["a"].Count, trace.Unannounced), Is.EqualTo((4L * 6, 2)), "one announcement, one forward");
            Assert.Throws<KeyNotFoundException>(() => _ = trace["b"]);
        }
        using var other = new RetrievalTrace([("a", a)]);
        Assert.Throws<ArgumentException>(() => new RetrievalTrace([("a", a), ("a", a)]));
        other.BeginBatch(0, 4, 1);
        a.Forward(x); // the disposed trace no longer listens: no error from its stale announcement
        Assert.That(other["a"].Count, Is.EqualTo(24));
    }
}
