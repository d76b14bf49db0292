// Central finite differences against the tape's gradients. The scalar checked is sum(f(x) * r) for a
// fixed random r, so every output element matters. Evaluations run in float32 on the device, so the
// step and tolerance are sized for float32 rounding (see the constants).
namespace Peer.Tests;

public static class GradCheck
{
    /// <summary>Finite-difference step. float32 rounding error of f is ~1e-7 relative; a step of 1e-2 keeps the
    /// truncation error (~h^2 f''') and the rounding error (~1e-7/h) both near 1e-4 for O(1) inputs.</summary>
    public const float Step = 1e-2f;
    /// <summary>Allowed |analytic - numeric| <= Abs + Rel * |numeric|.</summary>
    public const double Abs = 2e-3, Rel = 2e-2;

    /// <summary>
    /// Checks the gradient of <paramref name="f"/> with respect to each input. <paramref name="inputs"/> are host arrays with
    /// shapes; <paramref name="f"/> builds its output from device tensors made of them. Inputs listed in <paramref name="constant"/>
    /// are not differentiated (e.g. integer targets).
    /// </summary>
    public static void Check(Device d, Func<Tensor[], Tensor> f, (float[] Data, int[] Shape)[] inputs, int seed = 1, ISet<int>? constant = null, int maxCoords = 64)
    {
        constant ??= new HashSet<int>();
        double[] r;
        int outLen;
        // Analytic.
        var analytic = new float[inputs.Length][];
        using (Scope.Begin())
        {
            var xs = inputs.Select((x, i) => { var t = Tensor.FromArray(d, x.Data, x.Shape); t.RequiresGrad = !constant.Contains(i); return t; }).ToArray();
            var y = f(xs);
            outLen = y.Length;
            var rng = new Random(seed);
            r = Enumerable.Range(0, outLen).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            d.Tape.Backward(y, Tensor.FromArray(d, r.Select(v => (float)v).ToArray(), y.Shape));
            for (int i = 0; i < xs.Length; i++)
                analytic[i] = constant.Contains(i) ? [] : xs[i].Grad?.ToArray() ?? new float[xs[i].Length];
        }

        double Eval(int which, int coord, float delta)
        {
            using var s = Scope.Begin();
            using var ng = d.Tape.NoGrad();
            var xs = inputs.Select((x, i) =>
            {
                var data = (float[])x.Data.Clone();
                if (i == which) data[coord] += delta;
                return Tensor.FromArray(d, data, x.Shape);
            }).ToArray();
            var y = f(xs).ToArray();
            double acc = 0;
            for (int j = 0; j < y.Length; j++) acc += y[j] * r[j];
            return acc;
        }

        var pick = new Random(seed + 7);
        for (int i = 0; i < inputs.Length; i++)
        {
            if (constant.Contains(i)) continue;
            int n = inputs[i].Data.Length;
            var coords = n <= maxCoords ? Enumerable.Range(0, n) : Enumerable.Range(0, maxCoords).Select(_ => pick.Next(n));
            foreach (int c in coords)
            {
                double numeric = (Eval(i, c, Step) - Eval(i, c, -Step)) / (2 * Step);
                double a = analytic[i][c];
                Assert.That(Math.Abs(a - numeric), Is.LessThanOrEqualTo(Abs + Rel * Math.Abs(numeric)),
                    $"input {i}, element {c}: analytic {a}, numeric {numeric}");
            }
        }
    }

    /// <summary>The bit patterns of <paramref name="x"/>, for comparisons that must be bit for bit (a CPU body against its
    /// portable kernel).</summary>
    public static int[] Bits(float[] x) => x.Select(BitConverter.SingleToInt32Bits).ToArray();

    /// <summary>Random host data in [-1, 1).</summary>
    public static float[] Rand(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }
}
