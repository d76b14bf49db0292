// The padded layout of a row-sparse gradient (RowSparseGrad): R distinct ascending rows inside the table, then padding rows
// RowSparseGrad.NoRow with zero values. Tests read a gradient through Real, which checks that layout and returns the real part.
namespace Peer.Tests;

public static class RowSparseLayout
{
    /// <summary>The real rows and their values (row-major [R, cols]) of <paramref name="g"/>, after asserting its layout.</summary>
    public static (int[] Rows, float[] Values) Real(this RowSparseGrad g)
    {
        var rows = g.Rows.ToIntArray();
        var values = g.Values.ToArray();
        int cols = g.Values.Shape[1];
        int r = Array.IndexOf(rows, RowSparseGrad.NoRow);
        if (r < 0) r = rows.Length;
        Assert.That(rows[r..], Is.All.EqualTo(RowSparseGrad.NoRow), "padding (NoRow) only after the real rows");
        Assert.That(values[(r * cols)..], Is.All.EqualTo(0f), "padding rows' values are zero");
        for (int i = 1; i < r; i++) Assert.That(rows[i], Is.GreaterThan(rows[i - 1]), $"real rows strictly increasing at position {i}");
        if (r > 0) Assert.That(rows[0], Is.GreaterThanOrEqualTo(0), "real rows are table rows");
        return (rows[..r], values[..(r * cols)]);
    }
}
