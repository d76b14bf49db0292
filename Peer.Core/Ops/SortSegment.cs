// Sort-and-segment: the one deterministic reduction of (key, pair) contributions, behind every row-sparse gradient
// (embeddings, PEER experts and sub-keys, the PKM values) and the expert-usage counts. Pairs are sorted by key with a
// stable merge sort (equal keys keep ascending pair index), cut into segments of equal key, and each segment is summed
// in ascending pair order. Every pass is parallel over all workers: sorted runs of RunLength are built by ranking, each
// merge level splits its output evenly between workers by merge path (a co-rank binary search), segment heads are
// counted per block and the block counts scanned in log2(blocks) steps. No atomics: the same inputs give the same bits
// on a backend, whatever the worker count. Costs O(P log P + P * cols), never O(rows of the table). Nothing is read back to
// the host: the outputs are sized by a bound known there, B = min(P, limit) segments, and the real count R stays on the
// device (docs/layers.md, "Row-sparse gradients"). On the CPU accelerator
// the runs pass's body sorts everything at once and writes the segments, and the merge and heads passes are skipped; the
// sums have a SIMD body (Cpu/SortSegmentCpu.cs, the same bits).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>The sort-and-segment reduction (the row-sparse gradients built with it: RowSparseGradients.cs).</summary>
internal static class SortSegment
{
    /// <summary>Length of the sorted runs the first pass builds (each element ranked within its run).</summary>
    internal const int RunLength = 8;
    /// <summary>Most pairs one reduction takes (so that 2 * width and block offsets stay inside an int).</summary>
    internal const int MaxPairs = 1 << 30;

    /// <summary>
    /// Sorts the pairs whose keys are <paramref name="keys1"/> (pairs 0 .. n1-1, may be null) then <paramref name="keys2"/>
    /// (pairs n1 ..), stably, and cuts them into segments of equal key. Keys outside [0, <paramref name="limit"/>) are dropped:
    /// they sort last and belong to no segment. Reads nothing back to the host: the outputs have B = min(P, limit) segments,
    /// the real ones first (see <see cref="SortedSegments"/>).
    /// </summary>
    public static SortedSegments Run(Tensor? keys1, Tensor keys2, int limit, SortSegmentShape? shape = null)
    {
        Check.DType(keys2, DType.I32, nameof(keys2));
        if (keys1 is not null)
        {
            Check.DType(keys1, DType.I32, nameof(keys1));
            Check.SameDevice(keys2, keys1, nameof(keys1));
        }
        var d = keys2.Device;
        int n1 = keys1?.Length ?? 0;
        long total = (long)n1 + keys2.Length;
        Check.That(total <= MaxPairs, nameof(keys2), $"{total} pairs", $"at most 2^30 pairs to sort");
        int p = (int)total;
        var k = d.Get(static d => new SortSegmentKernels(d));
        var sh = shape ?? SortSegmentShape.For(d);
        var keys = Tensor.Empty(d, DType.I32, p);
        var order = Tensor.Empty(d, DType.I32, p);
        if (p == 0) return new SortedSegments(n1, keys, order, Tensor.Empty(d, DType.I32, 0), Tensor.ZerosInt(d, 1), Tensor.ZerosInt(d, 1));
        int bound = Bound(p, limit);

        var rows = Tensor.Empty(d, DType.I32, bound);
        var starts = Tensor.Empty(d, DType.I32, bound + 1);
        var count = Tensor.Empty(d, DType.I32, 1);
        var w = d.Split(p);
        k.Runs(w.Workers, w, (keys1 ?? keys2).IntView, keys2.IntView, n1, limit, keys.IntView, order.IntView, rows.IntView, starts.IntView,
            count.IntView, bound);
        // The CPU body has sorted everything and written the segments: one launch in all.
        if (k.RunsSegmentAll) return new SortedSegments(n1, keys, order, rows, starts, count);
        // Bottom-up merges of the sorted runs, ping-ponging with a scratch pair. Each level splits its P outputs into
        // equal contiguous ranges, one per worker, whatever the run widths (so the last levels, two or four long merges,
        // keep every worker busy). Ties take the left run: stable.
        var (keysB, orderB) = (Tensor.Empty(d, DType.I32, p), Tensor.Empty(d, DType.I32, p));
        var mw = Contiguous(d, p, sh.MergeGrain);
        for (int width = RunLength; width < p; width *= 2)
        {
            k.Merge(mw.Workers, mw, keys.IntView, order.IntView, keysB.IntView, orderB.IntView, width);
            (keys, order, keysB, orderB) = (keysB, orderB, keys, order);
        }
        keysB.Dispose();
        orderB.Dispose();

        // Segment heads (a kept key differing from its predecessor): counted per block of contiguous positions, the block
        // counts scanned (inclusive, log-step, ping-pong buffers), then each block writes its heads from its offset.
        int blockLen = sh.BlockLength > 0 ? sh.BlockLength : (p + d.Workers - 1) / d.Workers;
        int blocks = (p + blockLen - 1) / blockLen;
        var bw = d.Split(blocks);
        using var counts = Tensor.Empty(d, DType.I32, blocks);
        using var scanA = Tensor.Empty(d, DType.I32, blocks);
        using var scanB = Tensor.Empty(d, DType.I32, blocks);
        k.CountHeads(bw.Workers, bw, keys.IntView, counts.IntView, blockLen);
        var inclusive = counts;
        for (int step = 1; step < blocks; step *= 2)
        {
            var to = ReferenceEquals(inclusive, scanA) ? scanB : scanA;
            k.ScanStep(bw.Workers, bw, inclusive.IntView, to.IntView, step);
            inclusive = to;
        }
        // R = inclusive[blocks - 1] stays on the device: the heads kernel reads it there, and a second pass pads rows R .. B-1.
        // Chunked devices write the padding in the heads kernel's last block (a few stores, and a launch saved: measured in
        // docs/layers.md, "Row-sparse gradients"); GPUs in a pass of their own, one segment per item.
        bool padInHeads = sh.BlockLength == 0;
        k.WriteHeads(bw.Workers, bw, keys.IntView, counts.IntView, inclusive.IntView, rows.IntView, starts.IntView, count.IntView, blockLen,
            padInHeads ? bound : 0);
        if (bound > 0 && !padInHeads)
        {
            var tw = d.Split(bound);
            k.Pad(tw.Workers, tw, count.IntView, rows.IntView, starts.IntView);
        }
        return new SortedSegments(n1, keys, order, rows, starts, count);
    }

    /// <summary>How many segments the outputs of <paramref name="pairs"/> pairs keyed in [0, <paramref name="limit"/>) are
    /// sized for: at most one per pair and one per key, B = min(P, limit) (0 for a negative limit).</summary>
    internal static int Bound(int pairs, int limit) => Math.Max(0, Math.Min(pairs, limit));

    /// <summary>
    /// Segment sums, F32 [B, cols]: row s is the sum over the sorted positions of segment s, in ascending pair order, of each
    /// pair's contribution (see <see cref="SegmentSource"/>; <paramref name="first"/> F32 [n1, cols] or null when n1 = 0,
    /// <paramref name="coef"/> F32 indexed by pair - n1, or null for weight 1); the padding rows R .. B-1 are zero.
    /// </summary>
    public static Tensor Sum(SortedSegments s, Tensor? first, Tensor? coef, Tensor src, int div, int stride, int offset, int cols,
        SortSegmentShape? shape = null)
    {
        var d = s.Order.Device;
        int r = s.Rows.Length, n1 = first?.Shape[0] ?? 0; // B segments, padding included (whose sums are zero rows)
        Check.That(n1 == s.First, nameof(first), $"{n1} rows", $"one row per pair of the first key set ({s.First})");
        var values = Tensor.Empty(d, DType.F32, r, cols);
        if (r == 0 || cols == 0) return values;
        // Chunked devices sum whole rows per item (contiguous reads); GPUs one column per item (neighbours read neighbours).
        int colBlock = (shape ?? SortSegmentShape.For(d)).RowPerItem ? cols : 1, items = r * ((cols + colBlock - 1) / colBlock);
        var w = d.Split(items);
        var source = new SegmentSource(n1, div, stride, offset, cols, colBlock, coef is null ? 0 : 1);
        d.Get(static d => new SortSegmentKernels(d)).Sum(w.Workers, w, s.Starts.IntView, s.Order.IntView, (first ?? src).View,
            (coef ?? src).View, src.View, source, values.View);
        return values;
    }

    /// <summary>A split of <paramref name="n"/> items into one contiguous range per worker, at least <paramref name="grain"/> items each.</summary>
    static Work Contiguous(Device d, int n, int grain)
    {
        int workers = (int)Math.Max(1, Math.Min(d.Workers, ((long)n + grain - 1) / grain));
        return new Work(n, workers, (int)(((long)n + workers - 1) / workers));
    }
}

/// <summary>Kernels of the sort-and-segment reduction: the portable kernels below, the runs and the sums being the CPU bodies'
/// kernels (Cpu/SortSegmentCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class SortSegmentKernels
{
    /// <summary>Whether <see cref="Runs"/> sorts the pairs completely and writes the segments (its CPU body), so that no
    /// merge level and no heads pass is needed.</summary>
    public readonly bool RunsSegmentAll;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int, int, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int> Runs;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int> Merge;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int> CountHeads;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, int> ScanStep;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> WriteHeads;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>> Pad;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SegmentSource, ArrayView<float>> Sum;

    public SortSegmentKernels(Device d)
    {
        // The sort body is plain C# (it needs no vector unit); the sums use 256-bit vectors.
        RunsSegmentAll = d.CpuBodyBits >= 0; // where Device.Choose picks a body that needs 0 bits
        Runs = d.LoadKernel(RunsKernel, SortSegmentCpu.RunsKernel, 0);
        Merge = d.LoadKernel(MergeKernel);
        CountHeads = d.LoadKernel(CountHeadsKernel);
        ScanStep = d.LoadKernel(ScanStepKernel);
        WriteHeads = d.LoadKernel(WriteHeadsKernel);
        Pad = d.LoadKernel(PadKernel);
        Sum = d.LoadKernel(SumKernel, SortSegmentCpu.SumKernel, 256);
    }

    // The sort key of pair i: keys1[i] for i < n1, else keys2[i - n1]; int.MaxValue (sorts last) outside [0, limit).
    static int KeyOf(ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, int i)
    {
        int id = i < n1 ? keys1[i] : keys2[i - n1];
        return id >= 0 && id < limit ? id : int.MaxValue;
    }

    // keys1: [n1], keys2: [P - n1] -> keys, order: [P] sorted (stably) within each run of RunLength; one pair per item, placed
    // at its rank in its run (reads only the inputs, so no element is read after another item wrote it). The segment outputs
    // (rows, starts, count; bound B) are the CPU body's, which segments in the same launch; here the later passes write them.
    static void RunsKernel(Index1D w, Work work, ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, ArrayView<int> keys,
        ArrayView<int> order, ArrayView<int> rows, ArrayView<int> starts, ArrayView<int> count, int bound)
    {
        int p = work.N;
        for (int s = work.Start(w); s < p; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int from = i / SortSegment.RunLength * SortSegment.RunLength, to = from + SortSegment.RunLength < p ? from + SortSegment.RunLength : p;
                int key = KeyOf(keys1, keys2, n1, limit, i), rank = 0;
                for (int j = from; j < to; j++)
                {
                    int other = KeyOf(keys1, keys2, n1, limit, j);
                    if (other < key || (other == key && j < i)) rank++;
                }
                keys[from + rank] = key;
                order[from + rank] = i;
            }
    }

    // keys, order: [P] sorted in runs of `width` -> outKeys, outOrder: [P] sorted in runs of 2 width. Each item owns a
    // contiguous range of outputs: it finds where its first output's merge stands by a co-rank binary search (how many of
    // the first k outputs come from the left run), then merges sequentially to the end of its range. Ties take the left run.
    static void MergeKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> order, ArrayView<int> outKeys, ArrayView<int> outOrder, int width)
    {
        int p = work.N;
        for (int s = work.Start(w); s < p; s += work.Stride)
        {
            int o = s, end = work.End(s);
            while (o < end)
            {
                int lo = o / (2 * width) * (2 * width);
                int mid = lo + width < p ? lo + width : p, hi = mid + width < p ? mid + width : p;
                int k = o - lo, a = k - (hi - mid) > 0 ? k - (hi - mid) : 0, b = k < mid - lo ? k : mid - lo;
                while (a < b)
                {
                    int x = (a + b) >> 1;
                    if (keys[lo + x] <= keys[mid + k - x - 1]) a = x + 1;
                    else b = x;
                }
                int i = lo + a, j = mid + k - a, stop = end < hi ? end : hi;
                for (; o < stop; o++)
                {
                    if (j >= hi || (i < mid && keys[i] <= keys[j]))
                    {
                        outKeys[o] = keys[i];
                        outOrder[o] = order[i];
                        i++;
                    }
                    else
                    {
                        outKeys[o] = keys[j];
                        outOrder[o] = order[j];
                        j++;
                    }
                }
            }
        }
    }

    // Whether sorted position i starts a segment: a kept key differing from its predecessor.
    static bool IsHead(ArrayView<int> keys, int i) => keys[i] != int.MaxValue && (i == 0 || keys[i] != keys[i - 1]);

    // sorted keys: [P] -> counts[b]: segment heads among positions [b * len, (b + 1) * len); one block per item
    static void CountHeadsKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> counts, int len)
    {
        int p = (int)keys.Length;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int b = s, e = work.End(s); b < e; b++)
            {
                int c = 0;
                for (int i = b * len, to = i + len < p ? i + len : p; i < to; i++)
                    if (IsHead(keys, i)) c++;
                counts[b] = c;
            }
    }

    // One step of an inclusive scan over [blocks]: to[b] = from[b] + from[b - step] (b >= step). Separate buffers: the
    // in-place form is what ILGPU 1.5.3 at O2 may reorder (a load moved below a store to the same element).
    static void ScanStepKernel(Index1D w, Work work, ArrayView<int> from, ArrayView<int> to, int step)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int b = s, e = work.End(s); b < e; b++) to[b] = b >= step ? from[b] + from[b - step] : from[b];
    }

    // sorted keys: [P], counts and inclusive sums: [blocks] -> rows[0 .. R-1] the distinct kept keys, starts[0 .. R] segment
    // bounds, count[0] = R (the last inclusive sum). starts[R] is the first dropped position (written by its block) or P (by
    // the last block when none is dropped). pad = B > 0: the last block also writes the padding up to B as PadKernel does,
    // taking the end of the kept pairs from a binary search of the sorted keys (another block may be writing starts[R]).
    // B comes as an argument: a view's length may exceed its tensor's (an empty tensor's buffer is not empty).
    static void WriteHeadsKernel(Index1D w, Work work, ArrayView<int> keys, ArrayView<int> counts, ArrayView<int> inclusive,
        ArrayView<int> rows, ArrayView<int> starts, ArrayView<int> count, int len, int pad)
    {
        int p = (int)keys.Length, r = inclusive[work.N - 1];
        if (w == 0) count[0] = r;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int b = s, e = work.End(s); b < e; b++)
            {
                int seg = inclusive[b] - counts[b];
                int i = b * len, to = i + len < p ? i + len : p;
                for (; i < to; i++)
                {
                    if (IsHead(keys, i))
                    {
                        rows[seg] = keys[i];
                        starts[seg] = i;
                        seg++;
                    }
                    else if (keys[i] == int.MaxValue && (i == 0 || keys[i - 1] != int.MaxValue)) starts[r] = i;
                }
                if (to == p && keys[p - 1] != int.MaxValue) starts[r] = p;
                if (pad > 0 && b == work.N - 1)
                {
                    int lo = 0, hi = p; // the first dropped (int.MaxValue) position, or P
                    while (lo < hi)
                    {
                        int mid = (lo + hi) >> 1;
                        if (keys[mid] == int.MaxValue) hi = mid;
                        else lo = mid + 1;
                    }
                    for (int q = r; q < pad; q++)
                    {
                        rows[q] = RowSparseGrad.NoRow;
                        starts[q + 1] = lo;
                    }
                }
            }
    }

    // count: [1] = R, rows: [B], starts: [B + 1] as the heads kernel left them -> padding segments s in [R, B): rows[s] = NoRow,
    // starts[s + 1] = starts[R] (empty). One segment per item; no item writes starts[R], which they all read.
    static void PadKernel(Index1D w, Work work, ArrayView<int> count, ArrayView<int> rows, ArrayView<int> starts)
    {
        int r = count[0];
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int s = st > r ? st : r, e = work.End(st); s < e; s++)
            {
                rows[s] = RowSparseGrad.NoRow;
                starts[s + 1] = starts[r];
            }
    }

    // starts: [R + 1], order: [P] -> values: [R, Cols]; item = (segment, block of ColBlock columns), pairs in sorted order
    // (see SegmentSource for what pair o contributes)
    static void SumKernel(Index1D w, Work work, ArrayView<int> starts, ArrayView<int> order, ArrayView<float> first,
        ArrayView<float> coef, ArrayView<float> src, SegmentSource s, ArrayView<float> values)
    {
        // The fields read once into locals, outside the per-element loops.
        int cols = s.Cols, colBlock = s.ColBlock, nFirst = s.First, div = s.Div, stride = s.Stride, offset = s.Offset;
        bool hasCoef = s.HasCoef != 0;
        int colBlocks = (cols + colBlock - 1) / colBlock;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int item = st, e = work.End(st); item < e; item++)
            {
                int seg = item / colBlocks, c0 = (item - seg * colBlocks) * colBlock, c1 = c0 + colBlock < cols ? c0 + colBlock : cols;
                int outOff = seg * cols;
                for (int c = c0; c < c1; c++) values[outOff + c] = 0f;
                for (int q = starts[seg], qe = starts[seg + 1]; q < qe; q++)
                {
                    int o = order[q];
                    if (o < nFirst)
                    {
                        int inOff = o * cols;
                        for (int c = c0; c < c1; c++) values[outOff + c] += first[inOff + c];
                    }
                    else
                    {
                        o -= nFirst;
                        float a = hasCoef ? coef[o] : 1f;
                        int inOff = o / div * stride + offset;
                        for (int c = c0; c < c1; c++) values[outOff + c] += a * src[inOff + c];
                    }
                }
            }
    }
}
