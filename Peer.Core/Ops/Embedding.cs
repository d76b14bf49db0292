// Embedding lookup and row-gradient accumulation. The lookup gathers table rows; its gradient touches only
// the rows looked up and is built without atomics by the sort-and-segment reduction (SortSegment.cs): (id, position)
// pairs stably sorted, cut into segments of equal id, each segment's gradient rows summed in position order. The
// result is a RowSparseGrad with distinct sorted rows, the same on every backend and worker count; a dense gradient
// is available for small or shared tables.
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
        int v = table.Shape[0];
        bool asSparse = sparse && table.IsLeaf && table.Grad is null;
        var old = asSparse ? table.SparseGrad : null;
        var merged = RowSparseGradients.Coalesce(old, ids, rowGrads, v);
        if (asSparse)
        {
            old?.Dispose();
            table.SparseGrad = merged;
            return;
        }
        using (merged) Tape.Accumulate(table, RowSparseGradients.ToDense(merged, v));
    }
}

/// <summary>Kernels of the embedding lookup (its gradient is built by SortSegment.cs).</summary>
internal sealed class EmbeddingKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> Gather;

    public EmbeddingKernels(Device d)
    {
        Gather = d.LoadKernel(GatherKernel);
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
}
