// Data-parallel gradient combination: after each rank's backward over its share of the batch, every rank must hold the
// sum over ranks of every parameter's gradient. Dense gradients (Tensor.Grad) are read in parameter order as one flat
// stream cut into buckets of a fixed size, each bucket all-reduced in turn: the cut and the order depend only on the
// parameters, so the result does not depend on timing. Row-sparse gradients (experts, sub-keys, PKM values) are
// combined exactly without ever densifying a table: each rank's rows and values are all-gathered in rank order and
// merged by the sort-and-segment reduction (RowSparseGradients.Coalesce), which sums equal rows in that order, so every
// rank computes the same merged gradient bit for bit. One all-gather of per-parameter descriptors first tells every rank
// which kind of gradient each parameter has where, and how many rows.
using ILGPU.Runtime;

namespace Peer.Distributed;

/// <summary>Sums the gradients of named parameters over the ranks of a group (data parallelism).</summary>
public sealed class GradientReducer
{
    const int NoGradient = -2, DenseGradient = -1;
    readonly Communicator group;
    float[] bucket = [];

    /// <summary>Elements per dense all-reduce (default 4M floats, 16 MB).</summary>
    public int BucketElements { get; }

    /// <summary>A reducer over <paramref name="group"/> with dense buckets of <paramref name="bucketElements"/> floats.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A bucket of fewer than 1 element.</exception>
    public GradientReducer(Communicator group, int bucketElements = 1 << 22)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (bucketElements < 1) throw new ArgumentOutOfRangeException(nameof(bucketElements), bucketElements, $"bucketElements = {bucketElements}: expected at least 1.");
        this.group = group;
        BucketElements = bucketElements;
    }

    /// <summary>
    /// Replaces each parameter's gradient by its sum over the ranks (every rank must pass the same parameters in the same order).
    /// A parameter with a dense gradient somewhere gets the summed dense gradient everywhere (zeros where a rank had none); one with
    /// a row-sparse gradient gets the merged rows; one with none anywhere is left without.
    /// </summary>
    /// <exception cref="InvalidOperationException">A parameter has a dense gradient on one rank and a row-sparse one on another.</exception>
    /// <exception cref="CommunicationException">A collective failed or timed out.</exception>
    public void AllReduce(IReadOnlyList<(string Name, Tensor Param)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (group.Size == 1) return;
        int p = parameters.Count, size = group.Size;
        var mine = new int[p];
        for (int i = 0; i < p; i++)
        {
            var t = parameters[i].Param;
            // The real rows only, not the padding (RowSparseGrad.NoRow): counting them reads the rows back, which this exchange
            // through the host does anyway.
            mine[i] = t.Grad is not null ? DenseGradient : t.SparseGrad is { } sg ? sg.CountRows() : NoGradient;
        }
        var all = new int[p * size];
        group.AllGather<int>(mine, all);

        var dense = new List<Tensor>();
        var sparse = new List<(Tensor Param, int[] Counts)>();
        for (int i = 0; i < p; i++)
        {
            bool anyDense = false, anySparse = false;
            var counts = new int[size];
            for (int r = 0; r < size; r++)
            {
                int v = all[r * p + i];
                anyDense |= v == DenseGradient;
                anySparse |= v >= 0;
                counts[r] = Math.Max(0, v);
            }
            var (name, t) = parameters[i];
            if (anyDense && anySparse)
                throw new InvalidOperationException($"Parameter '{name}' has a dense gradient on one rank and a row-sparse one on another: expected one kind on every rank.");
            if (anyDense)
            {
                t.Grad ??= Scope.Unscope(Tensor.Zeros(t.Device, t.Shape));
                dense.Add(t.Grad);
            }
            else if (anySparse) sparse.Add((t, counts));
        }
        ReduceDense(dense);
        foreach (var (t, counts) in sparse) MergeSparse(t, counts);
    }

    // The dense gradients as one stream in order, all-reduced bucket by bucket.
    void ReduceDense(List<Tensor> grads)
    {
        long total = grads.Sum(g => (long)g.Length);
        if (total == 0) return;
        int cap = (int)Math.Min(BucketElements, total);
        if (bucket.Length < cap) bucket = GC.AllocateUninitializedArray<float>(cap, pinned: true);
        var pieces = new List<(Tensor Grad, int Offset, int Length, int At)>();
        int filled = 0;
        void Flush()
        {
            group.AllReduce(bucket.AsSpan(0, filled));
            foreach (var (g, off, len, at) in pieces) g.View.SubView(off, len).CopyFromCPU(ref bucket[at], len);
            pieces.Clear();
            filled = 0;
        }
        foreach (var g in grads)
            for (int off = 0; off < g.Length;)
            {
                int len = Math.Min(g.Length - off, cap - filled);
                g.View.SubView(off, len).CopyToCPU(ref bucket[filled], len);
                pieces.Add((g, off, len, filled));
                filled += len;
                off += len;
                if (filled == cap) Flush();
            }
        if (filled > 0) Flush();
    }

    // Every rank's rows and values, concatenated in rank order, merged by sort-and-segment.
    void MergeSparse(Tensor t, int[] counts)
    {
        var d = t.Device;
        int cols = t.Shape.Length > 1 ? t.Length / t.Shape[0] : 1, total = counts.Sum();
        Check.That((long)total * cols <= int.MaxValue, t.Name ?? "parameter", $"{total} gradient rows of {cols}", "at most 2^31 - 1 gathered gradient values per parameter");
        var rows = new int[total];
        var values = new float[(long)total * cols];
        // This rank's real rows lead its (possibly padded) gradient: its count was gathered as counts[rank].
        int mine = counts[group.Rank];
        var mineRows = t.SparseGrad?.Rows.ToIntArray().AsSpan(0, mine).ToArray() ?? [];
        var mineValues = t.SparseGrad?.Values.ToArray().AsSpan(0, mine * cols).ToArray() ?? [];
        group.AllGatherV<int>(mineRows, rows, counts);
        group.AllGatherV<float>(mineValues, values, counts.Select(c => c * cols).ToArray());
        using var scope = Scope.Begin();
        var ids = Tensor.FromArray(d, rows, total);
        var vals = Tensor.FromArray(d, values, total, cols);
        var merged = RowSparseGradients.Coalesce(null, ids, vals, t.Shape[0]);
        t.SparseGrad?.Dispose();
        t.SparseGrad = merged;
    }
}
