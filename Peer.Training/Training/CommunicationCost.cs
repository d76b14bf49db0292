// The cost model of distributed training (docs/distributed.md): the bytes one rank receives in one optimizer step, term by
// term as Trainer.Step's collectives move them and Communicator.Traffic counts them (all-reduce as the ring does it,
// 2 (R - 1) / R of the array; all-gather and all-to-all what arrives from the other ranks). With the rows each rank's
// row-sparse gradients hold it is exact; without, it takes their bound min(table rows, tokens * slots) per rank.
namespace Peer.Training;

/// <summary>One PEER or PKM layer as the cost model sees it.</summary>
/// <param name="Experts">N, rows of the expert (or value) tables.</param>
/// <param name="Dim">d.</param>
/// <param name="Heads">h.</param>
/// <param name="TopK">k.</param>
/// <param name="QueryDim">dq.</param>
/// <param name="BatchNorm">Whether the query norm is BatchNorm (synchronised: three all-reduces per micro-batch).</param>
/// <param name="Tables">Row-sparse tables of N rows: 2 for PEER (down, up), 1 for PKM (values).</param>
public sealed record RetrievalShape(int Experts, int Dim, int Heads, int TopK, int QueryDim, bool BatchNorm, int Tables);

/// <summary>Bytes per optimizer step and rank of data- and expert-parallel training.</summary>
public static class CommunicationCost
{
    /// <summary>Names of the parameters whose gradients are row-sparse (merged by all-gather, not all-reduced).</summary>
    public static bool IsRowSparse(string name) =>
        name.EndsWith(".experts.down") || name.EndsWith(".experts.up") || name.EndsWith(".keys.sub1") || name.EndsWith(".keys.sub2") || name.EndsWith(".values.weight");

    /// <summary>The PEER and PKM layers of <paramref name="model"/> as the cost model sees them, in block order.</summary>
    public static IReadOnlyList<RetrievalShape> Layers(ModelConfig model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.BlockKinds().Where(k => k is "peer" or "pkm").Select(kind =>
        {
            var c = kind == "peer" ? model.Peer : model.Pkm;
            return new RetrievalShape(c.Experts, model.DModel, c.Heads, c.TopK, c.QueryDim, c.QueryNorm == "batch", kind == "peer" ? 2 : 1);
        }).ToList();
    }

    /// <summary>The dense (all-reduced) parameter elements and the parameter tensor count of <paramref name="model"/>.</summary>
    public static (long DenseElements, int Tensors) DenseShape(LanguageModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var all = model.NamedParameters().ToList();
        return (all.Where(p => !IsRowSparse(p.Name)).Sum(p => (long)p.Tensor.Length), all.Count);
    }

    /// <summary>
    /// Bytes rank <paramref name="rank"/> of <paramref name="ranks"/> receives in one step of <paramref name="config"/>, in
    /// <paramref name="mode"/>, for a model of <paramref name="denseElements"/> all-reduced parameter elements in <paramref name="tensors"/>
    /// parameter tensors (<see cref="DenseShape"/>). <paramref name="sparseRows"/>(rank, layer, table) gives the rows that rank's gradient
    /// holds of each layer's expert tables (table 0, 1 for PEER's down and up, 0 for PKM's values) and sub-key tables (after them);
    /// null takes the bound <c>min(rows, tokens x slots)</c>.
    /// </summary>
    public static long BytesPerStep(RunConfig config, long denseElements, int tensors, int ranks, int rank, ParallelMode mode,
        Func<int, int, int, long>? sparseRows = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (ranks <= 1) return 0;
        var layers = Layers(config.Model);
        long dense = denseElements;
        int b = ranks - 1, batch = config.Train.BatchSize, context = config.Model.Context, micro = config.Train.Accumulation;
        long AllReduce(long bytes) => 2 * b * bytes / ranks;
        long Tokens(int r) => (long)((long)(r + 1) * batch / ranks - (long)r * batch / ranks) * context;
        long tokensAll = (long)batch * context, mine = Tokens(rank);

        int reduced = tensors - (mode == ParallelMode.Experts ? 2 * layers.Count(l => l.Tables == 2) : 0); // split tables are not reduced
        long total = AllReduce(8) + (long)b * reduced * 4; // the loss; the gradient descriptors
        for (long left = dense, cap = Math.Min(1 << 22, dense); left > 0; left -= cap) total += AllReduce(Math.Min(cap, left) * 4);
        if (mode == ParallelMode.Experts && layers.Any(l => l.Tables == 2)) total += AllReduce(8); // the sharded clip
        for (int i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            int hk = l.Heads * l.TopK, n = (int)Math.Sqrt(l.Experts), half = l.QueryDim / 2, f = l.Heads * l.QueryDim;
            bool sharded = mode == ParallelMode.Experts && l.Tables == 2;
            long Rows(int r, int table, int limit) => sparseRows?.Invoke(r, i, table) ?? Math.Min(limit, Tokens(r) * (table < l.Tables ? hk : l.Heads * l.TopK));
            // Row-sparse merges: rows (int) and values of every other rank.
            for (int table = 0; table < l.Tables + 2; table++)
            {
                bool expertTable = table < l.Tables;
                if (expertTable && sharded) continue;
                int cols = expertTable ? l.Dim : half, limit = expertTable ? l.Experts : n;
                for (int r = 0; r < ranks; r++)
                    if (r != rank) total += Rows(r, table, limit) * (1 + cols) * 4;
            }
            if (l.BatchNorm) total += micro * (AllReduce((f + 1) * 4) + AllReduce(f * 4) + AllReduce(2L * f * 4));
            if (!sharded) continue;
            long w = (long)(rank + 1) * l.Dim / ranks - (long)rank * l.Dim / ranks;
            long exchange = (tokensAll - mine) * w * 4 + mine * (l.Dim - w) * 4; // x slices out and y slices back (dY, dX alike)
            total += micro * ((long)b * 4 + 2 * (tokensAll - mine) * hk * 4 + 2 * exchange + 2 * AllReduce(tokensAll * hk * 4));
        }
        return total;
    }

    /// <summary>
    /// Bytes per step a rank receives for one PEER layer's column-sharded experts, for <paramref name="tokens"/> tokens split evenly
    /// between <paramref name="ranks"/> ranks (the experts-mode terms of <see cref="BytesPerStep"/>, without integer rounding):
    /// ids and router weights gathered, <c>(R - 1) / R * 8 T h k</c>; the x, y, dY and dX slices, <c>4 (R - 1) / R^2 * 4 T d</c>;
    /// the two all-reduces of partial dot products, <c>2 * 2 (R - 1) / R * 4 T h k</c>.
    /// </summary>
    public static double ColumnShardedBytesPerRank(int tokens, int hk, int dim, int ranks)
    {
        double t = tokens, b = ranks - 1;
        return b / ranks * 8 * t * hk + 4 * (b / ((double)ranks * ranks) * 4 * t * dim) + 2 * (2 * b / ranks * 4 * t * hk);
    }

    /// <summary>
    /// Bytes per step and rank that row sharding (each rank owning N/R rows of the expert tables, requests sent to the owners)
    /// would move for one layer, counted from actual retrievals: for each token and each other rank owning one of its experts, the
    /// token's x and dY go there and partial y and dX come back (4 d floats), with the slot ids, router weights and their gradients
    /// (3 per slot). <paramref name="ids"/> are the layer's expert ids [T, hk] of the whole batch; tokens belong to ranks as batches split.
    /// </summary>
    public static double RowShardedBytesPerRank(int[] ids, int tokens, int hk, int experts, int dim, int ranks, int batch)
    {
        ArgumentNullException.ThrowIfNull(ids);
        long floats = 0;
        int perSequence = tokens / batch;
        for (int t = 0; t < tokens; t++)
        {
            int seq = t / perSequence, home = 0;
            while ((long)(home + 1) * batch / ranks <= seq) home++;
            var slots = new Dictionary<int, int>();
            for (int s = 0; s < hk; s++)
            {
                int owner = (int)((long)ids[t * hk + s] * ranks / experts);
                if (owner != home) slots[owner] = slots.GetValueOrDefault(owner) + 1;
            }
            foreach (var (_, m) in slots) floats += 4L * dim + 3L * m;
        }
        return floats * 4.0 / ranks;
    }
}
