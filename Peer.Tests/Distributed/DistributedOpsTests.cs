// The distributed ops against their one-process definitions, with ranks as threads (ThreadGroup): the synchronised
// BatchNorm against BatchNorm1d on the concatenated batch, the column-sharded PEER experts against the double-precision
// reference and its central differences (forward, dx, dg and every slice of the table gradients), at 1 and 3 ranks with
// uneven token counts, and the column draws of the seeded normal against slices of the whole table.
using Peer.Distributed;

namespace Peer.Tests.Distributed;

using static Peer.Tests.PeerMath;

public sealed class DistributedOpsTests
{
    [Test]
    public void SyncBatchNormEqualsBatchNormOfTheWholeBatch()
    {
        int c = 4;
        int[] rows = [3, 5, 2];
        int n = rows.Sum();
        var x = GradCheck.Rand(n * c, 1, 3f);
        var w = GradCheck.Rand(c, 2);
        var b = GradCheck.Rand(c, 3);
        var dy = GradCheck.Rand(n * c, 4);
        var rm = GradCheck.Rand(c, 5);
        var rv = GradCheck.Rand(c, 6).Select(v => 1.5f + v).ToArray();

        var d = Devices.Cpu;
        float[] y, dx, dw, db, runMean, runVar;
        using (Scope.Begin())
        {
            var tx = Tensor.FromArray(d, x, n, c); tx.RequiresGrad = true;
            var tw = Tensor.FromArray(d, w, c); tw.RequiresGrad = true;
            var tb = Tensor.FromArray(d, b, c); tb.RequiresGrad = true;
            var trm = Tensor.FromArray(d, rm, c);
            var trv = Tensor.FromArray(d, rv, c);
            var ty = Peer.Ops.BatchNorm1d(tx, tw, tb, trm, trv, true);
            d.Tape.Backward(ty, Tensor.FromArray(d, dy, n, c));
            (y, dx, dw, db, runMean, runVar) = (ty.ToArray(), tx.Grad!.ToArray(), tw.Grad!.ToArray(), tb.Grad!.ToArray(), trm.ToArray(), trv.ToArray());
        }

        var parts = ThreadGroup.Run(rows.Length, (g, dev) =>
        {
            int first = rows.Take(g.Rank).Sum(), m = rows[g.Rank];
            var tx = Tensor.FromArray(dev, x[(first * c)..((first + m) * c)], m, c); tx.RequiresGrad = true;
            var tw = Tensor.FromArray(dev, w, c); tw.RequiresGrad = true;
            var tb = Tensor.FromArray(dev, b, c); tb.RequiresGrad = true;
            var trm = Tensor.FromArray(dev, rm, c);
            var trv = Tensor.FromArray(dev, rv, c);
            var ty = Peer.Ops.SyncBatchNorm1d(tx, tw, tb, trm, trv, true, 0.1f, 1e-5f, g);
            dev.Tape.Backward(ty, Tensor.FromArray(dev, dy[(first * c)..((first + m) * c)], m, c));
            return (Y: ty.ToArray(), Dx: tx.Grad!.ToArray(), Dw: tw.Grad!.ToArray(), Db: tb.Grad!.ToArray(), Rm: trm.ToArray(), Rv: trv.ToArray());
        });
        const float tol = 2e-5f; // float32 sums of a dozen O(1) terms, added in another order
        Assert.That(parts.SelectMany(p => p.Y).ToArray(), Is.EqualTo(y).Within(tol));
        Assert.That(parts.SelectMany(p => p.Dx).ToArray(), Is.EqualTo(dx).Within(tol));
        Assert.That(Enumerable.Range(0, c).Select(j => parts.Sum(p => p.Dw[j])).ToArray(), Is.EqualTo(dw).Within(tol), "weight gradients summed over ranks");
        Assert.That(Enumerable.Range(0, c).Select(j => parts.Sum(p => p.Db[j])).ToArray(), Is.EqualTo(db).Within(tol), "bias gradients summed over ranks");
        foreach (var p in parts)
        {
            Assert.That(p.Rm, Is.EqualTo(runMean).Within(tol));
            Assert.That(p.Rv, Is.EqualTo(runVar).Within(tol));
        }
    }

    [Test]
    public void SyncBatchNormRefusesASingleRowInTheWholeGroup()
    {
        var ex = Assert.Throws<AggregateException>(() => ThreadGroup.Run(2, (g, dev) =>
        {
            var x = Tensor.FromArray(dev, new float[g.Rank == 0 ? 2 : 0], g.Rank == 0 ? 1 : 0, 2);
            var one = Tensor.Full(dev, 1f, 2);
            var zero = Tensor.Zeros(dev, 2);
            return Peer.Ops.SyncBatchNorm1d(x, one, zero, Tensor.Zeros(dev, 2), Tensor.Full(dev, 1f, 2), true, 0.1f, 1e-5f, g).Length;
        }));
        Assert.That(ex!.InnerException!.Message, Does.Contain("1 rows over 2 ranks"));
    }

    [TestCase(1, PeerActivation.Gelu)]
    [TestCase(3, PeerActivation.Gelu)]
    [TestCase(2, PeerActivation.Relu)]
    public void ShardedExpertsMatchTheReferenceAndItsDifferences(int ranks, PeerActivation act)
    {
        int d = 7, h = 2, k = 2, hk = h * k, n = 9;
        int[] tokens = ranks switch { 1 => [5], 2 => [3, 2], _ => [2, 0, 3] }; // a rank without tokens still takes part
        int t = tokens.Sum();
        var rng = new Random(11);
        var idx = Enumerable.Range(0, t * hk).Select(_ => rng.Next(n)).ToArray();
        var x = GradCheck.Rand(t * d, 1);
        var g = GradCheck.Rand(t * hk, 2);
        var down = GradCheck.Rand(n * d, 3);
        var up = GradCheck.Rand(n * d, 4);
        var r = GradCheck.Rand(t * d, 5);

        var parts = ThreadGroup.Run(ranks, (group, dev) =>
        {
            var shard = new ColumnShard(group, d);
            int first = tokens.Take(group.Rank).Sum(), m = tokens[group.Rank], c0 = shard.MyStart, w = shard.MyCount;
            float[] Cols(float[] table) => Enumerable.Range(0, n).SelectMany(i => table[(i * d + c0)..(i * d + c0 + w)]).ToArray();
            var tx = Tensor.FromArray(dev, x[(first * d)..((first + m) * d)], m, d); tx.RequiresGrad = true;
            var tg = Tensor.FromArray(dev, g[(first * hk)..((first + m) * hk)], m, h, k); tg.RequiresGrad = true;
            var tDown = Tensor.FromArray(dev, Cols(down), n, w); tDown.RequiresGrad = true;
            var tUp = Tensor.FromArray(dev, Cols(up), n, w); tUp.RequiresGrad = true;
            var y = Peer.Ops.PeerExpertsSharded(tx, Tensor.FromArray(dev, idx[(first * hk)..((first + m) * hk)], m, h, k), tg, tDown, tUp, shard, act);
            dev.Tape.Backward(y, Tensor.FromArray(dev, r[(first * d)..((first + m) * d)], m, d));
            return (Y: y.ToArray(), Dx: tx.Grad!.ToArray(), Dg: tg.Grad!.ToArray(), C0: c0, W: w,
                DDown: PeerReference.Densify(tDown.SparseGrad!, n, w), DUp: PeerReference.Densify(tUp.SparseGrad!, n, w));
        });

        var (xd, gd, dd, ud) = (D(x), D(g), D(down), D(up));
        double Loss(double[] xx, double[] gg, double[] dn, double[] uu) => Dot(Experts(xx, idx, gg, dn, uu, t, d, hk, act), D(r));
        const double tol = 1e-4; // float32 device sums of O(1) terms vs exact derivatives
        Assert.That(parts.SelectMany(p => p.Y).ToArray(), Is.EqualTo(Experts(xd, idx, gd, dd, ud, t, d, hk, act)).Within(1e-5));
        Assert.That(parts.SelectMany(p => p.Dx).ToArray(), Is.EqualTo(NumGrad(v => Loss(v, gd, dd, ud), xd)).Within(tol));
        Assert.That(parts.SelectMany(p => p.Dg).ToArray(), Is.EqualTo(NumGrad(v => Loss(xd, v, dd, ud), gd)).Within(tol));
        var dDown = NumGrad(v => Loss(xd, gd, v, ud), dd);
        var dUp = NumGrad(v => Loss(xd, gd, dd, v), ud);
        foreach (var p in parts)
        {
            double[] Cols(double[] full) => Enumerable.Range(0, n).SelectMany(i => full[(i * d + p.C0)..(i * d + p.C0 + p.W)]).ToArray();
            Assert.That(p.DDown, Is.EqualTo(Cols(dDown)).Within(tol), $"experts.down gradient, columns {p.C0}..");
            Assert.That(p.DUp, Is.EqualTo(Cols(dUp)).Within(tol), $"experts.up gradient, columns {p.C0}..");
        }
    }

    [Test]
    public void ShardedExpertsAgreeWithTheFusedOpInOneProcess()
    {
        var dev = Devices.Cpu;
        int t = 6, d = 8, n = 16;
        var rng = new Random(3);
        var idx = Enumerable.Range(0, t * 8).Select(_ => rng.Next(n)).ToArray();
        using var s = Scope.Begin();
        var x = Tensor.FromArray(dev, GradCheck.Rand(t * d, 1), t, d);
        var g = Tensor.FromArray(dev, GradCheck.Rand(t * 8, 2), t, 2, 4);
        var down = Tensor.FromArray(dev, GradCheck.Rand(n * d, 3), n, d);
        var up = Tensor.FromArray(dev, GradCheck.Rand(n * d, 4), n, d);
        var ids = Tensor.FromArray(dev, idx, t, 2, 4);
        var fused = Peer.Ops.PeerExperts(x, ids, g, down, up).ToArray();
        var sharded = Peer.Ops.PeerExpertsSharded(x, ids, g, down, up, new ColumnShard(new SingleProcess(), d)).ToArray();
        Assert.That(sharded, Is.EqualTo(fused).Within(1e-5));
    }

    [Test]
    public void ShardedExpertsRefuseASliceOfTheWrongWidth()
    {
        var ex = Assert.Throws<AggregateException>(() => ThreadGroup.Run(2, (group, dev) =>
        {
            var x = Tensor.Zeros(dev, 1, 4);
            var slice = Tensor.Zeros(dev, 4, 4); // the whole width, where rank r holds 2 columns
            return Peer.Ops.PeerExpertsSharded(x, Tensor.ZerosInt(dev, 1, 1, 1), Tensor.Zeros(dev, 1, 1, 1), slice, slice, new ColumnShard(group, 4)).Length;
        }));
        Assert.That(ex!.InnerException!.Message, Does.Contain("[N, 2] (columns"));
    }

    [Test]
    public void NormalColumnsAreColumnsOfTheWholeDraw()
    {
        var dev = Devices.Cpu;
        using var s = Scope.Begin();
        var whole = Peer.Ops.Normal(dev, 77, 0.5f, 2f, 5, 7).ToArray();
        var part = Peer.Ops.NormalColumns(dev, 77, 0.5f, 2f, 5, 7, 2, 3).ToArray();
        var want = Enumerable.Range(0, 5).SelectMany(i => whole[(i * 7 + 2)..(i * 7 + 5)]).ToArray();
        Assert.That(part, Is.EqualTo(want), "bit for bit");
        Assert.Throws<ArgumentException>(() => Peer.Ops.NormalColumns(dev, 1, 0f, 1f, 2, 4, 3, 2));
    }
}
