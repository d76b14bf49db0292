// The CPU accelerator's bodies for the sort-and-segment reduction (SortSegment.cs, the definition), reached through
// [External]. Measured reason (the profiler, PEER layer step at N = 128^2, d = 256, T = 1024, h*k = 128): the portable
// segment sums took 44 % of the step and the sort's passes 24 launches per sort (a merge level each), the launches alone
// costing milliseconds apiece on a loaded machine. Here the runs kernel's body does the whole segmentation in one launch,
// on one worker: a stable sort of all pairs (a counting sort when the key range is small next to the pairs, as for the
// experts and sub-keys of small PEER tables; else an LSD radix sort), then the segment rows, starts, padding and count, so
// SortSegment.Run skips the merge levels and the heads passes (docs/layers.md, "Row-sparse gradients"). The segment sums
// add each segment's terms in the same order as the portable kernel, eight columns at a time. Both give the portable
// path's bits exactly (a stable sort's result is unique, and so are the segments of sorted keys; each column's additions
// keep their order).
using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Sort-and-segment bodies over CPU memory and the kernels that call them, which <see cref="SortSegmentKernels"/>
/// loads in place of its runs and sums kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static class SortSegmentCpu
{
    // keys1: [n1], keys2: [P - n1] -> keys, order: [P] sorted completely and stably (which also satisfies the runs kernel's
    // contract, runs of RunLength sorted), and rows: [bound], starts: [bound + 1], count: [1] the segments as the heads and
    // padding passes would write them; worker 0 does everything, the others have nothing to do
    internal static void RunsKernel(Index1D w, Work work, ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, ArrayView<int> keys,
        ArrayView<int> order, ArrayView<int> rows, ArrayView<int> starts, ArrayView<int> count, int bound)
    {
        if (w == 0 && work.N > 0) SegmentAll(keys1, keys2, n1, limit, keys, order, rows, starts, count, work.N, bound);
    }

    // starts: [R + 1], order: [P] -> values: [R, Cols]; worker w's chunks of items (segment, block of ColBlock columns)
    internal static void SumKernel(Index1D w, Work work, ArrayView<int> starts, ArrayView<int> order, ArrayView<float> first,
        ArrayView<float> coef, ArrayView<float> src, SegmentSource s, ArrayView<float> values)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Sum(starts, order, first, coef, src, s, values, st, work.End(st));
    }

    const int DigitBits = 11;

    /// <summary>Whether <see cref="SegmentAll"/> sorts <paramref name="p"/> pairs keyed below <paramref name="limit"/> by
    /// counting: one histogram of the whole key range (a pass over the keys, one over the histogram, one scatter) against the
    /// radix sort's two passes per 11-bit digit. Up to 2^16 keys the histogram stays in the L2 cache; past that it pays only
    /// while it is no longer than twice the pairs (the language model's million-row tables take the radix sort).</summary>
    internal static bool SortsByCounting(int p, int limit) => limit <= Math.Max(1 << 16, 2L * p);

    /// <summary>
    /// The whole segmentation of pairs 0..p-1 (keys1[i] for i &lt; n1, else keys2[i - n1]; keys outside [0, limit) dropped):
    /// the stable sort (<see cref="CountingSort"/> or <see cref="SortAll"/>), then the distinct kept keys in rows[0 .. R-1],
    /// their first sorted positions in starts[0 .. R-1], starts[R .. bound] the first dropped position (or p), rows[R .. bound-1]
    /// NoRow and count[0] = R: what the runs, heads and padding kernels write between them.
    /// </summary>
    [External("peer_sort_segment_segment_all_cpu")]
    public static void SegmentAll(ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, ArrayView<int> keys, ArrayView<int> order,
        ArrayView<int> rows, ArrayView<int> starts, ArrayView<int> count, int p, int bound)
    {
        ref int r0 = ref CpuView.First(rows), s0 = ref starts[0];
        int r;
        if (SortsByCounting(p, limit)) r = CountingSort(keys1, keys2, n1, limit, keys, order, ref r0, ref s0, p);
        else
        {
            SortAll(keys1, keys2, n1, limit, keys, order, p);
            ref int k0 = ref keys[0];
            r = 0;
            int i = 0;
            for (; i < p; i++)
            {
                int key = Unsafe.Add(ref k0, i);
                if (key == int.MaxValue) break; // dropped keys come last
                if (i == 0 || key != Unsafe.Add(ref k0, i - 1))
                {
                    Unsafe.Add(ref r0, r) = key;
                    Unsafe.Add(ref s0, r) = i;
                    r++;
                }
            }
            Unsafe.Add(ref s0, r) = i;
        }
        for (int q = r; q < bound; q++)
        {
            Unsafe.Add(ref r0, q) = RowSparseGrad.NoRow;
            Unsafe.Add(ref s0, q + 1) = Unsafe.Add(ref s0, r);
        }
        count[0] = r;
    }

    /// <summary>
    /// A stable counting sort of pairs 0..p-1 by key (as <see cref="SortAll"/>), which also writes the segments from its
    /// histogram: rows[0 .. R-1] the keys that occur, ascending, starts[0 .. R] where each begins and where the dropped keys
    /// begin (or p). Returns R. Costs O(p + limit).
    /// </summary>
    static int CountingSort(ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, ArrayView<int> keys, ArrayView<int> order,
        ref int rows, ref int starts, int p)
    {
        ref int k1 = ref CpuView.First(keys1), k2 = ref CpuView.First(keys2), outKeys = ref keys[0], outOrder = ref order[0];
        int range = Math.Max(limit, 0); // bucket `range` holds the dropped keys, after every kept one
        var pool = ArrayPool<int>.Shared;
        int[] next = pool.Rent(range + 1);
        try
        {
            Array.Clear(next, 0, range + 1);
            for (int i = 0; i < n1; i++) next[Bucket(Unsafe.Add(ref k1, i), range)]++;
            for (int i = n1; i < p; i++) next[Bucket(Unsafe.Add(ref k2, i - n1), range)]++;
            // Counts become each bucket's first position; a bucket that occurs is a segment.
            int r = 0;
            for (int key = 0, at = 0; key <= range; key++)
            {
                int c = next[key];
                if (c > 0 && key < range)
                {
                    Unsafe.Add(ref rows, r) = key;
                    Unsafe.Add(ref starts, r) = at;
                    r++;
                }
                next[key] = at;
                at += c;
            }
            Unsafe.Add(ref starts, r) = next[range];
            for (int i = 0; i < p; i++)
            {
                int key = Bucket(i < n1 ? Unsafe.Add(ref k1, i) : Unsafe.Add(ref k2, i - n1), range), to = next[key]++;
                Unsafe.Add(ref outKeys, to) = key == range ? int.MaxValue : key;
                Unsafe.Add(ref outOrder, to) = i;
            }
            return r;
        }
        finally
        {
            pool.Return(next);
        }
    }

    // A pair's bucket: its key when kept (in [0, range)), else range.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Bucket(int id, int range) => (uint)id < (uint)range ? id : range;

    /// <summary>
    /// A stable LSD radix sort of pairs 0..p-1 by key (keys1[i] for i &lt; n1, else keys2[i - n1]; keys outside [0, limit) are
    /// dropped: they sort last, in pair order, and read int.MaxValue), writing the sorted keys and the pair at each position.
    /// </summary>
    [External("peer_sort_segment_sort_all_cpu")]
    public static void SortAll(ArrayView<int> keys1, ArrayView<int> keys2, int n1, int limit, ArrayView<int> keys, ArrayView<int> order, int p)
    {
        ref int k1 = ref CpuView.First(keys1), k2 = ref CpuView.First(keys2), outKeys = ref keys[0], outOrder = ref order[0];
        var pool = ArrayPool<int>.Shared;
        int[] a = pool.Rent(p), b = pool.Rent(p), ia = pool.Rent(p), ib = pool.Rent(p), counts = pool.Rent(1 << DigitBits);
        try
        {
            // Dropped keys become `limit`, one more than any kept key, so that they sort last and stay in pair order.
            for (int i = 0; i < p; i++)
            {
                int id = i < n1 ? Unsafe.Add(ref k1, i) : Unsafe.Add(ref k2, i - n1);
                a[i] = id >= 0 && id < limit ? id : limit;
                ia[i] = i;
            }
            int bits = 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)limit);
            for (int shift = 0; shift < bits; shift += DigitBits)
            {
                int mask = (1 << DigitBits) - 1;
                Array.Clear(counts, 0, 1 << DigitBits);
                for (int i = 0; i < p; i++) counts[(a[i] >> shift) & mask]++;
                for (int d = 0, sum = 0; d < 1 << DigitBits; d++) (counts[d], sum) = (sum, sum + counts[d]);
                for (int i = 0; i < p; i++)
                {
                    int to = counts[(a[i] >> shift) & mask]++;
                    b[to] = a[i];
                    ib[to] = ia[i];
                }
                (a, b, ia, ib) = (b, a, ib, ia);
            }
            for (int i = 0; i < p; i++)
            {
                Unsafe.Add(ref outKeys, i) = a[i] == limit ? int.MaxValue : a[i];
                Unsafe.Add(ref outOrder, i) = ia[i];
            }
        }
        finally
        {
            pool.Return(a);
            pool.Return(b);
            pool.Return(ia);
            pool.Return(ib);
            pool.Return(counts);
        }
    }

    /// <summary>Items <c>[from, to)</c> of the segment sums, an item being a segment and a block of ColBlock columns (see
    /// SortSegmentKernels.SumKernel): each output element starts at zero and adds its segment's terms in sorted order, as the
    /// portable kernel does.</summary>
    [External("peer_sort_segment_sum_cpu")]
    public static void Sum(ArrayView<int> starts, ArrayView<int> order, ArrayView<float> first, ArrayView<float> coef, ArrayView<float> src,
        SegmentSource s, ArrayView<float> values, int from, int to)
    {
        ref int st0 = ref starts[0], or0 = ref CpuView.First(order);
        ref float f0 = ref CpuView.First(first), co0 = ref CpuView.First(coef), src0 = ref CpuView.First(src), v0 = ref values[0];
        int cols = s.Cols, colBlocks = (cols + s.ColBlock - 1) / s.ColBlock;
        bool hasCoef = s.HasCoef != 0;
        for (int item = from; item < to; item++)
        {
            int seg = item / colBlocks, c0 = (item - seg * colBlocks) * s.ColBlock, n = Math.Min(s.ColBlock, cols - c0);
            // The row stays in cache while each term's source row is read in order.
            ref float row = ref Unsafe.Add(ref v0, (nint)seg * cols + c0);
            for (int c = 0; c < n; c++) Unsafe.Add(ref row, c) = 0f;
            for (int q = Unsafe.Add(ref st0, seg), qe = Unsafe.Add(ref st0, seg + 1); q < qe; q++)
            {
                int o = Unsafe.Add(ref or0, q);
                if (o < s.First) AddRow(ref row, ref Unsafe.Add(ref f0, (nint)o * cols + c0), n);
                else
                {
                    o -= s.First;
                    float a = hasCoef ? Unsafe.Add(ref co0, o) : 1f;
                    AddScaledRow(ref row, a, ref Unsafe.Add(ref src0, (nint)(o / s.Div) * s.Stride + s.Offset + c0), n);
                }
            }
        }
    }

    // row += x, element by element (one rounding each, as the portable kernel's +=).
    static void AddRow(ref float row, ref float x, int n)
    {
        int c = 0;
        for (; c <= n - 8; c += 8) (Vector256.LoadUnsafe(ref row, (nuint)c) + Vector256.LoadUnsafe(ref x, (nuint)c)).StoreUnsafe(ref row, (nuint)c);
        for (; c < n; c++) Unsafe.Add(ref row, c) += Unsafe.Add(ref x, c);
    }

    // row += a * x: a product then a sum, each rounded, as the portable kernel computes it (no fused multiply-add).
    static void AddScaledRow(ref float row, float a, ref float x, int n)
    {
        var av = Vector256.Create(a);
        int c = 0;
        for (; c <= n - 8; c += 8) (Vector256.LoadUnsafe(ref row, (nuint)c) + av * Vector256.LoadUnsafe(ref x, (nuint)c)).StoreUnsafe(ref row, (nuint)c);
        for (; c < n; c++) Unsafe.Add(ref row, c) += a * Unsafe.Add(ref x, c);
    }
}
