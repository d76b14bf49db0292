// The types the sort-and-segment reduction (SortSegment.cs) hands out and takes: its sorted segments, where a pair's
// contribution comes from, and how its passes are cut into work items.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>
/// Sorted pairs cut into segments of equal key (from <see cref="SortSegment.Run"/>); owns its tensors. Sized by the bound
/// B = min(P, limit) known on the host, not by the segment count R (which would take a read back from the device): segments
/// R .. B-1 are padding, with row <see cref="RowSparseGrad.NoRow"/> and no pairs, so their sums are zero rows.
/// </summary>
internal sealed class SortedSegments(int first, Tensor keys, Tensor order, Tensor rows, Tensor starts, Tensor count) : IDisposable
{
    /// <summary>How many pairs came from the first key set (the older gradient's rows), n1.</summary>
    public int First { get; } = first;
    /// <summary>Keys in sorted order, I32 [P]; dropped keys (outside the limit) read <see cref="int.MaxValue"/> and come last.</summary>
    public Tensor Keys { get; } = keys;
    /// <summary>The pair index at each sorted position, I32 [P], ascending within equal keys.</summary>
    public Tensor Order { get; } = order;
    /// <summary>The distinct kept keys, ascending, then <see cref="RowSparseGrad.NoRow"/> for the padding: I32 [B].</summary>
    public Tensor Rows { get; } = rows;
    /// <summary>Segment bounds, I32 [B + 1]: segment s covers sorted positions <c>Starts[s] .. Starts[s+1]-1</c>; from
    /// <c>Starts[R]</c> on (the first dropped position, or P) every entry repeats it, so padding segments are empty.</summary>
    public Tensor Starts { get; } = starts;
    /// <summary>The number of segments R (distinct kept keys), I32 [1], on the device only: a host that needs it reads it
    /// explicitly (a synchronisation on an asynchronous device).</summary>
    public Tensor Count { get; } = count;

    public void Dispose()
    {
        Keys.Dispose();
        Order.Dispose();
        Rows.Dispose();
        Starts.Dispose();
        Count.Dispose();
    }
}

/// <summary>
/// Where pair p's contribution to a segment sum comes from: for p &lt; <c>First</c>, row p of the <c>first</c> matrix
/// (<c>[First, Cols]</c>, weight 1); after it, with o = p - First, <c>coef[o] * src[(o / Div) * Stride + Offset + c]</c>
/// (<c>coef</c> read only when <c>HasCoef</c> is 1, else 1). Each work item sums columns <c>ColBlock</c> at a time.
/// </summary>
internal readonly struct SegmentSource(int first, int div, int stride, int offset, int cols, int colBlock, int hasCoef)
{
    public readonly int First = first, Div = div, Stride = stride, Offset = offset, Cols = cols, ColBlock = colBlock, HasCoef = hasCoef;
}

/// <summary>
/// How the passes are cut into work items. Chunked devices (the CPU accelerator, OpenCL on the CPU): one contiguous range per
/// worker in every pass, whole rows per segment sum. GPUs: merge ranges of about <see cref="MergeGrain"/> outputs, head blocks of
/// <see cref="BlockLength"/> positions, one column per segment-sum item. Every shape gives the same bits; tests run the GPU
/// shape on the CPU to check it.
/// </summary>
internal readonly record struct SortSegmentShape(int MergeGrain, int BlockLength, bool RowPerItem)
{
    /// <summary>The shape GPUs use.</summary>
    public static readonly SortSegmentShape Gpu = new(8, 32, false);

    /// <summary>The shape for <paramref name="d"/> (block length 0: one block per worker).</summary>
    public static SortSegmentShape For(Device d) => d.ChunksWork ? new(1, 0, true) : Gpu;
}
