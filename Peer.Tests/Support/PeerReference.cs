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

public static partial class PeerMath
{
    public static double Gelu(double z) => 0.5 * z * (1 + MathNet.Numerics.SpecialFunctions.Erf(z / Math.Sqrt(2)));
    public static double Act(double z, PeerActivation a) => a == PeerActivation.Relu ? Math.Max(z, 0) : Gelu(z);

    /// <summary>y[t] = sum_slot g * act(down[i] . x[t]) * up[i].</summary>
    public static double[] Experts(double[] x, int[] idx, double[] g, double[] down, double[] up, int t, int d, int hk, PeerActivation a)
    {
        var y = new double[t * d];
        for (int tt = 0; tt < t; tt++)
            for (int s = 0; s < hk; s++)
            {
                int i = idx[tt * hk + s];
                double z = 0;
                for (int c = 0; c < d; c++) z += down[i * d + c] * x[tt * d + c];
                double coef = g[tt * hk + s] * Act(z, a);
                for (int c = 0; c < d; c++) y[tt * d + c] += coef * up[i * d + c];
            }
        return y;
    }

    /// <summary>Central-difference gradient of a scalar function in double precision.</summary>
    public static double[] NumGrad(Func<double[], double> f, double[] x, double h = 1e-6)
    {
        var grad = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            var p = (double[])x.Clone(); p[i] += h;
            var m = (double[])x.Clone(); m[i] -= h;
            grad[i] = (f(p) - f(m)) / (2 * h);
        }
        return grad;
    }

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    public static double[] D(float[] a) => a.Select(v => (double)v).ToArray();
}
