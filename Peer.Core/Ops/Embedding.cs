// Embedding lookup and row-gradient accumulation. The lookup gathers table rows; its gradient touches only
// the rows looked up and is built without atomics: (id, position) pairs are merge-sorted (a stable sort, so
// positions keep their order), cut into segments of equal id, and each segment's gradient rows are summed in
// position order by one work item. The result is a RowSparseGrad with distinct sorted rows, the same on every
// backend and worker count; a dense gradient is available for small or shared tables.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Looks up rows of <paramref name="table"/> <c>[V, dim]</c>: <c>y[.., :] = table[ids[..], :]</c>, result <c>[.., dim]</c> for
    /// I32 <paramref name="ids"/> of any shape. Differentiable in the table: the gradient of row v is the sum of the output
    /// gradients at the positions where <c>ids = v</c> (see <see cref="AccumulateRowGrad"/> for where it goes).
    /// </summary>
    /// <param name="ids">Row indices, I32. Ids live on the device and are not copied back for checking: an id outside [0, V)
    /// gives a row of NaN in the output (never an out-of-bounds read) and contributes no gradient.</param>
    /// <param name="table">The table, F32 <c>[V, dim]</c>.</param>
    /// <param name="sparseGrad">True: the table's gradient is a <see cref="RowSparseGrad"/> in <see cref="Tensor.SparseGrad"/>
    /// holding only the looked-up rows. False: a dense <see cref="Tensor.Grad"/> <c>[V, dim]</c>, zero outside the looked-up rows.</param>
    /// <exception cref="ArgumentException">Wrong dtypes, a table that is not rank 2, or different devices.</exception>
    public static Tensor Embedding(Tensor ids, Tensor table, bool sparseGrad = true)
    {
        Check.DType(ids, DType.I32, nameof(ids));
        Check.DType(table, DType.F32, nameof(table));
        Check.SameDevice(table, ids, nameof(ids));
        Check.Rank(table, 2, nameof(table));
        int v = table.Shape[0], dim = table.Shape[1], n = ids.Length;
        var d = table.Device;
        var y = Tensor.Empty(d, DType.F32, [.. ids.Shape, dim]);
        var k = d.Get(static d => new EmbeddingKernels(d));
        var w = d.Split(dim == 0 ? 0 : n);
        if (w.N > 0) k.Gather(w.Workers, w, ids.IntView, table.View, y.View, v, dim);
        if (d.Tape.Needs(table))
            d.Tape.Record(y, [table], g =>
            {
                using var rowGrads = g.Reshape(n, dim);
                AccumulateRowGrad(table, ids, rowGrads, sparseGrad);
            });
        return y;
    }

    /// <summary>
    /// Adds <paramref name="rowGrads"/> <c>[n, cols]</c> into the gradient of <paramref name="table"/> <c>[V, cols]</c>: row i
    /// goes to table row <c>ids[i]</c> (<paramref name="ids"/> I32 with n elements; ids outside [0, V) are dropped). Rows sharing
    /// an id are summed in position order, so the result is deterministic. Not recorded; does nothing unless the table requires gradient.
    /// </summary>
    /// <remarks>
    /// With <paramref name="sparse"/>, a leaf table without a dense gradient receives a <see cref="RowSparseGrad"/> (distinct rows,
    /// sorted ascending) merged with any it already has. Otherwise (dense requested, a table computed by an op, or a table that
    /// already holds a dense <see cref="Tensor.Grad"/>, e.g. one shared with an output projection) the rows are added into the
    /// dense gradient. Takes no ownership of its arguments.
    /// </remarks>
    /// <exception cref="ArgumentException">Wrong dtypes, devices, or shapes that disagree.</exception>
    public static void AccumulateRowGrad(Tensor table, Tensor ids, Tensor rowGrads, bool sparse = true)
    {
        Check.DType(table, DType.F32, nameof(table));
        Check.DType(ids, DType.I32, nameof(ids));
        Check.DType(rowGrads, DType.F32, nameof(rowGrads));
        Check.SameDevice(table, ids, nameof(ids));
        Check.SameDevice(table, rowGrads, nameof(rowGrads));
        Check.Rank(table, 2, nameof(table));
        Check.Shape(rowGrads, nameof(rowGrads), ids.Length, table.Shape[1]);
        if (!table.RequiresGrad || table.IsDisposed) return;
        var d = table.Device;
        int v = table.Shape[0], cols = table.Shape[1];
        bool asSparse = sparse && table.IsLeaf && table.Grad is null;
        var old = asSparse ? table.SparseGrad : null;
        var merged = EmbeddingKernels.Coalesce(d, v, cols, ids, rowGrads, old);
        if (asSparse)
        {
            old?.Dispose();
            table.SparseGrad = merged;
            return;
        }
        using (merged)
        {
            var dense = Tensor.Zeros(d, v, cols);
            int r = merged.Rows.Length;
            var w = d.Split(cols == 0 ? 0 : r);
            if (w.N > 0) d.Get(static d => new EmbeddingKernels(d)).ScatterAdd(w.Workers, w, merged.Rows.IntView, merged.Values.View, dense.View, cols);
            Tape.Accumulate(table, dense);
        }
    }
}

/// <summary>Kernels of the embedding family, and the sort-and-segment coalescing of row gradients.</summary>
internal sealed class EmbeddingKernels
{
    const int SegmentBlocks = 1024;

    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> Gather;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int, ArrayView<int>, ArrayView<int>, int> InitKeys;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int> Merge;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int, int> CountHeads;
    public readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> PrefixHeads;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> WriteHeads;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, ArrayView<int>, ArrayView<float>, int> SumSegments;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, int> ScatterAdd;

    public EmbeddingKernels(Device d)
    {
        Gather = d.LoadKernel(GatherKernel);
        InitKeys = d.LoadKernel(InitKeysKernel);
        Merge = d.LoadKernel(MergeKernel);
        CountHeads = d.LoadKernel(CountHeadsKernel);
        PrefixHeads = d.LoadKernel(PrefixHeadsKernel);
        WriteHeads = d.LoadKernel(WriteHeadsKernel);
        SumSegments = d.LoadKernel(SumSegmentsKernel);
        ScatterAdd = d.LoadKernel(ScatterAddKernel);
    }

    /// <summary>
    /// Sums rows with equal ids: the rows of <paramref name="old"/> (if any) then <paramref name="values"/> <c>[n, cols]</c> at
    /// <paramref name="ids"/>, dropping ids outside [0, v). Reads the number of distinct rows back to the host (one sync).
    /// </summary>
    internal static RowSparseGrad Coalesce(Device d, int v, int cols, Tensor ids, Tensor values, RowSparseGrad? old)
    {
        var k = d.Get(static d => new EmbeddingKernels(d));
        int n1 = old?.Rows.Length ?? 0, n = n1 + ids.Length;
        Check.That(n <= 1 << 30, nameof(ids), $"{ids.Length} ids (+ {n1} rows already held)", "at most 2^30 rows to coalesce");
        using var scope = Scope.Begin();
        var keys = Tensor.Empty(d, DType.I32, Math.Max(n, 1));
        var pos = Tensor.Empty(d, DType.I32, Math.Max(n, 1));
        var keys2 = Tensor.Empty(d, DType.I32, Math.Max(n, 1));
        var pos2 = Tensor.Empty(d, DType.I32, Math.Max(n, 1));
        var segRows = Tensor.Empty(d, DType.I32, n + 1);
        var starts = Tensor.Empty(d, DType.I32, n + 1);
        // Segments are found block-wise: count segment heads per block, an exclusive prefix over the block counts, then each
        // block writes its heads at its offset (parallel, no atomics; the one serial step walks only the block counts).
        int blockSize = Math.Max(1, (n + SegmentBlocks - 1) / SegmentBlocks), blocks = Math.Max(1, (n + blockSize - 1) / blockSize);
        var heads = Tensor.Empty(d, DType.I32, blocks);
        var offsets = Tensor.Empty(d, DType.I32, blocks + 1);
        var count = Tensor.Empty(d, DType.I32, 1);
        var oldRows = old?.Rows.IntView ?? ids.IntView;     // unread when n1 = 0
        var oldValues = old?.Values.View ?? values.View;
        var w = d.Split(n);
        if (n > 0)
        {
            k.InitKeys(w.Workers, w, oldRows, ids.IntView, n1, keys.IntView, pos.IntView, v);
            for (int width = 1; width < n; width *= 2)
            {
                k.Merge(w.Workers, w, keys.IntView, pos.IntView, keys2.IntView, pos2.IntView, width);
                (keys, keys2) = (keys2, keys);
                (pos, pos2) = (pos2, pos);
            }
        }
        var bw = d.Split(n == 0 ? 0 : blocks);
        if (n > 0) k.CountHeads(bw.Workers, bw, keys.IntView, heads.IntView, n, blockSize);
        k.PrefixHeads(1, heads.IntView, offsets.IntView, starts.IntView, count.IntView, n == 0 ? 0 : blocks, n);
        if (n > 0) k.WriteHeads(bw.Workers, bw, keys.IntView, offsets.IntView, segRows.IntView, starts.IntView, n, blockSize);
        int r = count.ToIntArray()[0];
        var rows = Scope.Unscope(Tensor.Empty(d, DType.I32, r));
        var sum = Scope.Unscope(Tensor.Empty(d, DType.F32, r, cols));
        var rw = d.Split(r);
        if (r > 0) k.SumSegments(rw.Workers, rw, segRows.IntView, starts.IntView, pos.IntView, oldValues, values.View, n1, rows.IntView, sum.View, cols);
        return new RowSparseGrad(rows, sum);
    }

    // ids: [n], table: [V, dim] -> y: [n, dim] = table[ids]; a row of NaN for an id outside [0, V)
    static void GatherKernel(Index1D w, Work work, ArrayView<int> ids, ArrayView<float> table, ArrayView<float> y, int v, int dim)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int id = ids[r];
                bool ok = id >= 0 && id < v;
                for (int c = 0; c < dim; c++) y[r * dim + c] = ok ? table[id * dim + c] : float.NaN;
            }
    }

    // ids1: [n1], ids2: [n - n1] -> keys: [n] = the concatenated ids (int.MaxValue for ids outside [0, V), which sort last), pos: [n] = 0..n-1
    static void InitKeysKernel(Index1D w, Work work, ArrayView<int> ids1, ArrayView<int> ids2, int n1, ArrayView<int> keys, ArrayView<int> pos, int v)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int id = i < n1 ? ids1[i] : ids2[i - n1];
                keys[i] = id >= 0 && id < v ? id : int.MaxValue;
                pos[i] = i;
            }
    }

    // keys, pos: [n] sorted in runs of `width` -> outKeys, outPos: [n] sorted in runs of 2 width. Each element finds its place by
    // binary search in the other run (ties: the left run first), so the merge is stable and needs no synchronisation.
    static void MergeKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> pos, ArrayView<int> outKeys, ArrayView<int> outPos, int width)
    {
        int n = work.N;
        for (int s = work.Start(w); s < n; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int lo = i / (2 * width) * (2 * width);
                int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
                int key = keys[i], dest;
                if (i < mid)
                {
                    int a = mid, b = hi; // count right-run keys < key
                    while (a < b) { int m = (a + b) >> 1; if (keys[m] < key) a = m + 1; else b = m; }
                    dest = i + (a - mid);
                }
                else
                {
                    int a = lo, b = mid; // count left-run keys <= key
                    while (a < b) { int m = (a + b) >> 1; if (keys[m] <= key) a = m + 1; else b = m; }
                    dest = lo + (i - mid) + (a - lo);
                }
                outKeys[dest] = key;
                outPos[dest] = pos[i];
            }
    }

    // Whether sorted position i starts a segment (a valid key differing from its predecessor) or is the first invalid key.
    static bool IsHead(ArrayView<int> keys, int i) => keys[i] != int.MaxValue && (i == 0 || keys[i] != keys[i - 1]);
    static bool IsFirstInvalid(ArrayView<int> keys, int i) => keys[i] == int.MaxValue && (i == 0 || keys[i - 1] != int.MaxValue);

    // sorted keys: [n] -> heads: [blocks] = segment heads in each block of blockSize positions; one block per item
    static void CountHeadsKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> heads, int n, int blockSize)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int b = s, e = work.End(s); b < e; b++)
            {
                int c = 0;
                for (int i = b * blockSize, end = i + blockSize < n ? i + blockSize : n; i < end; i++)
                    if (IsHead(keys, i)) c++;
                heads[b] = c;
            }
    }

    // heads: [blocks] -> offsets: [blocks + 1] exclusive prefix sums, offsets[blocks] = count[0] = R, starts[R] = n (lowered by
    // WriteHeads when invalid keys trail); one work item over the block counts
    static void PrefixHeadsKernel(Index1D w, ArrayView<int> heads, ArrayView<int> offsets, ArrayView<int> starts, ArrayView<int> count, int blocks, int n)
    {
        int acc = 0;
        for (int b = 0; b < blocks; b++)
        {
            offsets[b] = acc;
            acc += heads[b];
        }
        offsets[blocks] = acc;
        count[0] = acc;
        starts[acc] = n;
    }

    // sorted keys: [n], offsets: [blocks + 1] -> rows: [R] the distinct valid keys, starts: [R + 1] segment bounds; one block per item
    static void WriteHeadsKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> offsets, ArrayView<int> rows, ArrayView<int> starts, int n, int blockSize)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int b = s, e = work.End(s); b < e; b++)
            {
                int r = offsets[b];
                for (int i = b * blockSize, end = i + blockSize < n ? i + blockSize : n; i < end; i++)
                {
                    if (IsHead(keys, i))
                    {
                        rows[r] = keys[i];
                        starts[r] = i;
                        r++;
                    }
                    else if (IsFirstInvalid(keys, i)) starts[offsets[work.N]] = i;
                }
            }
    }

    // segment r of the sorted positions -> outRows[r], outValues: [R, cols] row r = Σ over the segment, in position order, of
    // values1[p] (p < n1) or values2[p - n1]; one segment per item
    static void SumSegmentsKernel(Index1D w, Work work, ArrayView<int> segRows, ArrayView<int> starts, ArrayView<int> pos,
        ArrayView<float> values1, ArrayView<float> values2, int n1, ArrayView<int> outRows, ArrayView<float> outValues, int cols)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                outRows[r] = segRows[r];
                int o = r * cols;
                for (int c = 0; c < cols; c++) outValues[o + c] = 0f;
                for (int i = starts[r], end = starts[r + 1]; i < end; i++)
                {
                    int p = pos[i];
                    if (p < n1) for (int c = 0; c < cols; c++) outValues[o + c] += values1[p * cols + c];
                    else for (int c = 0; c < cols; c++) outValues[o + c] += values2[(p - n1) * cols + c];
                }
            }
    }

    // rows: [R] distinct, values: [R, cols] -> dense: [V, cols] rows[r] += values[r]; one row per item (distinct rows: no conflicts)
    static void ScatterAddKernel(Index1D w, Work work, ArrayView<int> rows, ArrayView<float> values, ArrayView<float> dense, int cols)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int r = s, e = work.End(s); r < e; r++)
            {
                int o = rows[r] * cols;
                for (int c = 0; c < cols; c++) dense[o + c] += values[r * cols + c];
            }
    }
}
