// Product-key selection shaped for GPUs: a group of threads per (token, head) instead of one thread holding six
// 64-entry top-k lists (1.5 KB of local memory per thread in the definitions, ProductKeyTopK.cs and, with experts
// switched off, ProductKeyMask.cs). Each of the k picks of a stage is a group argmax: every thread scans a strided share
// of the candidates for the best one ranked after the previous pick, and the group reduces those in shared memory. The
// order is the definitions' (score descending, then id ascending, TopKList.Better), so for scores without NaN the result
// is the definition's, bit for bit (same sums, same comparisons; candidate ids are distinct, so "the best after the
// previous pick" walks the same order an insertion list keeps); NaN, which the definitions place wherever insertion leaves
// it, ranks here after every number (ids are in [0, n*n) either way). With a mask the sub-key lists hold k1, k2 entries
// and a disabled candidate is never picked; k enabled candidates always exist (ProductKeyMask.cs), so every pick finds
// one. Per thread a few registers; per group two lists of at most 64 entries and one word pair per thread of shared memory.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>The grouped selection kernel for GPUs (<see cref="ProductKeyKernels"/> chooses it where groups hold <see cref="GroupSize"/> threads).</summary>
internal sealed class ProductKeyTopKGpu
{
    /// <summary>Threads per group on GPUs: two warps, a strided share of n = 1024 sub-keys being 16 columns each.</summary>
    public const int GroupSize = 64;
    /// <summary>The largest group the kernel's shared memory holds.</summary>
    public const int MaxGroupSize = 256;

    readonly int groupSize;
    readonly Action<KernelConfig, RetrievalShape, int, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>? select;
    readonly Action<KernelConfig, SelectionShape, int, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int>? selectMasked;

    /// <summary>Loads the selection over every expert, or with <paramref name="masked"/> the one that skips disabled experts.</summary>
    public ProductKeyTopKGpu(Device d, int groupSize, bool masked = false)
    {
        Check.That(groupSize > 0 && (groupSize & (groupSize - 1)) == 0 && groupSize <= MaxGroupSize && groupSize <= d.MaxGroupSize, nameof(groupSize), groupSize,
            $"a power of two up to {Math.Min(MaxGroupSize, d.MaxGroupSize)} (this device's largest group, and the kernel's shared memory)");
        this.groupSize = groupSize;
        if (masked) selectMasked = d.LoadGroupedKernel<Action<KernelConfig, SelectionShape, int, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int>>(SelectMaskedKernel);
        else select = d.LoadGroupedKernel<Action<KernelConfig, RetrievalShape, int, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>>(SelectKernel);
    }

    /// <summary>As <see cref="ProductKeyKernels"/>' selection over <paramref name="rows"/> (token, head) items from row <paramref name="start"/>.</summary>
    public void Select(RetrievalShape s, int rows, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> indices, ArrayView<float> scores, int start) =>
        select!(new KernelConfig(rows, groupSize), s, rows, s1, s2, indices, scores, start);

    /// <summary>As <see cref="ProductKeyMaskKernels"/>' selection: the k best experts whose flag in <paramref name="disabled"/> is 0.</summary>
    public void SelectMasked(SelectionShape s, int rows, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> disabled, ArrayView<int> indices,
        ArrayView<float> scores, int start) =>
        selectMasked!(new KernelConfig(rows, groupSize), s, rows, s1, s2, disabled, indices, scores, start);

    /// <summary>Whether (s, i) ranks before (s2, i2): <see cref="TopKList.Better"/>, with NaN after every number (two NaNs by id).</summary>
    internal static bool Before(float s, int i, float s2, int i2)
    {
        bool nan = float.IsNaN(s), nan2 = float.IsNaN(s2);
        if (nan || nan2) return nan && nan2 ? i < i2 : nan2;
        return TopKList.Better(s, i, s2, i2);
    }

    // grid (items) x group (G): s1, s2: [rows, n] sub-key scores of chunk rows start.. -> indices, scores: [T, h, k] at those rows
    static void SelectKernel(RetrievalShape s, int items, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> indices, ArrayView<float> scores, int start) =>
        SelectItems(new SelectionShape(s, s.K, s.K), Grid.IdxX, Grid.DimX, items, s1, s2, new AllExperts(), indices, scores, start);

    // As SelectKernel, disabled: [N] (1 = off), with lists of k1 and k2 sub-keys
    static void SelectMaskedKernel(SelectionShape s, int items, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> disabled,
        ArrayView<int> indices, ArrayView<float> scores, int start) =>
        SelectItems(s, Grid.IdxX, Grid.DimX, items, s1, s2, new EnabledExperts(disabled), indices, scores, start);

    // Items first, first + stride, ... below items (the kernels pass their grid position, which is what marks them as explicitly
    // grouped kernels to the kernel inventory of the tests).
    static void SelectItems<TFilter>(SelectionShape s, int first, int stride, int items, ArrayView<float> s1, ArrayView<float> s2, TFilter filter,
        ArrayView<int> indices, ArrayView<float> scores, int start) where TFilter : struct, IExpertFilter
    {
        var v1 = SharedMemory.Allocate<float>(Ops.ProductKeyMaxTopK);
        var i1 = SharedMemory.Allocate<int>(Ops.ProductKeyMaxTopK);
        var v2 = SharedMemory.Allocate<float>(Ops.ProductKeyMaxTopK);
        var i2 = SharedMemory.Allocate<int>(Ops.ProductKeyMaxTopK);
        var bestV = SharedMemory.Allocate<float>(MaxGroupSize);
        var bestI = SharedMemory.Allocate<int>(MaxGroupSize);
        int l = Group.IdxX, size = Group.DimX;
        for (int item = first; item < items; item += stride)
        {
            TopKColumns(s1, item * s.N, s.N, s.K1, v1, i1, bestV, bestI, l, size);
            TopKColumns(s2, item * s.N, s.N, s.K2, v2, i2, bestV, bestI, l, size);
            Group.Barrier(); // both lists visible to every thread
            // The k best enabled of the k1*k2 sums v1[a] + v2[b], expert id i1[a] * n + i2[b].
            float pv = 0f;
            int pi = -1, outOff = (start + item) * s.K;
            for (int m = 0; m < s.K; m++)
            {
                float bv = 0f;
                int bi = -1;
                for (int q = l; q < s.K1 * s.K2; q += size)
                {
                    int a = q / s.K2, b = q - a * s.K2;
                    float sum = v1[a] + v2[b];
                    int id = i1[a] * s.N + i2[b];
                    if ((pi < 0 || Before(pv, pi, sum, id)) && (bi < 0 || Before(sum, id, bv, bi)) && filter.Enabled(id)) { bv = sum; bi = id; }
                }
                GroupBest(bestV, bestI, bv, bi, l, size);
                pv = bestV[0];
                pi = bestI[0];
                if (l == 0)
                {
                    indices[outOff + m] = pi;
                    scores[outOff + m] = pv;
                }
            }
        }
    }

    // sc[off .. off+n) -> the len best (score, column) into v, ids (shared; written by thread 0), one group argmax per pick
    static void TopKColumns(ArrayView<float> sc, int off, int n, int len, ArrayView<float> v, ArrayView<int> ids,
        ArrayView<float> bestV, ArrayView<int> bestI, int l, int size)
    {
        float pv = 0f;
        int pi = -1;
        for (int m = 0; m < len; m++)
        {
            float bv = 0f;
            int bi = -1;
            for (int r = l; r < n; r += size)
            {
                float x = sc[off + r];
                if ((pi < 0 || Before(pv, pi, x, r)) && (bi < 0 || Before(x, r, bv, bi))) { bv = x; bi = r; }
            }
            GroupBest(bestV, bestI, bv, bi, l, size);
            pv = bestV[0];
            pi = bestI[0];
            if (l == 0)
            {
                v[m] = pv;
                ids[m] = pi;
            }
        }
    }

    // The group's best (score, id) of the threads' candidates (id -1: none) into bestV[0], bestI[0], by a tree over a power-of-two
    // group. Starts with a barrier, so that every thread has read the previous result before it is overwritten.
    static void GroupBest(ArrayView<float> bestV, ArrayView<int> bestI, float bv, int bi, int l, int size)
    {
        Group.Barrier();
        bestV[l] = bv;
        bestI[l] = bi;
        Group.Barrier();
        for (int half = size / 2; half > 0; half /= 2)
        {
            if (l < half)
            {
                float ov = bestV[l + half];
                int oi = bestI[l + half];
                if (oi >= 0 && (bestI[l] < 0 || Before(ov, oi, bestV[l], bestI[l])))
                {
                    bestV[l] = ov;
                    bestI[l] = oi;
                }
            }
            Group.Barrier();
        }
    }
}
