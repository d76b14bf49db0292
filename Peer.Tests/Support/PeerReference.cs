// Host reference of the PEER layer in double precision, written straight from the equations of docs/peer-spec.md
// (query projection, BatchNorm/LayerNorm/none, product-key top-k by brute force over all N experts,
// softmax/sigmoid router, singleton experts summed over heads), plus helpers to densify row-sparse
// gradients. Gradients of the reference are taken by central differences in double precision.
namespace Peer.Tests;

public static class PeerReference
{
    /// <summary>A row-sparse gradient as a dense [rows, cols] array (zero where no row was kept).</summary>
    public static double[] Densify(RowSparseGrad g, int rows, int cols)
    {
        var (r, v) = g.Real();
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

/// <summary>The PEER layer's parameters as double arrays, by interop name.</summary>
public sealed class PeerRefParams
{
    public Dictionary<string, double[]> P = new();
    public double[] this[string name] { get => P[name]; set => P[name] = value; }
    public PeerRefParams With(string name, double[] value)
    {
        var c = new PeerRefParams { P = new(P) };
        c.P[name] = value;
        return c;
    }
}

public static partial class PeerMath
{
    /// <summary>
    /// The layer straight from docs/peer-spec.md in double precision: q = norm(W x + b); per head, brute-force top-k over all
    /// N = n*n full keys [sub1[r]; sub2[c]] (ties toward the smaller index); router over the kept scores; experts summed.
    /// </summary>
    public static (double[] Y, int[] Idx, double[] G) Layer(PeerRefParams p, double[] x, int t, int d, int h, int dq, int n, int k,
        Peer.Nn.PeerQueryNorm norm, bool training, PeerActivation act, PeerRouter router)
    {
        int hq = h * dq, half = dq / 2;
        var q = new double[t * hq];
        for (int tt = 0; tt < t; tt++)
            for (int o = 0; o < hq; o++)
            {
                double s = p["query.bias"][o];
                for (int c = 0; c < d; c++) s += p["query.weight"][o * d + c] * x[tt * d + c];
                q[tt * hq + o] = s;
            }
        if (norm == Peer.Nn.PeerQueryNorm.BatchNorm)
        {
            for (int o = 0; o < hq; o++)
            {
                double mean, var;
                if (training)
                {
                    mean = Enumerable.Range(0, t).Average(tt => q[tt * hq + o]);
                    var = Enumerable.Range(0, t).Average(tt => (q[tt * hq + o] - mean) * (q[tt * hq + o] - mean));
                }
                else
                {
                    mean = p["query_norm.running_mean"][o];
                    var = p["query_norm.running_var"][o];
                }
                for (int tt = 0; tt < t; tt++)
                    q[tt * hq + o] = (q[tt * hq + o] - mean) / Math.Sqrt(var + 1e-5) * p["query_norm.weight"][o] + p["query_norm.bias"][o];
            }
        }
        else if (norm == Peer.Nn.PeerQueryNorm.LayerNorm)
        {
            for (int tt = 0; tt < t; tt++)
            {
                var row = q.Skip(tt * hq).Take(hq).ToArray();
                double mean = row.Average(), var = row.Average(v => (v - mean) * (v - mean));
                for (int o = 0; o < hq; o++)
                    q[tt * hq + o] = (row[o] - mean) / Math.Sqrt(var + 1e-5) * p["query_norm.weight"][o] + p["query_norm.bias"][o];
            }
        }
        var idx = new int[t * h * k];
        var g = new double[t * h * k];
        for (int tt = 0; tt < t; tt++)
            for (int j = 0; j < h; j++)
            {
                int qOff = tt * hq + j * dq;
                var all = new (double S, int I)[n * n];
                for (int r = 0; r < n; r++)
                    for (int c = 0; c < n; c++)
                    {
                        double s = 0;
                        for (int e = 0; e < half; e++) s += q[qOff + e] * p["keys.sub1"][r * half + e] + q[qOff + half + e] * p["keys.sub2"][c * half + e];
                        all[r * n + c] = (s, r * n + c);
                    }
                var top = all.OrderByDescending(a => a.S).ThenBy(a => a.I).Take(k).ToArray();
                double max = top.Max(a => a.S), sum = top.Sum(a => Math.Exp(a.S - max));
                for (int m = 0; m < k; m++)
                {
                    int slot = (tt * h + j) * k + m;
                    idx[slot] = top[m].I;
                    g[slot] = router == PeerRouter.Sigmoid ? 1 / (1 + Math.Exp(-top[m].S)) : Math.Exp(top[m].S - max) / sum;
                }
            }
        var y = Experts(x, idx, g, p["experts.down"], p["experts.up"], t, d, h * k, act);
        return (y, idx, g);
    }
}
