// Row-sparse gradients of tables looked up by row (embeddings, PEER experts and sub-keys, PKM values), built with the
// sort-and-segment reduction (SortSegment.cs): the gradient of a lookup, the merge of a new gradient into the one a
// parameter already holds (its rows first, so the sums keep a fixed order), and the dense form for export.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Building, merging and densifying <see cref="RowSparseGrad"/>s.</summary>
internal static class RowSparseGradients
{
    /// <summary>
    /// The row-sparse gradients (padded: see <see cref="RowSparseGrad"/>; nothing is read back from the device) of a table with <paramref name="cols"/> columns from per-pair keys (in [0, <paramref name="limit"/>))
    /// and one or more (coefficient, source) sets sharing one sort: set i gives rows and
    /// <c>values[s] = sum over pairs o of segment s of Coef[o] * Src[(o / Div) * Stride + Offset ..]</c>. Not owned by any scope.
    /// </summary>
    public static RowSparseGrad[] Build(Tensor keys, int limit, int cols, params (Tensor Coef, Tensor Src, int Div, int Stride, int Offset)[] sets)
    {
        using var s = SortSegment.Run(null, keys, limit);
        var result = new RowSparseGrad[sets.Length];
        for (int i = 0; i < sets.Length; i++)
        {
            var (coef, src, div, stride, off) = sets[i];
            var values = Scope.Unscope(SortSegment.Sum(s, null, coef, src, div, stride, off, cols));
            result[i] = new RowSparseGrad(Scope.Unscope(s.Rows.Detach()), values); // rows are never written again: shared, not copied
        }
        return result;
    }

    /// <summary>
    /// Sums rows with equal ids: <paramref name="old"/>'s rows (if any) then <paramref name="values"/> <c>[n, cols]</c> at
    /// <paramref name="ids"/> (n of them), dropping ids outside [0, <paramref name="limit"/>); within a row the terms are added
    /// in that order. The result has distinct ascending rows, padded to min(old rows + n, limit) (<see cref="RowSparseGrad"/>:
    /// old padding rows are dropped like any id outside the table, and nothing is read back from the device), and is not owned
    /// by any scope; takes no ownership of its arguments.
    /// </summary>
    public static RowSparseGrad Coalesce(RowSparseGrad? old, Tensor ids, Tensor values, int limit)
    {
        int cols = values.Shape[1];
        using var s = SortSegment.Run(old?.Rows, ids, limit);
        var sums = Scope.Unscope(SortSegment.Sum(s, old?.Values, null, values, 1, cols, 0, cols));
        return new RowSparseGrad(Scope.Unscope(s.Rows.Detach()), sums);
    }

    /// <summary>Adds <paramref name="g"/> into <paramref name="target"/>'s <see cref="Tensor.SparseGrad"/> (taking ownership of it);
    /// one already there is merged by <see cref="Coalesce"/> (its rows first), so the result stays deterministic.</summary>
    /// <exception cref="InvalidOperationException"><paramref name="target"/> requires gradient but was disposed (<paramref name="g"/> is freed).</exception>
    public static void Accumulate(Tensor target, RowSparseGrad g)
    {
        if (!Tape.Receives(target, g))
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
        var merged = Coalesce(old, g.Rows, g.Values, target.Shape[0]);
        old.Dispose();
        g.Dispose();
        target.SparseGrad = merged;
    }

    /// <summary>The gradient as a dense F32 [rows, cols] tensor, zero where no row was kept (costs O(rows)).</summary>
    public static Tensor ToDense(RowSparseGrad g, int rows)
    {
        var d = g.Rows.Device;
        int cols = g.Values.Shape[1];
        var dense = Tensor.Zeros(d, rows, cols);
        int r = g.Rows.Length;
        if (r > 0 && cols > 0)
        {
            var w = d.Split(r);
            d.Get(static d => new RowSparseGradientKernels(d)).Scatter(w.Workers, w, g.Rows.IntView, g.Values.View, dense.View, cols);
        }
        return dense;
    }
}

/// <summary>Kernels of <see cref="RowSparseGradients"/>.</summary>
internal sealed class RowSparseGradientKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>, int> Scatter;

    public RowSparseGradientKernels(Device d) => Scatter = d.LoadKernel(ScatterKernel);

    // rows: [B] distinct (padding NoRow), values: [B, cols] -> dense[rows[s], :] = values[s, :]; one row per item (distinct
    // rows: no conflicts); a row outside dense (padding) is skipped
    static void ScatterKernel(Index1D w, Work work, ArrayView<int> rows, ArrayView<float> values, ArrayView<float> dense, int cols)
    {
        int n = (int)(dense.Length / cols);
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int s = st, e = work.End(st); s < e; s++)
            {
                if ((uint)rows[s] >= (uint)n) continue;
                int to = rows[s] * cols, from = s * cols;
                for (int c = 0; c < cols; c++) dense[to + c] = values[from + c];
            }
    }
}
