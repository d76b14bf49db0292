// PEER experts with experts.down/up split by columns between the ranks of a group (expert parallelism; the derivation and
// the choice over row sharding: docs/distributed.md). Rank r holds columns [start_r, start_r + d_r) of both tables, [N, d_r].
// Forward for the tokens of every rank: the ids and router weights are all-gathered; x's column slices go to their owners by
// all-to-all, so rank r holds X_r = x[:, slice r] of all Tg tokens; partial dots z_r = down_r[i] . X_r[t] are all-reduced into
// z (the full u_i . x); rank r computes its slice of y, sum g act(z) up_r[i], for every token, and an all-to-all sends each
// token's slices back to the rank that owns the token. Backward mirrors it (dY slices out, partial up_r[i] . dY all-reduced,
// dX slices back); the gradients of down_r/up_r are complete on their rank without communication (row-sparse, summed by
// sort-and-segment). Nothing of size [T, h, k, d] exists; the kernels read table rows where they are.
using ILGPU;
using ILGPU.Runtime;
using Peer.Distributed;

namespace Peer;

/// <summary>How the columns of a width-<see cref="Dim"/> table split between the ranks of <see cref="Group"/>: rank r holds columns
/// <c>[Start(r), Start(r + 1))</c>, contiguous, in rank order, as even as integers allow.</summary>
/// <param name="Group">The ranks.</param>
/// <param name="Dim">The table's full width d (at least the group size).</param>
public sealed record ColumnShard(Communicator Group, int Dim)
{
    /// <summary>First column of rank <paramref name="rank"/> (<c>Start(Size) = Dim</c>).</summary>
    public int Start(int rank) => (int)((long)rank * Dim / Group.Size);
    /// <summary>Columns held by rank <paramref name="rank"/>.</summary>
    public int Count(int rank) => Start(rank + 1) - Start(rank);
    /// <summary>This rank's first column.</summary>
    public int MyStart => Start(Group.Rank);
    /// <summary>This rank's column count.</summary>
    public int MyCount => Count(Group.Rank);
}

public static partial class Ops
{
    /// <summary>
    /// <see cref="PeerExperts"/> over column slices of the expert tables held by the ranks of <paramref name="shard"/>'s group: each rank
    /// passes its own tokens, ids and weights and its slices <c>down[:, slice]</c>, <c>up[:, slice]</c> F32 [N, d_r], and gets the full
    /// output rows of its tokens. All ranks must call it together. Differentiable in x and weights (dense) and in the slices (row-sparse,
    /// each rank's gradient complete for its slice).
    /// </summary>
    /// <exception cref="ArgumentException">Wrong dtypes or shapes (slices not [N, d_r] for this rank), or an id outside [0, N).</exception>
    /// <exception cref="CommunicationException">A collective failed or timed out.</exception>
    public static Tensor PeerExpertsSharded(Tensor x, Tensor indices, Tensor weights, Tensor down, Tensor up, ColumnShard shard,
        PeerActivation activation = PeerActivation.Gelu)
    {
        ArgumentNullException.ThrowIfNull(shard);
        foreach (var (t_, name, dt) in new[] { (x, nameof(x), DType.F32), (indices, nameof(indices), DType.I32), (weights, nameof(weights), DType.F32),
            (down, nameof(down), DType.F32), (up, nameof(up), DType.F32) })
        {
            Check.DType(t_, dt, name);
            Check.SameDevice(x, t_, name);
        }
        Check.Rank(x, 2, nameof(x));
        Check.Rank(indices, 3, nameof(indices));
        var comm = shard.Group;
        int t = x.Shape[0], dm = x.Shape[1], hk = indices.Shape[1] * indices.Shape[2], size = comm.Size, me = comm.Rank, w = shard.MyCount;
        Check.That(dm == shard.Dim, nameof(x), x.Shape, $"[T, d = {shard.Dim}] (the width the shard splits)");
        Check.That(indices.Shape[0] == t, nameof(indices), indices.Shape, $"[T = {t}, h, k] (one row of ids per token of x)");
        Check.Shape(weights, nameof(weights), indices.Shape);
        Check.Rank(down, 2, nameof(down));
        Check.That(down.Shape[1] == w, nameof(down), down.Shape, $"[N, {w}] (columns {shard.MyStart}..{shard.MyStart + w - 1} of {dm}, {comm.Who})");
        Check.Shape(up, nameof(up), down.Shape);
        int nExperts = down.Shape[0], bad = CountOutOfRange(indices, nExperts);
        Check.That(bad == 0, nameof(indices), $"{bad} ids outside [0, {nExperts})", $"every expert id in [0, N = {nExperts})");
        var d = x.Device;
        var k = d.Get(static d => new ShardedExpertKernels(d));
        int act = activation == PeerActivation.Relu ? 1 : 0;

        // Who has how many tokens; the ids and router weights of every token.
        var tokens = new int[size];
        comm.AllGather([t], tokens.AsSpan());
        int tg = 0, first = 0;
        for (int s = 0; s < size; s++) { if (s == me) first = tg; tg += tokens[s]; }
        var slotCounts = tokens.Select(n => n * hk).ToArray();
        var idsAll = new int[tg * hk];
        comm.AllGatherV<int>(indices.ToIntArray(), idsAll, slotCounts);
        var gAll = new float[tg * hk];
        comm.AllGatherV<float>(weights.ToArray(), gAll, slotCounts);
        var ids = Tensor.FromArray(d, idsAll, tg * hk);
        var g = Tensor.FromArray(d, gAll, tg * hk);
        using var starts = Tensor.FromArray(d, Enumerable.Range(0, size + 1).Select(shard.Start).ToArray(), size + 1);

        var xs = Exchange(x, shard, tokens, first, starts, toOwners: true); // X_r: [Tg, w]
        var z = Tensor.Empty(d, DType.F32, tg * hk);
        AllReducedDots(k, down, xs, ids, z, hk, w, comm);
        using var coef = Tensor.Empty(d, DType.F32, tg * hk);
        if (coef.Length > 0)
        {
            var ws = d.Split(coef.Length);
            k.Coefs(ws.Workers, ws, z.View, g.View, coef.View, act);
        }
        using var ys = SlotSums(k, up, ids, coef, tg, hk, w);
        var y = Exchange(ys, shard, tokens, first, starts, toOwners: false); // [T, d]

        if (!d.Tape.Needs(x, weights, down, up))
        {
            foreach (var o in new[] { ids, g, xs, z }) o.Dispose();
            return y;
        }
        d.Tape.Record(y, [x, weights, down, up], dY =>
        {
            using var startsB = Tensor.FromArray(d, Enumerable.Range(0, size + 1).Select(shard.Start).ToArray(), size + 1);
            var dYs = Exchange(dY, shard, tokens, first, startsB, toOwners: true); // [Tg, w]
            using var vdy = Tensor.Empty(d, DType.F32, tg * hk);
            AllReducedDots(k, up, dYs, ids, vdy, hk, w, comm);
            using var dz = Tensor.Empty(d, DType.F32, tg * hk);
            using var dGAll = Tensor.Empty(d, DType.F32, tg * hk);
            using var coefUp = Tensor.Empty(d, DType.F32, tg * hk);
            if (dz.Length > 0)
            {
                var ws = d.Split(dz.Length);
                k.SlotGrads(ws.Workers, ws, z.View, g.View, vdy.View, dz.View, dGAll.View, coefUp.View, act);
            }
            using var dXs = SlotSums(k, down, ids, dz, tg, hk, w);
            var dX = Exchange(dXs, shard, tokens, first, startsB, toOwners: false);
            var dG = Tensor.Empty(d, DType.F32, indices.Shape);
            if (t * hk > 0) dG.View.SubView(0, t * hk).CopyFrom(dGAll.View.SubView(first * hk, t * hk));
            Tape.Accumulate(x, dX);
            Tape.Accumulate(weights, dG);
            if (down.RequiresGrad || up.RequiresGrad)
            {
                var grads = RowSparseGradients.Build(ids, nExperts, w, (dz, xs, hk, w, 0), (coefUp, dYs, hk, w, 0));
                RowSparseGradients.Accumulate(down, grads[0]);
                RowSparseGradients.Accumulate(up, grads[1]);
            }
            dYs.Dispose();
        }, ids, g, xs, z);
        return y;
    }

    // out[p] = table[ids[p]] . rows[p / hk] over this rank's w columns, then summed over the ranks (the full dot product).
    static void AllReducedDots(ShardedExpertKernels k, Tensor table, Tensor rows, Tensor ids, Tensor output, int hk, int w, Communicator comm)
    {
        var d = table.Device;
        int tg = output.Length / Math.Max(1, hk);
        if (tg > 0)
        {
            var ws = d.Split(tg);
            k.Dots(ws.Workers, ws, table.View, rows.View, ids.IntView, output.View, hk, w);
        }
        var host = output.ToArray();
        comm.AllReduce(host.AsSpan());
        if (host.Length > 0) output.View.SubView(0, host.Length).CopyFromCPU(host);
    }

    // out[t, :] = sum over slots s of token t, in order, of coef[t hk + s] * table[ids[t hk + s], :]; out: [Tg, w]
    static Tensor SlotSums(ShardedExpertKernels k, Tensor table, Tensor ids, Tensor coef, int tg, int hk, int w)
    {
        var d = table.Device;
        var result = Tensor.Empty(d, DType.F32, tg, w);
        if (tg > 0 && w > 0)
        {
            var ws = d.Split(tg);
            k.Sums(ws.Workers, ws, table.View, ids.IntView, coef.View, result.View, hk, w);
        }
        return result;
    }

    // toOwners: a [T, d] tensor of this rank's tokens -> [Tg, w] (column slice r of every rank's tokens, in rank order).
    // Otherwise: a [Tg, w] slice of every token -> [T, d] (this rank's tokens with every rank's slice in place).
    static Tensor Exchange(Tensor input, ColumnShard shard, int[] tokens, int first, Tensor starts, bool toOwners)
    {
        var d = input.Device;
        var comm = shard.Group;
        int size = comm.Size, me = comm.Rank, t = tokens[me], dm = shard.Dim, w = shard.MyCount, tg = tokens.Sum();
        var k = d.Get(static d => new ShardedExpertKernels(d));
        var toMine = new int[size];
        var toTheirs = new int[size];
        for (int s = 0; s < size; s++)
        {
            toTheirs[s] = toOwners ? t * shard.Count(s) : tokens[s] * w; // what this rank sends to s
            toMine[s] = toOwners ? tokens[s] * w : t * shard.Count(s);   // what it receives from s
        }
        float[] send;
        if (toOwners)
        {
            // Blocks by destination: block s is x[:, slice s] of this rank's tokens, [T, d_s].
            using var packed = Tensor.Empty(d, DType.F32, t * dm);
            if (t > 0)
            {
                var ws = d.Split(t);
                k.Pack(ws.Workers, ws, input.View, packed.View, starts.IntView, dm, size, t, 1);
            }
            send = packed.ToArray();
        }
        else send = input.ToArray(); // [Tg, w]: rows grouped by owner already
        var recv = new float[toMine.Sum()];
        comm.AllToAllV<float>(send, toTheirs, recv, toMine);
        if (toOwners) return Tensor.FromArray(d, recv, tg, w);
        using var blocks = Tensor.FromArray(d, recv, recv.Length);
        var output = Tensor.Empty(d, DType.F32, t, dm);
        if (t > 0)
        {
            var ws = d.Split(t);
            k.Pack(ws.Workers, ws, output.View, blocks.View, starts.IntView, dm, size, t, 0);
        }
        return output;
    }
}

/// <summary>Kernels of the column-sharded PEER experts (portable; one token or slot per item, sums in a fixed order).</summary>
internal sealed class ShardedExpertKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> Dots;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> Sums;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> Coefs;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> SlotGrads;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int> Pack;

    public ShardedExpertKernels(Device d)
    {
        Dots = d.LoadKernel(DotsKernel);
        Sums = d.LoadKernel(SumsKernel);
        Coefs = d.LoadKernel(CoefsKernel);
        SlotGrads = d.LoadKernel(SlotGradsKernel);
        Pack = d.LoadKernel(PackKernel);
    }

    // table: [N, w], rows: [Tg, w], ids: [Tg*hk] -> out: [Tg*hk], out[t hk + s] = table[ids[t hk + s]] . rows[t]; one token per item
    static void DotsKernel(Index1D i, Work work, ArrayView<float> table, ArrayView<float> rows, ArrayView<int> ids, ArrayView<float> output, int hk, int w)
    {
        for (int st = work.Start(i); st < work.N; st += work.Stride)
            for (int t = st, e = work.End(st); t < e; t++)
                for (int s = 0; s < hk; s++)
                {
                    int p = t * hk + s, r = ids[p] * w, x = t * w;
                    float dot = 0f;
                    for (int c = 0; c < w; c++) dot += table[r + c] * rows[x + c];
                    output[p] = dot;
                }
    }

    // table: [N, w], ids, coef: [Tg*hk] -> out: [Tg, w], out[t] = sum_s coef[t hk + s] table[ids[t hk + s]] in slot order; one token per item
    static void SumsKernel(Index1D i, Work work, ArrayView<float> table, ArrayView<int> ids, ArrayView<float> coef, ArrayView<float> output, int hk, int w)
    {
        for (int st = work.Start(i); st < work.N; st += work.Stride)
            for (int t = st, e = work.End(st); t < e; t++)
            {
                int o = t * w;
                for (int c = 0; c < w; c++) output[o + c] = 0f;
                for (int s = 0; s < hk; s++)
                {
                    int p = t * hk + s, r = ids[p] * w;
                    float a = coef[p];
                    for (int c = 0; c < w; c++) output[o + c] += a * table[r + c];
                }
            }
    }

    // z, g: [P] -> coef = g act(z); one slot per item
    static void CoefsKernel(Index1D i, Work work, ArrayView<float> z, ArrayView<float> g, ArrayView<float> coef, int act)
    {
        for (int st = work.Start(i); st < work.N; st += work.Stride)
            for (int p = st, e = work.End(st); p < e; p++) coef[p] = g[p] * PeerExpertKernels.Act(z[p], act);
    }

    // z, g, vdy (= up[i] . dY[t]): [P] -> dz = g act'(z) vdy, dG = act(z) vdy, coefUp = g act(z); one slot per item
    static void SlotGradsKernel(Index1D i, Work work, ArrayView<float> z, ArrayView<float> g, ArrayView<float> vdy, ArrayView<float> dz,
        ArrayView<float> dG, ArrayView<float> coefUp, int act)
    {
        for (int st = work.Start(i); st < work.N; st += work.Stride)
            for (int p = st, e = work.End(st); p < e; p++)
            {
                float a = PeerExpertKernels.Act(z[p], act);
                dz[p] = g[p] * vdy[p] * PeerExpertKernels.ActGrad(z[p], act);
                dG[p] = a * vdy[p];
                coefUp[p] = g[p] * a;
            }
    }

    // full: [T, d] <-> blocks: block s = full[:, starts[s] .. starts[s+1]) as [T, d_s] at offset T starts[s]. toBlocks 1 copies full into the
    // blocks, 0 copies the blocks into full; one token row per item.
    static void PackKernel(Index1D i, Work work, ArrayView<float> full, ArrayView<float> blocks, ArrayView<int> starts, int d, int size, int t, int toBlocks)
    {
        for (int st = work.Start(i); st < work.N; st += work.Stride)
            for (int row = st, e = work.End(st); row < e; row++)
                for (int s = 0; s < size; s++)
                {
                    int c0 = starts[s], ds = starts[s + 1] - c0, b = t * c0 + row * ds, f = row * d + c0;
                    for (int c = 0; c < ds; c++)
                    {
                        if (toBlocks != 0) blocks[b + c] = full[f + c];
                        else full[f + c] = blocks[b + c];
                    }
                }
    }
}
