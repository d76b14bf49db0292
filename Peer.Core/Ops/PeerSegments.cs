// Deterministic assembly of row-sparse gradients (PEER expert tables and product sub-keys). Each
// retrieved slot p contributes coef[p] * (a row of some source matrix) to table row key[p]. The pairs
// (key, p) are merge-sorted by key (stable, so equal keys stay in ascending p), cut
// into segments of equal key, and each segment is summed by one work item in sorted order. No atomics
// anywhere: the same inputs give the same bits on a backend, and the cost is O(P * cols), never O(rows).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Sort-and-segment reduction of (row, contribution) pairs into a <see cref="RowSparseGrad"/>.</summary>
internal static class RowSparse
{
    /// <summary>Pairs sorted by row: <c>Keys</c> I32 [P] ascending, <c>Order</c> I32 [P] the original pair index of each,
    /// ascending within equal keys (a stable sort, so the order is fixed by the input alone).</summary>
    public static (Tensor Keys, Tensor Order) Sort(Tensor keys)
    {
        Check.DType(keys, DType.I32, nameof(keys));
        var d = keys.Device;
        int p = keys.Length;
        var k = d.Get(static d => new RowSparseKernels(d));
        var sortedKeys = Tensor.Empty(d, DType.I32, p);
        var order = Tensor.Empty(d, DType.I32, p);
        if (p == 0) return (sortedKeys, order);
        var w = d.Split(p);
        k.CopyIota(w.Workers, w, keys.IntView, sortedKeys.IntView, order.IntView);
        // Bottom-up merge sort, ping-ponging between (sortedKeys, order) and a scratch pair: level `width` merges runs
        // [2i*width, (2i+1)*width) and [(2i+1)*width, (2i+2)*width), one merge per work item. Stable merges keep equal keys in
        // ascending pair index. O(P log P) whatever the key range (so O(T*h*k log) for experts, never O(N)); the radix
        // sort of ILGPU.Algorithms measured 0.57 CPU-s for 131k pairs on the CPU accelerator, this about 0.03.
        using var keys2 = Tensor.Empty(d, DType.I32, p);
        using var order2 = Tensor.Empty(d, DType.I32, p);
        bool inScratch = false;
        for (int width = 1; width < p; width *= 2)
        {
            int merges = (int)((p + 2L * width - 1) / (2L * width));
            var mw = d.Split(merges);
            if (inScratch) k.Merge(mw.Workers, mw, keys2.IntView, order2.IntView, sortedKeys.IntView, order.IntView, width);
            else k.Merge(mw.Workers, mw, sortedKeys.IntView, order.IntView, keys2.IntView, order2.IntView, width);
            inScratch = !inScratch;
        }
        if (inScratch)
        {
            k.CopyInt(w.Workers, w, keys2.IntView, sortedKeys.IntView, 0);
            k.CopyInt(w.Workers, w, order2.IntView, order.IntView, 0);
        }
        return (sortedKeys, order);
    }

    /// <summary>Segments of equal key in sorted keys: <c>Rows</c> I32 [R] (distinct, ascending) and <c>Starts</c> I32 [R + 1]
    /// (segment s covers sorted positions <c>Starts[s] .. Starts[s+1]-1</c>).</summary>
    public static (Tensor Rows, Tensor Starts) Segment(Tensor sortedKeys)
    {
        var d = sortedKeys.Device;
        int p = sortedKeys.Length;
        var k = d.Get(static d => new RowSparseKernels(d));
        if (p == 0) return (Tensor.Empty(d, DType.I32, 0), Tensor.ZerosInt(d, 1));
        // Contiguous blocks (not the grid-stride split): segment ids need each block's starts counted in order.
        int blocks = Math.Min(p, d.IsCpu ? d.Workers : 4096);
        int len = (p + blocks - 1) / blocks;
        blocks = (p + len - 1) / len;
        using var counts = Tensor.Empty(d, DType.I32, blocks);
        using var offsets = Tensor.Empty(d, DType.I32, blocks + 1);
        k.CountStarts(blocks, sortedKeys.IntView, counts.IntView, len);
        k.ScanBlocks(1, counts.IntView, offsets.IntView, blocks);
        var total = new int[1];
        offsets.IntView.SubView(blocks, 1).CopyToCPU(total);
        int r = total[0];
        var rows = Tensor.Empty(d, DType.I32, r);
        var starts = Tensor.Empty(d, DType.I32, r + 1);
        k.WriteSegments(blocks, sortedKeys.IntView, offsets.IntView, rows.IntView, starts.IntView, len, blocks);
        return (rows, starts);
    }

    /// <summary>
    /// <c>values[s, c] = sum over sorted positions q of segment s of coef[o] * src[(o / div) * srcStride + srcOffset + c]</c>
    /// with <c>o = order[q]</c>; returns F32 [R, cols]. One work item per segment, pairs in sorted order.
    /// </summary>
    public static Tensor Reduce(Tensor starts, Tensor order, Tensor coef, Tensor src, int div, int srcStride, int srcOffset, int cols)
    {
        var d = starts.Device;
        int r = starts.Length - 1;
        var values = Tensor.Empty(d, DType.F32, r, cols);
        if (r == 0 || cols == 0) return values;
        var w = d.Split(r);
        d.Get(static d => new RowSparseKernels(d)).Reduce(w.Workers, w, starts.IntView, order.IntView, coef.View, src.View,
            new SegmentSource(div, srcStride, srcOffset, cols), values.View);
        return values;
    }

    /// <summary>
    /// Builds the row-sparse gradient of a table with <paramref name="cols"/> columns from per-pair keys and one or more
    /// coefficient/source sets sharing the same sort (see <see cref="Reduce"/>).
    /// </summary>
    public static RowSparseGrad[] Build(Tensor keys, int cols, params (Tensor Coef, Tensor Src, int Div, int Stride, int Offset)[] sets)
    {
        var (sorted, order) = Sort(keys);
        var (rows, starts) = Segment(sorted);
        var result = new RowSparseGrad[sets.Length];
        for (int i = 0; i < sets.Length; i++)
        {
            var (coef, src, div, stride, off) = sets[i];
            var values = Scope.Unscope(Reduce(starts, order, coef, src, div, stride, off, cols));
            result[i] = new RowSparseGrad(Scope.Unscope(i == 0 ? rows : Copy(rows)), values);
        }
        sorted.Dispose();
        order.Dispose();
        starts.Dispose();
        if (sets.Length == 0) rows.Dispose();
        return result;
    }

    /// <summary>Adds <paramref name="g"/> into <paramref name="target"/>'s <see cref="Tensor.SparseGrad"/> (taking ownership);
    /// when one is already there the two are merged by the same sort-and-segment reduction, so the result stays deterministic.</summary>
    public static void Accumulate(Tensor target, RowSparseGrad g)
    {
        if (!target.RequiresGrad || target.IsDisposed)
        {
            g.Dispose();
            return;
        }
        Scope.Unscope(g.Rows);
        Scope.Unscope(g.Values);
        if (target.SparseGrad is not { } old)
        {
            target.SparseGrad = g;
            return;
        }
        var d = target.Device;
        int r1 = old.Rows.Length, r2 = g.Rows.Length, cols = g.Values.Shape[1];
        using var keys = Tensor.Empty(d, DType.I32, r1 + r2);
        using var src = Tensor.Empty(d, DType.F32, r1 + r2, cols);
        var k = d.Get(static d => new RowSparseKernels(d));
        CopyInto(k, old.Rows, keys, 0);
        CopyInto(k, g.Rows, keys, r1);
        CopyInto(k, old.Values, src, 0);
        CopyInto(k, g.Values, src, r1 * cols);
        using var ones = Tensor.Full(d, 1f, r1 + r2);
        var merged = Build(keys, cols, (ones, src, 1, cols, 0))[0];
        old.Dispose();
        g.Dispose();
        target.SparseGrad = merged;
    }

    /// <summary>The gradient as a dense F32 [rows, cols] tensor, zero where no row was kept (for export; costs O(rows)).</summary>
    public static Tensor ToDense(RowSparseGrad g, int rows)
    {
        var d = g.Rows.Device;
        int cols = g.Values.Shape[1];
        var dense = Tensor.Zeros(d, rows, cols);
        int r = g.Rows.Length;
        if (r > 0 && cols > 0)
        {
            var w = d.Split(r);
            d.Get(static d => new RowSparseKernels(d)).Scatter(w.Workers, w, g.Rows.IntView, g.Values.View, dense.View, cols);
        }
        return dense;
    }

    static Tensor Copy(Tensor t)
    {
        var k = t.Device.Get(static d => new RowSparseKernels(d));
        var c = Tensor.Empty(t.Device, t.DType, t.Shape);
        CopyInto(k, t, c, 0);
        return c;
    }

    static void CopyInto(RowSparseKernels k, Tensor from, Tensor to, int offset)
    {
        if (from.Length == 0) return;
        var w = from.Device.Split(from.Length);
        if (from.DType == DType.I32) k.CopyInt(w.Workers, w, from.IntView, to.IntView, offset);
        else k.CopyFloat(w.Workers, w, from.View, to.View, offset);
    }
}

/// <summary>Where a segment reduction reads its source rows: pair o reads row <c>o / Div</c> of a matrix with row stride
/// <c>Stride</c>, columns <c>Offset .. Offset + Cols - 1</c>.</summary>
internal readonly struct SegmentSource(int div, int stride, int offset, int cols)
{
    public readonly int Div = div, Stride = stride, Offset = offset, Cols = cols;
}

/// <summary>Kernels of the sort-and-segment reduction.</summary>
internal sealed class RowSparseKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>> CopyIota;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int> Merge;
    public readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int> CountStarts;
    public readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int> ScanBlocks;
    public readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> WriteSegments;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, SegmentSource, ArrayView<float>> Reduce;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int> CopyInt;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int> CopyFloat;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, int> Scatter;

    public RowSparseKernels(Device d)
    {
        CopyIota = d.LoadKernel(CopyIotaKernel);
        Merge = d.LoadKernel(MergeKernel);
        CountStarts = d.LoadKernel(CountStartsKernel);
        ScanBlocks = d.LoadKernel(ScanBlocksKernel);
        WriteSegments = d.LoadKernel(WriteSegmentsKernel);
        Reduce = d.LoadKernel(ReduceKernel);
        CopyInt = d.LoadKernel(CopyIntKernel);
        CopyFloat = d.LoadKernel(CopyFloatKernel);
        Scatter = d.LoadKernel(ScatterKernel);
    }

    // keys: [P] -> sortedKeys: [P] = keys, order: [P] = 0..P-1 (the sort permutes both in place)
    static void CopyIotaKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> sortedKeys, ArrayView<int> order)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                sortedKeys[i] = keys[i];
                order[i] = i;
            }
    }

    // keys, vals: [P] in sorted runs of `width` -> outKeys, outVals: [P] in sorted runs of 2*width; merge m per work item.
    // Ties take the left run first (stable).
    static void MergeKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> vals, ArrayView<int> outKeys, ArrayView<int> outVals, int width)
    {
        int p = (int)keys.Length;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int m = st, e = work.End(st); m < e; m++)
            {
                long lo = 2L * m * width;
                int a = (int)lo, mid = lo + width < p ? (int)(lo + width) : p, end = lo + 2L * width < p ? (int)(lo + 2L * width) : p;
                int i = a, j = mid, o = a;
                while (i < mid && j < end)
                {
                    if (keys[j] < keys[i]) { outKeys[o] = keys[j]; outVals[o] = vals[j]; j++; }
                    else { outKeys[o] = keys[i]; outVals[o] = vals[i]; i++; }
                    o++;
                }
                for (; i < mid; i++, o++) { outKeys[o] = keys[i]; outVals[o] = vals[i]; }
                for (; j < end; j++, o++) { outKeys[o] = keys[j]; outVals[o] = vals[j]; }
            }
    }

    // sorted: [P] -> counts[b]: number of segment starts in block b = positions [b*len, (b+1)*len)
    static void CountStartsKernel(Index1D b, ArrayView<int> sorted, ArrayView<int> counts, int len)
    {
        int p = (int)sorted.Length, from = b * len, to = from + len < p ? from + len : p, c = 0;
        for (int i = from; i < to; i++)
            if (i == 0 || sorted[i] != sorted[i - 1]) c++;
        counts[b] = c;
    }

    // counts: [blocks] -> offsets: [blocks + 1] exclusive prefix sums, the total in offsets[blocks]; one work item (blocks is
    // small). Separate input and output: the in-place form came out all zeros on PoCL (ILGPU 1.5.3's OpenCL code).
    static void ScanBlocksKernel(Index1D i, ArrayView<int> counts, ArrayView<int> offsets, int blocks)
    {
        int run = 0;
        for (int b = 0; b < blocks; b++)
        {
            offsets[b] = run;
            run += counts[b];
        }
        offsets[blocks] = run;
    }

    // sorted: [P], offsets: [blocks + 1] -> rows: [R] distinct keys, starts: [R + 1] first sorted position of each segment
    static void WriteSegmentsKernel(Index1D b, ArrayView<int> sorted, ArrayView<int> offsets, ArrayView<int> rows, ArrayView<int> starts, int len, int blocks)
    {
        int p = (int)sorted.Length, from = b * len, to = from + len < p ? from + len : p, seg = offsets[b];
        for (int i = from; i < to; i++)
            if (i == 0 || sorted[i] != sorted[i - 1])
            {
                rows[seg] = sorted[i];
                starts[seg] = i;
                seg++;
            }
        if (b == blocks - 1) starts[offsets[blocks]] = p;
    }

    // starts: [R + 1], order: [P], coef: [P], src: [.., Stride] -> values: [R, Cols]; one segment per item, sorted order
    static void ReduceKernel(Index1D w, Work work, ArrayView<int> starts, ArrayView<int> order, ArrayView<float> coef,
        ArrayView<float> src, SegmentSource s, ArrayView<float> values)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int seg = st, e = work.End(st); seg < e; seg++)
            {
                int outOff = seg * s.Cols;
                for (int c = 0; c < s.Cols; c++) values[outOff + c] = 0f;
                for (int q = starts[seg], qe = starts[seg + 1]; q < qe; q++)
                {
                    int o = order[q];
                    float a = coef[o];
                    int inOff = (o / s.Div) * s.Stride + s.Offset;
                    for (int c = 0; c < s.Cols; c++) values[outOff + c] += a * src[inOff + c];
                }
            }
    }

    // from: [n] -> to[offset + i]
    static void CopyIntKernel(Index1D w, Work work, ArrayView<int> from, ArrayView<int> to, int offset)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) to[offset + i] = from[i];
    }

    // from: [n] -> to[offset + i]
    static void CopyFloatKernel(Index1D w, Work work, ArrayView<float> from, ArrayView<float> to, int offset)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) to[offset + i] = from[i];
    }

    // rows: [R] distinct, values: [R, cols] -> dense[rows[s], :] = values[s, :]; one row per item
    static void ScatterKernel(Index1D w, Work work, ArrayView<int> rows, ArrayView<float> values, ArrayView<float> dense, int cols)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int s = st, e = work.End(st); s < e; s++)
            {
                int to = rows[s] * cols, from = s * cols;
                for (int c = 0; c < cols; c++) dense[to + c] = values[from + c];
            }
    }
}
