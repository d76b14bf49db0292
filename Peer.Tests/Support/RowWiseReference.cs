// Double-precision host implementations of the row-wise optimizers' formulas (the XML docs of RowWiseAdagrad and
// RowWiseAdamW), and a runner that steps a device optimizer beside them over dense and sparse steps, checking every
// element, the state, and that rows a sparse step does not list keep their values and state bit for bit.
using Peer.Optim;

namespace Peer.Tests;

internal static class RowWiseReference
{
    /// <summary>One row of row-wise AdaGrad: <paramref name="g"/>[at..at + cols] is the row's gradient.</summary>
    public static void Adagrad(double[] p, double[] sum, int row, int cols, float[] g, int at, double lr, double wd, double eps)
    {
        double squares = 0;
        for (int j = 0; j < cols; j++) squares += (double)g[at + j] * g[at + j];
        sum[row] += squares / cols;
        double multiplier = lr / (Math.Sqrt(sum[row]) + eps);
        for (int j = 0; j < cols; j++) p[row * cols + j] = (1 - lr * wd) * p[row * cols + j] - multiplier * g[at + j];
    }

    /// <summary>One row of row-wise AdamW at step <paramref name="t"/>; <paramref name="m"/> null means no first moment (beta1 = 0).</summary>
    public static void AdamW(double[] p, double[]? m, double[] v, int row, int cols, float[] g, int at,
        double lr, double wd, double b1, double b2, double eps, long t)
    {
        double squares = 0;
        for (int j = 0; j < cols; j++) squares += (double)g[at + j] * g[at + j];
        v[row] = b2 * v[row] + (1 - b2) * squares / cols;
        double denom = Math.Sqrt(v[row]) / Math.Sqrt(1 - Math.Pow(b2, t)) + eps;
        for (int j = 0; j < cols; j++)
        {
            int k = row * cols + j;
            double mk = g[at + j];
            if (m != null) mk = m[k] = b1 * m[k] + (1 - b1) * g[at + j];
            p[k] = p[k] * (1 - lr * wd) - lr / (1 - Math.Pow(b1, t)) * mk / denom;
        }
    }

    /// <summary>
    /// Steps <paramref name="opt"/> over a parameter <c>[rows, cols]</c> (<paramref name="p"/>) with one step per entry of
    /// <paramref name="steps"/> (null: a dense gradient; else a sparse one over those rows), beside <paramref name="host"/>
    /// (p, row, cols, gradient, offset in it, step, learning rate), each step's learning rate from <paramref name="lrAt"/>.
    /// Checks every element against the host within <paramref name="tol"/>, the state through <paramref name="checkState"/>,
    /// and that a sparse step leaves the other rows' values and every state tensor's entries of those rows unchanged, bit for bit.
    /// <paramref name="pad"/> > 0: each sparse gradient ends in that many padding rows (RowSparseGrad.NoRow, zero values).
    /// </summary>
    public static void Run(Optimizer opt, Tensor p, int rows, int cols, int[]?[] steps, Func<int, float> lrAt,
        Action<double[], int, float[], int, long, double> host, Action<int> checkState, double tol, int seed, int pad = 0)
    {
        var hp = p.ToArray().Select(x => (double)x).ToArray();
        for (int step = 1; step <= steps.Length; step++)
        {
            var listed = steps[step - 1];
            opt.LearningRate = lrAt(step);
            float[] g;
            if (listed is null)
            {
                g = GradCheck.Rand(rows * cols, seed + step);
                g[Math.Min(2, g.Length - 1)] = 0f;
                p.SparseGrad?.Dispose();
                p.SparseGrad = null;
                p.Grad?.Dispose();
                p.Grad = Tensor.FromArray(p.Device, g, p.Shape);
            }
            else
            {
                g = GradCheck.Rand(listed.Length * cols, seed + step);
                p.Grad?.Dispose();
                p.Grad = null;
                p.SparseGrad?.Dispose();
                var padded = listed.Concat(Enumerable.Repeat(RowSparseGrad.NoRow, pad)).ToArray();
                p.SparseGrad = new RowSparseGrad(Tensor.FromArray(p.Device, padded, padded.Length),
                    Tensor.FromArray(p.Device, g.Concat(new float[pad * cols]).ToArray(), padded.Length, cols));
            }
            var before = p.ToArray();
            var stateBefore = opt.StateDict().Where(e => e.T.DType == DType.F32).Select(e => (e.Name, Values: e.T.ToArray())).ToList();
            opt.Step();
            var got = p.ToArray();
            if (listed is null)
                for (int r = 0; r < rows; r++) host(hp, r, g, r * cols, step, opt.LearningRate);
            else
                for (int i = 0; i < listed.Length; i++) host(hp, listed[i], g, i * cols, step, opt.LearningRate);
            for (int k = 0; k < rows * cols; k++) Assert.That(got[k], Is.EqualTo(hp[k]).Within(tol), $"step {step}, element {k}");
            if (listed is not null)
            {
                var stateAfter = opt.StateDict().Where(e => e.T.DType == DType.F32).Select(e => e.T.ToArray()).ToList();
                for (int r = 0; r < rows; r++)
                {
                    if (listed.Contains(r)) continue;
                    for (int c = 0; c < cols; c++)
                        Assert.That(BitConverter.SingleToInt32Bits(got[r * cols + c]), Is.EqualTo(BitConverter.SingleToInt32Bits(before[r * cols + c])),
                            $"untouched row {r} changed at step {step}");
                    for (int s = 0; s < stateAfter.Count; s++)
                    {
                        int width = stateAfter[s].Length / rows; // cols for a per-element state, 1 for a per-row one
                        for (int c = 0; c < width; c++)
                            Assert.That(BitConverter.SingleToInt32Bits(stateAfter[s][r * width + c]), Is.EqualTo(BitConverter.SingleToInt32Bits(stateBefore[s].Values[r * width + c])),
                                $"{stateBefore[s].Name} of untouched row {r} changed at step {step}");
                    }
                }
            }
            checkState(step);
        }
    }
}
