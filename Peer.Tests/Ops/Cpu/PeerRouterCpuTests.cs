namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU bodies of the PEER router and the expert ids' range check (loaded on <see cref="Devices.Cpu"/>) against the
/// portable kernels (the definition, loaded on <see cref="Devices.CpuPortable"/>); the public router is checked against double
/// references and finite differences in PeerExpertsTests.</summary>
public sealed class PeerRouterCpuTests
{
    // The router's weights and the scores' gradient for upstream gradient r, on device d.
    static (float[] G, float[] DS) Router(Device d, float[] sc, float[] r, int t, int h, int k, PeerRouter router)
    {
        using var s = Scope.Begin();
        var ts = Tensor.FromArray(d, sc, t, h, k); ts.RequiresGrad = true;
        var g = Peer.Ops.PeerRouterWeights(ts, router);
        d.Tape.Backward(g, Tensor.FromArray(d, r, t, h, k));
        return (g.ToArray(), ts.Grad!.ToArray());
    }

    // Same formulas, same order, the same XMath.Exp: identical bits. Scores with a wide range (exponentials that underflow),
    // repeated maxima, k = 1 and odd sizes, both routers.
    [TestCase(5, 3, 4, PeerRouter.Softmax)]
    [TestCase(7, 2, 1, PeerRouter.Softmax)]
    [TestCase(3, 4, 13, PeerRouter.Softmax)]
    [TestCase(5, 3, 4, PeerRouter.Sigmoid)]
    [TestCase(4, 1, 7, PeerRouter.Sigmoid)]
    public void RouterBodiesMatchPortableKernelsBitForBit(int t, int h, int k, PeerRouter router)
    {
        var sc = GradCheck.Rand(t * h * k, 41).Select((v, i) => i % 5 == 0 ? 3f : i % 7 == 0 ? v * 120f : v * 4f).ToArray();
        var r = GradCheck.Rand(t * h * k, 42);
        var (bg, bd) = Router(Devices.Cpu, sc, r, t, h, k, router);
        var (pg, pd) = Router(Devices.CpuPortable, sc, r, t, h, k, router);
        Assert.That(bg.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(pg.Select(BitConverter.SingleToInt32Bits)), "weights");
        Assert.That(bd.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(pd.Select(BitConverter.SingleToInt32Bits)), "score gradient");
    }

    // The count of ids outside [0, n), against the host's count: the edges (-1, 0, n - 1, n, int.MinValue, int.MaxValue) at
    // the start, the end and across the blocks the workers take.
    [TestCase(1, 10)]
    [TestCase(7, 10)]
    [TestCase(1001, 64)]
    public void RangeCheckCountsIdsOutsideTheTable(int p, int n)
    {
        var rng = new Random(p);
        int[] edges = [-1, 0, n - 1, n, int.MinValue, int.MaxValue];
        var ids = Enumerable.Range(0, p).Select(i => i % 3 == 0 ? edges[rng.Next(edges.Length)] : rng.Next(0, n)).ToArray();
        ids[^1] = n;
        int want = ids.Count(i => i < 0 || i >= n);
        foreach (var d in new[] { Devices.Cpu, Devices.CpuPortable })
        {
            using var s = Scope.Begin();
            Assert.That(Peer.Ops.CountOutOfRange(Tensor.FromArray(d, ids, p), n), Is.EqualTo(want), d.ToString());
        }
    }
}
