// Product-key retrieval (docs/peer-spec.md, steps 2-4): for every token and head, score the two query halves
// against the shared sub-key tables, keep the top-k of each, and take the top-k of the k*k candidate
// sums. Expert i = r*n + c. Ties break toward the smaller index at every stage (TopKList.Better), which makes the
// result exactly the brute-force top-k over all N = n*n full keys (see the argument above SelectKernel). The sub-key
// scores are computed by the device's matmul; a selection kernel does the rest (on the CPU accelerator the launcher
// loads its plain-C# body, Cpu/ProductKeyTopKCpu.cs, which gives identical results, when the machine has 256-bit vectors).
// Backward: dense gradient of the query, row-sparse gradients of the retrieved sub-key rows only.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>The largest <c>k</c> <see cref="ProductKeyTopK"/> accepts (its per-item top-k lists live in fixed local arrays).</summary>
    public const int ProductKeyMaxTopK = 64;

    /// <summary>
    /// Product-key top-k. For token t and head j, with <c>a = q[t, j*dq : j*dq + dq/2]</c> and <c>b = q[t, j*dq + dq/2 : (j+1)*dq]</c>:
    /// <c>score(r*n + c) = a . sub1[r] + b . sub2[c]</c>; returns the k best experts per (t, j) in descending score order
    /// (ties toward the smaller expert index) as <c>Indices</c> I32 [T, h, k] and their <c>Scores</c> F32 [T, h, k].
    /// Scores are differentiable with respect to <paramref name="q"/> (dense gradient) and the sub-key tables
    /// (a <see cref="RowSparseGrad"/> holding only the retrieved rows, accumulated into <see cref="Tensor.SparseGrad"/>).
    /// </summary>
    /// <param name="q">Queries F32 [T, h*dq].</param>
    /// <param name="sub1">First sub-key table F32 [n, dq/2], shared by all heads.</param>
    /// <param name="sub2">Second sub-key table F32 [n, dq/2].</param>
    /// <param name="heads">h.</param>
    /// <param name="k">Experts kept per head, 1 &lt;= k &lt;= min(n, <see cref="ProductKeyMaxTopK"/>).</param>
    /// <param name="mask">Experts that may not be retrieved (null: none): each head then keeps the k best enabled experts,
    /// exactly (ProductKeyMask.cs gives the argument).</param>
    /// <exception cref="ArgumentException">Wrong dtypes, shapes that disagree, an odd query size, k out of range, or a mask of
    /// another size or device, with fewer than k enabled experts, or with more disabled experts in one row or column than the
    /// selection's lists can hold.</exception>
    public static (Tensor Indices, Tensor Scores) ProductKeyTopK(Tensor q, Tensor sub1, Tensor sub2, int heads, int k, ExpertMask? mask = null)
    {
        Check.DType(q, DType.F32, nameof(q));
        Check.DType(sub1, DType.F32, nameof(sub1));
        Check.DType(sub2, DType.F32, nameof(sub2));
        Check.SameDevice(q, sub1, nameof(sub1));
        Check.SameDevice(q, sub2, nameof(sub2));
        Check.Rank(q, 2, nameof(q));
        Check.Rank(sub1, 2, nameof(sub1));
        Check.Positive(heads, nameof(heads));
        Check.That(q.Shape[1] % heads == 0, nameof(q), q.Shape, $"[T, h*dq] with h = {heads} dividing the second dimension");
        int dq = q.Shape[1] / heads, half = dq / 2, n = sub1.Shape[0];
        Check.That(dq % 2 == 0 && dq > 0, nameof(q), q.Shape, $"an even, positive query size dq per head (got dq = {dq})");
        Check.Shape(sub1, nameof(sub1), n, half);
        Check.Shape(sub2, nameof(sub2), n, half);
        Check.That(n > 0 && (long)n * n <= int.MaxValue, nameof(sub1), sub1.Shape, "1 <= n and n*n experts indexable by int32");
        Check.That(k >= 1 && k <= n && k <= ProductKeyMaxTopK, nameof(k), k, $"1 <= k <= min(n = {n}, {ProductKeyMaxTopK})");
        var lists = mask is null ? default : CheckMask(mask, q, n, k);

        var d = q.Device;
        int t = q.Shape[0];
        var indices = Tensor.Empty(d, DType.I32, t, heads, k);
        var scores = Tensor.Empty(d, DType.F32, t, heads, k);
        var shape = new RetrievalShape(heads, dq, n, k);
        var kernels = d.Get(static d => new ProductKeyKernels(d));
        if (t > 0) Retrieve(q, sub1, sub2, shape, indices, scores, kernels, mask, lists);

        if (d.Tape.Needs(q, sub1, sub2))
        {
            var savedIdx = indices.Detach();
            d.Tape.Record(scores, [q, sub1, sub2], dS =>
            {
                if (q.RequiresGrad)
                {
                    var dq_ = Tensor.Empty(d, DType.F32, q.Shape);
                    if (t > 0)
                    {
                        var w = d.Split(t * heads);
                        kernels.BackwardQuery(w.Workers, w, shape, dS.View, savedIdx.IntView, sub1.View, sub2.View, dq_.View);
                    }
                    Tape.Accumulate(q, dq_);
                }
                if (sub1.RequiresGrad || sub2.RequiresGrad)
                {
                    // Pair p = (t*h + j)*k + m reads query half rows (p / k) of q viewed as [T*h, dq].
                    int p = savedIdx.Length;
                    using var rows1 = Tensor.Empty(d, DType.I32, p);
                    using var rows2 = Tensor.Empty(d, DType.I32, p);
                    if (p > 0)
                    {
                        var w = d.Split(p);
                        kernels.SplitIndices(w.Workers, w, savedIdx.IntView, rows1.IntView, rows2.IntView, n);
                    }
                    if (sub1.RequiresGrad) RowSparseGradients.Accumulate(sub1, RowSparseGradients.Build(rows1, n, half, (dS, q, k, dq, 0))[0]);
                    if (sub2.RequiresGrad) RowSparseGradients.Accumulate(sub2, RowSparseGradients.Build(rows2, n, half, (dS, q, k, dq, half))[0]);
                }
            }, savedIdx);
        }
        return (indices, scores);
    }
}

public static partial class Ops
{
    // The sub-key scores are two matrix products, qa [rows, dq/2] @ sub1^T and qb @ sub2^T, so they run on the device's
    // matmul (SIMD on the CPU accelerator, tiled on GPUs): at n = 1024 they are ~90% of retrieval's FLOPs. The selection
    // kernel then reads the [rows, n] score blocks. Rows (token, head) go in chunks so a block stays near 16 MB per table
    // whatever T is.
    static void Retrieve(Tensor q, Tensor sub1, Tensor sub2, RetrievalShape shape, Tensor indices, Tensor scores, ProductKeyKernels kernels,
        ExpertMask? mask, (int K1, int K2) lists)
    {
        var d = q.Device;
        int rows = q.Shape[0] * shape.Heads;
        int chunk = Math.Max(1, Math.Min(rows, (1 << 22) / shape.N));
        using var ng = d.Tape.NoGrad();
        using var scope = Scope.Begin();
        using var k1 = sub1.Detach();
        using var k2 = sub2.Detach();
        for (int start = 0; start < rows; start += chunk)
        {
            int r = Math.Min(chunk, rows - start);
            using var qa = Tensor.Empty(d, DType.F32, r, shape.Half);
            using var qb = Tensor.Empty(d, DType.F32, r, shape.Half);
            var w = d.Split(r);
            kernels.SplitHalves(w.Workers, w, shape, q.View, qa.View, qb.View, start);
            using var s1 = MatMul(qa, k1, false, true); // [r, n]
            using var s2 = MatMul(qb, k2, false, true);
            if (mask is null) kernels.RunSelect(d, shape, r, s1.View, s2.View, indices.IntView, scores.View, start);
            else d.Get(static d => new ProductKeyMaskKernels(d)).RunSelect(d, new SelectionShape(shape, lists.K1, lists.K2), r,
                s1.View, s2.View, mask.Flags.IntView, indices.IntView, scores.View, start);
        }
    }
}

/// <summary>Sizes of one retrieval: h heads, query size dq per head, n sub-keys per table, k kept.</summary>
internal readonly struct RetrievalShape(int heads, int dq, int n, int k)
{
    public readonly int Heads = heads, Dq = dq, Half = dq / 2, N = n, K = k;
}

/// <summary>Sizes of a selection: n sub-keys per table, k kept, and the sub-key lists' lengths k1, k2 (k without a mask; at least k
/// with one, ProductKeyMask.cs).</summary>
internal readonly struct SelectionShape(RetrievalShape s, int k1, int k2)
{
    public readonly int N = s.N, K = s.K, K1 = k1, K2 = k2;
}

/// <summary>Kernels of product-key retrieval: the portable kernels below, the halves' copy, the selection and the query's
/// gradient being the CPU bodies' kernels (Cpu/ProductKeyTopKCpu.cs) where <see cref="Device.Choose"/> picks them, and on GPUs
/// the grouped selection of Gpu/ProductKeyTopKGpu.cs (a group of threads per item, its state in shared memory, instead of one
/// thread with 1.5 KB of local lists).</summary>
internal sealed class ProductKeyKernels
{
    public readonly Action<Index1D, Work, RetrievalShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> SplitHalves;
    readonly Action<Index1D, Work, RetrievalShape, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>? select;
    readonly ProductKeyTopKGpu? grouped;
    public readonly Action<Index1D, Work, RetrievalShape, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BackwardQuery;
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>, ArrayView<int>, int> SplitIndices;

    /// <summary>The kernels for <paramref name="d"/>: the grouped selection on GPUs whose groups hold <see cref="ProductKeyTopKGpu.GroupSize"/>
    /// threads, one item per thread elsewhere.</summary>
    public ProductKeyKernels(Device d) : this(d, GroupSizeFor(d)) { }

    /// <summary>The selection's group size on <paramref name="d"/>: <see cref="ProductKeyTopKGpu.GroupSize"/> on GPUs whose groups hold
    /// that many threads, 0 (one item per thread) on devices that run kernels over CPU cores.</summary>
    internal static int GroupSizeFor(Device d) => !d.ChunksWork && d.MaxGroupSize >= ProductKeyTopKGpu.GroupSize ? ProductKeyTopKGpu.GroupSize : 0;

    /// <summary>The kernels with the selection grouped in groups of <paramref name="groupSize"/> threads (a power of two), or one item per
    /// thread with 0; tests run the grouped kernel on CPU devices.</summary>
    internal ProductKeyKernels(Device d, int groupSize)
    {
        // The halves' copy is plain C#: it needs no vector unit; the selection's scan and the query's gradient use 256-bit vectors.
        SplitHalves = d.LoadKernel(SplitHalvesKernel, ProductKeyTopKCpu.SplitHalvesKernel, 0);
        if (groupSize > 0) grouped = new ProductKeyTopKGpu(d, groupSize);
        else select = d.LoadKernel(SelectKernel, ProductKeyTopKCpu.SelectKernel, 256);
        BackwardQuery = d.LoadKernel(BackwardQueryKernel, ProductKeyTopKCpu.BackwardQueryKernel, 256);
        SplitIndices = d.LoadKernel(SplitIndicesKernel);
    }

    /// <summary>The selection over <paramref name="rows"/> (token, head) items of a chunk starting at row <paramref name="start"/>.</summary>
    public void RunSelect(Device d, RetrievalShape s, int rows, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> indices, ArrayView<float> scores, int start)
    {
        if (grouped is not null) grouped.Select(s, rows, s1, s2, indices, scores, start);
        else
        {
            var w = d.Split(rows);
            select!(w.Workers, w, s, s1, s2, indices, scores, start);
        }
    }

    // scores[off .. off+n) -> the len best (score, column) in list, scanning columns in ascending order
    static void TopKScores(ArrayView<float> sc, int off, int n, int len, ViewTopKList list)
    {
        int count = 0;
        for (int r = 0; r < n; r++) count = TopKList.Insert(list, count, len, sc[off + r], r);
    }

    // q: [T*h, dq] (rows start.. of a chunk) -> qa, qb: [rows, dq/2], the two halves of each head's query, contiguous for the matmul
    static void SplitHalvesKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> q, ArrayView<float> qa, ArrayView<float> qb, int start)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++)
            {
                int from = (start + r) * s.Dq, to = r * s.Half;
                for (int p = 0; p < s.Half; p++)
                {
                    qa[to + p] = q[from + p];
                    qb[to + p] = q[from + s.Half + p];
                }
            }
    }

    // s1, s2: [rows, n] sub-key scores of chunk rows (token*h + head) start.. -> indices, scores: [T, h, k] at those rows;
    // one work item per (token, head). Order used everywhere: (score desc, index asc), TopKList.Better. Why the two-stage
    // search is exact, ties included: if (r, c) is in the brute-force top-k but r is not among the k best rows of s1, each
    // of those k rows r' has s1[r'] > s1[r], or equal with r' < r; then (r', c) scores >= (rounding is monotone), and when
    // equal has the smaller index r'*n + c. So k candidates precede (r, c): a contradiction. The same holds for c with
    // (r, c'), c' < c giving the smaller index.
    static void SelectKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> s1, ArrayView<float> s2,
        ArrayView<int> indices, ArrayView<float> scores, int start) =>
        SelectItems(w, work, new SelectionShape(s, s.K, s.K), s1, s2, new AllExperts(), indices, scores, start);

    // The selection of SelectKernel with sub-key lists of k1 and k2 entries, keeping the k best candidates that filter lets
    // through (the masked selection of ProductKeyMask.cs; with k1 = k2 = k and every expert, SelectKernel itself).
    internal static void SelectItems<TFilter>(Index1D w, Work work, SelectionShape s, ArrayView<float> s1, ArrayView<float> s2, TFilter filter,
        ArrayView<int> indices, ArrayView<float> scores, int start) where TFilter : struct, IExpertFilter
    {
        var v1 = LocalMemory.Allocate<float>(Ops.ProductKeyMaxTopK);
        var i1 = LocalMemory.Allocate<int>(Ops.ProductKeyMaxTopK);
        var v2 = LocalMemory.Allocate<float>(Ops.ProductKeyMaxTopK);
        var i2 = LocalMemory.Allocate<int>(Ops.ProductKeyMaxTopK);
        var vf = LocalMemory.Allocate<float>(Ops.ProductKeyMaxTopK);
        var idf = LocalMemory.Allocate<int>(Ops.ProductKeyMaxTopK);
        var (l1, l2, lf) = (new ViewTopKList(v1, i1), new ViewTopKList(v2, i2), new ViewTopKList(vf, idf));
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int item = st, e = work.End(st); item < e; item++)
            {
                TopKScores(s1, item * s.N, s.N, s.K1, l1);
                TopKScores(s2, item * s.N, s.N, s.K2, l2);
                int count = 0;
                for (int a = 0; a < s.K1; a++)
                {
                    // Both lists descend, so once a sum is strictly below the k-th kept score no later one can enter.
                    if (count == s.K && v1[a] + v2[0] < vf[s.K - 1]) break;
                    for (int b = 0; b < s.K2; b++)
                    {
                        float sum = v1[a] + v2[b];
                        if (count == s.K && sum < vf[s.K - 1]) break;
                        int expert = i1[a] * s.N + i2[b];
                        if (filter.Enabled(expert)) count = TopKList.Insert(lf, count, s.K, sum, expert);
                    }
                }
                int outOff = (start + item) * s.K;
                for (int m = 0; m < s.K; m++)
                {
                    indices[outOff + m] = idf[m];
                    scores[outOff + m] = vf[m];
                }
            }
    }

    // dS: [T, h, k], indices: [T, h, k], sub1, sub2: [n, dq/2] -> dq: [T, h*dq]; one work item per (token, head)
    static void BackwardQueryKernel(Index1D w, Work work, RetrievalShape s, ArrayView<float> dS, ArrayView<int> indices,
        ArrayView<float> sub1, ArrayView<float> sub2, ArrayView<float> dq)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int item = st, e = work.End(st); item < e; item++)
            {
                int qOff = item * s.Dq; // (t*h + j)*dq
                for (int p = 0; p < s.Dq; p++) dq[qOff + p] = 0f;
                for (int m = 0; m < s.K; m++)
                {
                    float g = dS[item * s.K + m];
                    int i = indices[item * s.K + m];
                    int r = i / s.N, c = i - r * s.N;
                    for (int p = 0; p < s.Half; p++)
                    {
                        dq[qOff + p] += g * sub1[r * s.Half + p];
                        dq[qOff + s.Half + p] += g * sub2[c * s.Half + p];
                    }
                }
            }
    }

    // indices: [P] expert ids -> rows1: [P] = i / n (sub1 row), rows2: [P] = i % n (sub2 row)
    static void SplitIndicesKernel(Index1D w, Work work, ArrayView<int> indices, ArrayView<int> rows1, ArrayView<int> rows2, int n)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int p = st, e = work.End(st); p < e; p++)
            {
                int i = indices[p], r = i / n;
                rows1[p] = r;
                rows2[p] = i - r * n;
            }
    }
}
