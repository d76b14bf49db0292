// Switching experts off in product-key retrieval (editing a trained PEER or PKM layer): a disabled expert is never
// retrieved, and each head takes the k best of the enabled experts instead, exactly. The selection is that of
// ProductKeyTopK.cs (the portable one-thread-per-item kernel, or on GPUs the grouped one of Gpu/ProductKeyTopKGpu.cs) with
// longer sub-key lists and a mask test on every candidate; it is only loaded when a mask is set, so unmasked retrieval
// (and its CPU body) is untouched.
//
// Why the longer lists make it exact. Let D_col be the most disabled experts in any one column c (experts r*n + c, r
// varying) and D_row the most in any one row; keep the top k1 = min(n, k + D_col) sub-keys of the first half and the top
// k2 = min(n, k + D_row) of the second. Take an enabled expert e = (r, c) among the k best enabled experts, ordered as
// everywhere by (score desc, index asc) with score(r, c) = s1[r] + s2[c]. Suppose r is not among the k1 kept rows; then
// k1 < n, and each kept row r' ranks before r in s1 (s1[r'] > s1[r], or equal with r' < r), so (r', c) ranks before
// (r, c): a larger score, or an equal one with the smaller index r'*n + c (with real-number sums; as for unmasked
// retrieval, rounding can only turn an order into a tie, which the index then decides). These k1 experts share column c,
// so at most D_col of them are disabled and at least k1 - D_col >= k enabled experts rank before e, which contradicts
// e being among the k best enabled. The same argument with columns and D_row shows c is among the k2 kept columns. So
// all k best enabled experts are candidates, and scanning the k1 * k2 candidates, skipping disabled ones, finds them.
// D_row, D_col <= D (the number disabled), so k + D always suffices; the per-line maxima are usually far smaller.
// Whatever the scores (NaN included), the k1 * k2 candidates hold at least k enabled experts: with k1 = k + D_col each
// kept column has at least k enabled among the kept rows; with k1 = n and k2 = k + D_row each row has k enabled among the
// kept columns; with both n every expert is a candidate, and at least k are enabled (ExpertMask.CheckTopK).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>
/// A set of disabled experts of a product-key layer with <c>n</c> sub-keys per table (<c>N = n²</c> experts, expert
/// <c>r n + c</c>): retrieval with the mask returns, per head, the k best <em>enabled</em> experts (see
/// <see cref="Ops.ProductKeyTopK"/>). Immutable; holds its flags on the device.
/// </summary>
public sealed class ExpertMask : IDisposable
{
    readonly Tensor flags; // I32 [N]: 1 where disabled
    readonly int[] disabled;

    /// <summary>Sub-keys per table n.</summary>
    public int SubKeys { get; }
    /// <summary>Experts N = n².</summary>
    public int Experts => SubKeys * SubKeys;
    /// <summary>The disabled experts, distinct and ascending.</summary>
    public IReadOnlyList<int> Disabled => disabled;
    /// <summary>The most disabled experts in one row (experts <c>r n + c</c> of one r).</summary>
    public int MaxPerRow { get; }
    /// <summary>The most disabled experts in one column (experts <c>r n + c</c> of one c).</summary>
    public int MaxPerColumn { get; }

    /// <summary>Disables <paramref name="disabled"/> (duplicates allowed) among the <c>n²</c> experts of <paramref name="subKeys"/> = n.</summary>
    /// <exception cref="ArgumentException">n is not positive, n² overflows, or an expert id is outside [0, n²).</exception>
    public ExpertMask(Device device, int subKeys, IEnumerable<int> disabled)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(disabled);
        Check.That(subKeys >= 1 && (long)subKeys * subKeys <= int.MaxValue, nameof(subKeys), subKeys, "n >= 1 with n² experts indexable by int32");
        SubKeys = subKeys;
        var ids = disabled.Distinct().Order().ToArray();
        foreach (int i in ids) Check.That(i >= 0 && i < Experts, nameof(disabled), i, $"an expert id in [0, {Experts})");
        this.disabled = ids;
        MaxPerRow = ids.Length == 0 ? 0 : ids.GroupBy(i => i / subKeys).Max(g => g.Count());
        MaxPerColumn = ids.Length == 0 ? 0 : ids.GroupBy(i => i % subKeys).Max(g => g.Count());
        var host = new int[Experts];
        foreach (int i in ids) host[i] = 1;
        flags = Scope.Unscope(Tensor.FromArray(device, host, Experts));
    }

    /// <summary>Whether expert <paramref name="expert"/> is disabled.</summary>
    public bool IsDisabled(int expert) => Array.BinarySearch(disabled, expert) >= 0;

    /// <summary>The device holding the flags.</summary>
    public Device Device => flags.Device;

    /// <summary>Sub-keys kept per half for top-<paramref name="k"/> retrieval under this mask: (first half, second half).</summary>
    public (int K1, int K2) ListLengths(int k) => (Math.Min(SubKeys, k + MaxPerColumn), Math.Min(SubKeys, k + MaxPerRow));

    internal Tensor Flags => flags;

    /// <summary>Checks that top-<paramref name="k"/> retrieval can run under this mask and returns the sub-key list lengths.</summary>
    /// <exception cref="ArgumentException">Fewer than k experts are enabled, or more are disabled in one row or column than the
    /// selection's lists (<see cref="Ops.ProductKeyMaxTopK"/>) can hold beside k.</exception>
    public (int K1, int K2) CheckTopK(int k)
    {
        Check.That(Experts - Disabled.Count >= k, "disabled", $"{Disabled.Count} of {Experts} experts disabled", $"at least k = {k} enabled experts");
        var (k1, k2) = ListLengths(k);
        Check.That(k1 <= Ops.ProductKeyMaxTopK && k2 <= Ops.ProductKeyMaxTopK, "disabled",
            $"up to {MaxPerColumn} disabled experts in one column and {MaxPerRow} in one row",
            $"k + the most disabled in one row or column <= {Ops.ProductKeyMaxTopK} (the selection's sub-key lists; k = {k})");
        return (k1, k2);
    }

    /// <inheritdoc />
    public void Dispose() => flags.Dispose();
}

public static partial class Ops
{
    // Checks a mask against a retrieval of n sub-keys and k kept, before any launch.
    static (int K1, int K2) CheckMask(ExpertMask mask, Tensor q, int n, int k)
    {
        Check.That(ReferenceEquals(mask.Device, q.Device), nameof(mask), mask.Device.Name, $"a mask on the query's device '{q.Device.Name}'");
        Check.That(!mask.Flags.IsDisposed, nameof(mask), "a disposed mask", "a live mask");
        Check.That(mask.SubKeys == n, nameof(mask), $"a mask of {mask.SubKeys}² experts", $"a mask of the layer's {n}² experts");
        return mask.CheckTopK(k);
    }
}

/// <summary>Which experts a selection may return: <see cref="AllExperts"/> or <see cref="EnabledExperts"/>.</summary>
internal interface IExpertFilter
{
    bool Enabled(int expert);
}

/// <summary>Every expert (unmasked retrieval).</summary>
internal readonly struct AllExperts : IExpertFilter
{
    public bool Enabled(int expert) => true;
}

/// <summary>The experts whose flag in an <see cref="ExpertMask"/>'s view is 0.</summary>
internal readonly struct EnabledExperts(ArrayView<int> disabled) : IExpertFilter
{
    readonly ArrayView<int> disabled = disabled;

    public bool Enabled(int expert) => disabled[expert] == 0;
}

/// <summary>The masked selection: on GPUs whose groups hold <see cref="ProductKeyTopKGpu.GroupSize"/> threads the grouped kernel
/// (Gpu/ProductKeyTopKGpu.cs, its lists in shared memory), elsewhere one item per thread (its lists in local memory; the fastest
/// on the CPU accelerator, whose threads each run a chunk of items).</summary>
internal sealed class ProductKeyMaskKernels
{
    readonly Action<Index1D, Work, SelectionShape, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int>? select;
    readonly ProductKeyTopKGpu? grouped;

    public ProductKeyMaskKernels(Device d) : this(d, ProductKeyKernels.GroupSizeFor(d)) { }

    /// <summary>The kernels with the selection grouped in groups of <paramref name="groupSize"/> threads (a power of two), or one item per
    /// thread with 0; tests run the grouped kernel on CPU devices.</summary>
    internal ProductKeyMaskKernels(Device d, int groupSize)
    {
        if (groupSize > 0) grouped = new ProductKeyTopKGpu(d, groupSize, masked: true);
        else select = d.LoadKernel(SelectMaskedKernel);
    }

    /// <summary>The k best enabled experts (flag 0 in <paramref name="disabled"/>) over <paramref name="rows"/> (token, head) items of a
    /// chunk starting at row <paramref name="start"/>.</summary>
    public void RunSelect(Device d, SelectionShape s, int rows, ArrayView<float> s1, ArrayView<float> s2, ArrayView<int> disabled,
        ArrayView<int> indices, ArrayView<float> scores, int start)
    {
        if (grouped is not null) grouped.SelectMasked(s, rows, s1, s2, disabled, indices, scores, start);
        else
        {
            var w = d.Split(rows);
            select!(w.Workers, w, s, s1, s2, disabled, indices, scores, start);
        }
    }

    // s1, s2: [rows, n] sub-key scores of chunk rows start.., disabled: [N] (1 = off) -> indices, scores: [T, h, k] at those
    // rows; one work item per (token, head). ProductKeyKernels' selection with lists of k1 and k2 sub-keys and the disabled
    // candidates skipped (why that is exact: the comment at the top of this file).
    static void SelectMaskedKernel(Index1D w, Work work, SelectionShape s, ArrayView<float> s1, ArrayView<float> s2,
        ArrayView<int> disabled, ArrayView<int> indices, ArrayView<float> scores, int start) =>
        ProductKeyKernels.SelectItems(w, work, s, s1, s2, new EnabledExperts(disabled), indices, scores, start);
}
