// Host reference of the PEER layer in double precision, written straight from PEER-SPEC.md's equations
// (query projection, BatchNorm/LayerNorm/none, product-key top-k by brute force over all N experts,
// softmax/sigmoid router, singleton experts summed over heads), plus helpers to densify row-sparse
// gradients. Gradients of the reference are taken by central differences in double precision.
namespace Peer.Tests;

public static class PeerReference
{
    /// <summary>A row-sparse gradient as a dense [rows, cols] array (zero where no row was kept).</summary>
    public static double[] Densify(RowSparseGrad g, int rows, int cols)
    {
        var r = g.Rows.ToIntArray();
        var v = g.Values.ToArray();
        var dense = new double[rows * cols];
        for (int i = 0; i < r.Length; i++)
            for (int c = 0; c < cols; c++) dense[r[i] * cols + c] = v[i * cols + c];
        return dense;
    }
}
