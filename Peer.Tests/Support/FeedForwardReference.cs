// Double-precision host references of the feed-forward baselines, written from their definitions (dense FFW,
// expert-choice and top-k MoE with capacity, Soft MoE, product key memory), with parameters by interop name.
// Selections use plain LINQ sorts over (score desc, index asc), independent of the device's kernels.
namespace Peer.Tests;

using static PeerMath;

public static class FeedForwardReference
{
    /// <summary>fc2(act(fc1(x))) for one row; w1 [hd, d], w2 [d, hd].</summary>
    public static double[] Mlp(double[] x, int xOff, int d, int hd, double[] w1, int w1Off, double[] b1, int b1Off,
        double[] w2, int w2Off, double[] b2, int b2Off, PeerActivation act)
    {
        var h = new double[hd];
        for (int j = 0; j < hd; j++)
        {
            double s = b1[b1Off + j];
            for (int c = 0; c < d; c++) s += w1[w1Off + j * d + c] * x[xOff + c];
            h[j] = Act(s, act);
        }
        var y = new double[d];
        for (int c = 0; c < d; c++)
        {
            double s = b2[b2Off + c];
            for (int j = 0; j < hd; j++) s += w2[w2Off + c * hd + j] * h[j];
            y[c] = s;
        }
        return y;
    }

    public static double[] Dense(PeerRefParams p, double[] x, int t, int d, int hd, PeerActivation act)
    {
        var y = new double[t * d];
        for (int tt = 0; tt < t; tt++)
        {
            var row = Mlp(x, tt * d, d, hd, p["fc1.weight"], 0, p["fc1.bias"], 0, p["fc2.weight"], 0, p["fc2.bias"], 0, act);
            Array.Copy(row, 0, y, tt * d, d);
        }
        return y;
    }

    /// <summary>Expert e of a bank ("experts.fc1.weight" [E, hd, d], ...) on row xOff of x.</summary>
    public static double[] Expert(PeerRefParams p, int e, double[] x, int xOff, int d, int hd, PeerActivation act) =>
        Mlp(x, xOff, d, hd, p["experts.fc1.weight"], e * hd * d, p["experts.fc1.bias"], e * hd, p["experts.fc2.weight"], e * d * hd,
            p["experts.fc2.bias"], e * d, act);

    /// <summary>softmax over each row of x Wᵀ, W [rows, d] -> [t, rows].</summary>
    public static double[] RouterProbs(double[] w, double[] x, int t, int d, int e)
    {
        var pr = new double[t * e];
        for (int tt = 0; tt < t; tt++)
        {
            var l = new double[e];
            for (int j = 0; j < e; j++)
                for (int c = 0; c < d; c++) l[j] += w[j * d + c] * x[tt * d + c];
            double m = l.Max(), s = l.Sum(v => Math.Exp(v - m));
            for (int j = 0; j < e; j++) pr[tt * e + j] = Math.Exp(l[j] - m) / s;
        }
        return pr;
    }

    /// <summary>Expert choice: expert e takes the c tokens of largest P[t, e] (ties to smaller t); y[t] = sum P[t,e] FFW_e(x[t]).</summary>
    public static (double[] Y, int[][] Taken) ExpertChoice(PeerRefParams p, double[] x, int t, int d, int hd, int e, int c, PeerActivation act)
    {
        var pr = RouterProbs(p["router.weight"], x, t, d, e);
        var y = new double[t * d];
        var taken = new int[e][];
        for (int ex = 0; ex < e; ex++)
        {
            taken[ex] = Enumerable.Range(0, t).OrderByDescending(tt => pr[tt * e + ex]).ThenBy(tt => tt).Take(c).OrderBy(tt => tt).ToArray();
            foreach (int tt in taken[ex])
            {
                var o = Expert(p, ex, x, tt * d, d, hd, act);
                for (int j = 0; j < d; j++) y[tt * d + j] += pr[tt * e + ex] * o[j];
            }
        }
        return (y, taken);
    }

    /// <summary>
    /// Top-k token choice with capacity c (tokens accepted in token order), gates P or P renormalised over the k choices;
    /// aux = E * sum_e f_e * mean_t P[t, e] with f_e = choices of e / (T k).
    /// </summary>
    public static (double[] Y, double Aux, int[][] Accepted) TopK(PeerRefParams p, double[] x, int t, int d, int hd, int e, int k, int c,
        bool renormalize, PeerActivation act)
    {
        var pr = RouterProbs(p["router.weight"], x, t, d, e);
        var choices = new int[t][];
        for (int tt = 0; tt < t; tt++)
            choices[tt] = Enumerable.Range(0, e).OrderByDescending(j => pr[tt * e + j]).ThenBy(j => j).Take(k).ToArray();
        var accepted = new int[e][];
        var y = new double[t * d];
        double aux = 0;
        for (int ex = 0; ex < e; ex++)
        {
            var wanting = Enumerable.Range(0, t).Where(tt => choices[tt].Contains(ex)).ToArray();
            accepted[ex] = wanting.Take(c).ToArray();
            double f = wanting.Length / (double)(t * k), meanP = Enumerable.Range(0, t).Average(tt => pr[tt * e + ex]);
            aux += f * meanP;
            foreach (int tt in accepted[ex])
            {
                double gate = pr[tt * e + ex];
                if (renormalize) gate /= choices[tt].Sum(j => pr[tt * e + j]);
                var o = Expert(p, ex, x, tt * d, d, hd, act);
                for (int j = 0; j < d; j++) y[tt * d + j] += gate * o[j];
            }
        }
        return (y, aux * e, accepted);
    }

    /// <summary>Soft MoE: slots = softmax-over-tokens mixtures, experts on slots, softmax-over-slots combine.</summary>
    public static double[] Soft(PeerRefParams p, double[] x, int t, int d, int hd, int e, int s, PeerActivation act)
    {
        int es = e * s;
        var phi = p["router.weight"];
        var l = new double[t * es];
        for (int tt = 0; tt < t; tt++)
            for (int j = 0; j < es; j++)
                for (int c = 0; c < d; c++) l[tt * es + j] += phi[j * d + c] * x[tt * d + c];
        var slotIn = new double[es * d];
        for (int j = 0; j < es; j++)
        {
            double m = Enumerable.Range(0, t).Max(tt => l[tt * es + j]);
            double z = Enumerable.Range(0, t).Sum(tt => Math.Exp(l[tt * es + j] - m));
            for (int tt = 0; tt < t; tt++)
            {
                double w = Math.Exp(l[tt * es + j] - m) / z;
                for (int c = 0; c < d; c++) slotIn[j * d + c] += w * x[tt * d + c];
            }
        }
        var slotOut = new double[es * d];
        for (int j = 0; j < es; j++)
            Array.Copy(Expert(p, j / s, slotIn, j * d, d, hd, act), 0, slotOut, j * d, d);
        var y = new double[t * d];
        for (int tt = 0; tt < t; tt++)
        {
            double m = Enumerable.Range(0, es).Max(j => l[tt * es + j]);
            double z = Enumerable.Range(0, es).Sum(j => Math.Exp(l[tt * es + j] - m));
            for (int j = 0; j < es; j++)
            {
                double w = Math.Exp(l[tt * es + j] - m) / z;
                for (int c = 0; c < d; c++) y[tt * d + c] += w * slotOut[j * d + c];
            }
        }
        return y;
    }

    /// <summary>
    /// Product key memory: the retrieval of docs/peer-spec.md (PeerMath.Layer's brute-force top-k over all n*n full keys, softmax
    /// router) and y[t] = sum over heads and kept slots of g * values[i].
    /// </summary>
    public static (double[] Y, int[] Idx, double[] G) Pkm(PeerRefParams p, double[] x, int t, int d, int h, int dq, int n, int k,
        Peer.Nn.PeerQueryNorm norm, bool training)
    {
        // PeerMath.Layer also evaluates experts; give it an all-zero expert table so only its retrieval matters.
        var q = p.With("experts.down", new double[n * n * d]).With("experts.up", new double[n * n * d]);
        var (_, idx, g) = Layer(q, x, t, d, h, dq, n, k, norm, training, PeerActivation.Gelu, PeerRouter.Softmax);
        var v = p["values.weight"];
        var y = new double[t * d];
        for (int tt = 0; tt < t; tt++)
            for (int slot = 0; slot < h * k; slot++)
            {
                int pIdx = tt * h * k + slot;
                for (int c = 0; c < d; c++) y[tt * d + c] += g[pIdx] * v[idx[pIdx] * d + c];
            }
        return (y, idx, g);
    }
}
