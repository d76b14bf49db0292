// The CPU accelerator's body for product-key retrieval's selection (the top-k of each sub-key score row, then the top-k
// of the k*k candidate sums), reached through [External] so that the insertion lists live in stack memory and the score
// rows are read through plain references. Measured reason: once the fused experts had SIMD bodies, retrieval was the
// PEER layer's largest CPU cost, mostly the selection's insertion lists in local-memory views (~26 -> ~4.5 ms at the
// tiny preset's PEER shapes). Same algorithm, comparisons and insertion order as the portable SelectKernel in
// ProductKeyTopK.cs (the definition), both through TopKList.Insert, so the results are identical.
// The query's gradient and the halves' copy have bodies too: at d = 256, h = 8, dq = 256, T = 1024 the portable query
// gradient took a quarter of a PEER layer step (the profiler); the bodies do the same additions in the same order
// (identical bits) with 256-bit vectors and plain copies.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Plain-C# product-key selection over CPU memory and the kernel that calls it, which <see cref="ProductKeyKernels"/>
/// loads in place of its portable selection kernel on the CPU accelerator (the body cannot compile for GPUs).</summary>
internal static unsafe class ProductKeyTopKCpu
{
    // q: [T*h, dq] (rows start.. of a chunk) -> qa, qb: [rows, dq/2]; worker w's chunks of rows
    internal static void SplitHalvesKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> q, ArrayView<float> qa, ArrayView<float> qb, int start)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) SplitHalves(s, q, qa, qb, start, st, work.End(st));
    }

    // dS, indices: [T, h, k], sub1, sub2: [n, dq/2] -> dq: [T, h*dq]; worker w's chunks of (token, head) items
    internal static void BackwardQueryKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> dS, ArrayView<int> indices,
        ArrayView<float> sub1, ArrayView<float> sub2, ArrayView<float> dq)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) BackwardQuery(s, dS, indices, sub1, sub2, dq, st, work.End(st));
    }

    /// <summary>Rows <c>[from, to)</c> of a chunk: each (token, head) query's halves copied apart.</summary>
    [External("peer_product_key_split_halves_cpu")]
    public static void SplitHalves(RetrievalShape s, ArrayView<float> q, ArrayView<float> qa, ArrayView<float> qb, int start, int from, int to)
    {
        ref float q0 = ref q[0], a0 = ref qa[0], b0 = ref qb[0];
        for (int r = from; r < to; r++)
        {
            var src = MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref q0, (nint)(start + r) * s.Dq), s.Dq);
            src[..s.Half].CopyTo(MemoryMarshal.CreateSpan(ref Unsafe.Add(ref a0, (nint)r * s.Half), s.Half));
            src[s.Half..].CopyTo(MemoryMarshal.CreateSpan(ref Unsafe.Add(ref b0, (nint)r * s.Half), s.Half));
        }
    }

    /// <summary>Items <c>[from, to)</c> of the query's gradient: <c>dq = Σ_m dS[m] (sub1[r_m] ++ sub2[c_m])</c>, the terms added in m
    /// order to a zeroed row, as the portable kernel does (a product then a sum, each rounded).</summary>
    [External("peer_product_key_backward_query_cpu")]
    public static void BackwardQuery(RetrievalShape s, ArrayView<float> dS, ArrayView<int> indices, ArrayView<float> sub1, ArrayView<float> sub2,
        ArrayView<float> dq, int from, int to)
    {
        ref float g0 = ref dS[0], k1 = ref sub1[0], k2 = ref sub2[0], dq0 = ref dq[0];
        ref int ix0 = ref indices[0];
        int half = s.Half;
        for (int item = from; item < to; item++)
        {
            ref float row = ref Unsafe.Add(ref dq0, (nint)item * s.Dq);
            MemoryMarshal.CreateSpan(ref row, s.Dq).Clear();
            for (int m = 0; m < s.K; m++)
            {
                float g = Unsafe.Add(ref g0, (nint)item * s.K + m);
                int i = Unsafe.Add(ref ix0, (nint)item * s.K + m), r = i / s.N, c = i - r * s.N;
                AddScaled(ref row, g, ref Unsafe.Add(ref k1, (nint)r * half), half);
                AddScaled(ref Unsafe.Add(ref row, half), g, ref Unsafe.Add(ref k2, (nint)c * half), half);
            }
        }
    }

    // y += a * x over n floats, a product then a sum per element (no fused multiply-add: the portable kernel's rounding).
    static void AddScaled(ref float y, float a, ref float x, int n)
    {
        var av = Vector256.Create(a);
        int j = 0;
        for (; j <= n - 8; j += 8) (Vector256.LoadUnsafe(ref y, (nuint)j) + av * Vector256.LoadUnsafe(ref x, (nuint)j)).StoreUnsafe(ref y, (nuint)j);
        for (; j < n; j++) Unsafe.Add(ref y, j) += a * Unsafe.Add(ref x, j);
    }

    // s1, s2: [rows, n] sub-key scores of chunk rows start.. -> indices, scores: [T, h, k] at those rows; one index per
    // worker, whose chunks of (token, head) items the body processes
    internal static void SelectKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> s1, ArrayView<float> s2,
        ArrayView<int> indices, ArrayView<float> scores, int start)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Select(s, s1, s2, indices, scores, start, st, work.End(st));
    }

    // A top-k list in stack memory.
    internal readonly struct StackList(float* scores, int* ids) : ITopKList
    {
        readonly float* scores = scores;
        readonly int* ids = ids;

        public float Score(int m) => scores[m];
        public int Id(int m) => ids[m];
        public void Set(int m, float score, int id)
        {
            scores[m] = score;
            ids[m] = id;
        }
    }

    // row[0 .. n) -> the k best (score, column) in list, as inserting every column in ascending order through TopKList.Insert
    // gives (the portable kernel's scan), with far fewer insertions. Measured reason: at the vision preset's n = 64, k = 4 the
    // selection was the PEER layer's largest CPU cost, nearly all of it in the one-column-at-a-time scan's insertions.
    // Two cuts, each dropping only columns that scan could not keep:
    // - Once the list is full, a column enters only with a score strictly above the k-th kept one: on an equal score the kept
    //   pair, an earlier column, wins (TopKList.Better). So 8 columns at a time are compared with it.
    // - Before the scan (k <= 8, n >= 16, no NaN in the row), a floor: lane j of the 8-wide maxima is the best score among
    //   the columns = j mod 8, so the 8 lanes are 8 different columns; the largest, over groups of g >= k lanes, of a
    //   group's smallest lane has at least k columns at or above it. A column strictly below it has k better ones and is
    //   dropped. With no NaN, Better is a strict total order and the sorted insertion keeps exactly the k best of what it
    //   is given, in any order, so the list is the scan's. A row with a NaN (where the scan's result depends on the order)
    //   skips the floor.
    internal static void TopK(ref float row, int n, int k, StackList list)
    {
        int count = 0, r = 0;
        if (k <= 8 && n >= 16)
        {
            float floor = Floor(ref row, n, k);
            if (!float.IsNaN(floor))
            {
                for (; r <= n - 8; r += 8)
                {
                    var v = Vector256.LoadUnsafe(ref row, (nuint)r);
                    var keep = count == k ? Vector256.GreaterThan(v, Vector256.Create(list.Score(k - 1))) : Vector256.GreaterThanOrEqual(v, Vector256.Create(floor));
                    for (uint bits = keep.ExtractMostSignificantBits(); bits != 0; bits &= bits - 1)
                    {
                        int c = r + BitOperations.TrailingZeroCount(bits);
                        count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, c), c);
                    }
                }
                for (; r < n; r++)
                    if (Unsafe.Add(ref row, r) >= floor) count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, r), r);
                return;
            }
        }
        for (; r < k; r++) count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, r), r);
        for (; r <= n - 8; r += 8)
        {
            uint above = Vector256.GreaterThan(Vector256.LoadUnsafe(ref row, (nuint)r), Vector256.Create(list.Score(k - 1))).ExtractMostSignificantBits();
            for (; above != 0; above &= above - 1)
            {
                int c = r + BitOperations.TrailingZeroCount(above);
                count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, c), c);
            }
        }
        for (; r < n; r++) count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, r), r);
    }

    // The floor of TopK over row[0 .. n) (n >= 16, k <= 8): at least k columns score at or above it; NaN if a score is NaN.
    static float Floor(ref float row, int n, int k)
    {
        var max = Vector256.LoadUnsafe(ref row);
        var nan = ~Vector256.Equals(max, max);
        for (int r = 8; r <= n - 8; r += 8)
        {
            var v = Vector256.LoadUnsafe(ref row, (nuint)r);
            nan |= ~Vector256.Equals(v, v);
            max = Vector256.Max(max, v);
        }
        for (int r = n & ~7; r < n; r++)
            if (float.IsNaN(Unsafe.Add(ref row, r))) return float.NaN;
        if (nan != Vector256<float>.Zero) return float.NaN;
        int g = k <= 1 ? 1 : k <= 2 ? 2 : k <= 4 ? 4 : 8;
        float floor = float.NegativeInfinity;
        for (int j = 0; j < 8; j += g)
        {
            float least = max[j];
            for (int m = 1; m < g; m++) least = Math.Min(least, max[j + m]);
            floor = Math.Max(floor, least);
        }
        return floor;
    }

    /// <summary>Items <c>[from, to)</c> of a chunk's selection (see ProductKeyKernels.SelectKernel). N &gt; 0, 1 &lt;= K &lt;= 64.</summary>
    [External("peer_product_key_select_cpu")]
    public static void Select(RetrievalShape s, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> indices, ArrayView<float> scores,
        int start, int from, int to)
    {
        float* v1 = stackalloc float[Ops.ProductKeyMaxTopK], v2 = stackalloc float[Ops.ProductKeyMaxTopK], vf = stackalloc float[Ops.ProductKeyMaxTopK];
        int* i1 = stackalloc int[Ops.ProductKeyMaxTopK], i2 = stackalloc int[Ops.ProductKeyMaxTopK], idf = stackalloc int[Ops.ProductKeyMaxTopK];
        var (l1, l2, lf) = (new StackList(v1, i1), new StackList(v2, i2), new StackList(vf, idf));
        ref float a0 = ref s1[0], b0 = ref s2[0], sc0 = ref scores[0];
        ref int ix0 = ref indices[0];
        int n = s.N, k = s.K;
        for (int item = from; item < to; item++)
        {
            TopK(ref Unsafe.Add(ref a0, (nint)item * n), n, k, l1);
            TopK(ref Unsafe.Add(ref b0, (nint)item * n), n, k, l2);
            int count = 0;
            for (int a = 0; a < k; a++)
            {
                if (count == k && v1[a] + v2[0] < vf[k - 1]) break;
                for (int b = 0; b < k; b++)
                {
                    float sum = v1[a] + v2[b];
                    if (count == k && sum < vf[k - 1]) break;
                    count = TopKList.Insert(lf, count, k, sum, i1[a] * n + i2[b]);
                }
            }
            nint outOff = (nint)(start + item) * k;
            for (int m = 0; m < k; m++)
            {
                Unsafe.Add(ref ix0, outOff + m) = idf[m];
                Unsafe.Add(ref sc0, outOff + m) = vf[m];
            }
        }
    }
}
