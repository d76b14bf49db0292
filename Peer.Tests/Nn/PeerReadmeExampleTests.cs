// The README's "PEER layer on its own" lines, at a size a test can afford (N = 32² instead of 1024²):
// they compile, run, and the optimizer step changes only the retrieved expert rows.
using Peer.Nn;
using Peer.Optim;

namespace Peer.Tests.Nn;

public sealed class PeerReadmeExampleTests
{
    [Test]
    public void ReadmeLinesRunAndTouchOnlyRetrievedRows()
    {
        var device = Devices.Cpu;
        using var peer = new PeerLayer(device, dim: 32, new PeerOptions { Experts = 32 * 32, Heads = 4, TopK = 4, QueryDim = 16 });
        using var optimizer = new AdamW(peer.NamedParameters(), lr: 1e-3f);
        var down = peer.NamedParameters().Single(p => p.Name == "experts.down").Tensor;
        var before = down.ToArray();
        int[] retrieved;
        using (Scope.Begin())
        {
            var x = Peer.Ops.Normal(device, seed: 1, mean: 0, std: 1, 64, 32);
            var y = peer.Forward(x);
            retrieved = peer.LastIndices!.ToIntArray();
            var loss = Peer.Ops.Mean(Peer.Ops.Square(y));
            loss.Backward();
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        var after = down.ToArray();
        var touched = retrieved.ToHashSet();
        int changedRows = 0;
        for (int row = 0; row < 32 * 32; row++)
        {
            bool changed = Enumerable.Range(0, 32).Any(c => after[row * 32 + c] != before[row * 32 + c]);
            if (changed) changedRows++;
            if (!touched.Contains(row)) Assert.That(changed, Is.False, $"row {row} was not retrieved but changed");
        }
        Assert.That(changedRows, Is.GreaterThan(0));
        Assert.That(changedRows, Is.LessThanOrEqualTo(touched.Count));
    }
}
