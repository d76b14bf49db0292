// The CPU accelerator's body for product-key retrieval's selection (the top-k of each sub-key score row, then the top-k
// of the k*k candidate sums), reached through [External] so that the insertion lists live in stack memory and the score
// rows are read through plain references. Measured reason: once the fused experts had SIMD bodies, retrieval was the
// PEER layer's largest CPU cost, mostly the selection's insertion lists in local-memory views (~26 -> ~4.5 ms at the
// tiny preset's PEER shapes). Same algorithm, comparisons and insertion order as the portable SelectKernel in
// ProductKeyTopK.cs (the definition), both through TopKList.Insert, so the results are identical.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Plain-C# product-key selection over CPU memory and the kernel that calls it, which <see cref="ProductKeyKernels"/>
/// loads in place of its portable selection kernel on the CPU accelerator (the body cannot compile for GPUs).</summary>
internal static unsafe class ProductKeyTopKCpu
{
    // s1, s2: [rows, n] sub-key scores of chunk rows start.. -> indices, scores: [T, h, k] at those rows; one index per
    // worker, whose chunks of (token, head) items the body processes
    internal static void SelectKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> s1, ArrayView<float> s2,
        ArrayView<int> indices, ArrayView<float> scores, int start)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Select(s, s1, s2, indices, scores, start, st, work.End(st));
    }

    // A top-k list in stack memory.
    readonly struct StackList(float* scores, int* ids) : ITopKList
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

    // row[0 .. n) -> the k best (score, column) in list, scanning columns in ascending order
    static void TopK(ref float row, int n, int k, StackList list)
    {
        int count = 0;
        for (int r = 0; r < n; r++) count = TopKList.Insert(list, count, k, Unsafe.Add(ref row, r), r);
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
