// The bench's references must compute the right thing, or its ratios mean nothing. Before the kernels suite
// times anything, each reference is compared with double-precision host loops on small shapes, non-square ones
// included (they catch swapped dimensions and leading dimensions, which square sizes hide); a wrong reference
// stops the run with a BenchCheckException. The errors are recorded as figures (unit "abs", device "host").
namespace Peer.Bench;

/// <summary>A reference or a compared design computed something else: the run stops rather than report ratios against it.</summary>
internal sealed class BenchCheckException(string message) : Exception(message);

internal static class ReferenceCheck
{
    const double MatMulTolerance = 1e-4, ExactTolerance = 0;
    static readonly (int M, int N, int K)[] Shapes = [(1, 1, 1), (17, 33, 9), (70, 600, 300)];

    /// <summary>Checks the matmul and elementwise references (OpenBLAS only when present) and records their errors.</summary>
    public static void Run(SuiteResults s)
    {
        var matmuls = new List<(string Name, Action<float[], float[], float[], int, int, int> Run)> { ("plain simple", PlainMatMul.Simple) };
        if (OpenBlas.Present) matmuls.Add(("OpenBLAS sgemm", OpenBlas.Sgemm));
        foreach (var (m, n, k) in Shapes)
        {
            var a = Rand(m * k, 1);
            var b = Rand(k * n, 2);
            var want = HostMatMul(a, b, m, n, k);
            foreach (var (name, run) in matmuls)
            {
                var c = Enumerable.Repeat(float.NaN, m * n).ToArray();
                run(a, b, c, m, n, k);
                Record(s, $"matmul {m}x{n}x{k}", name, MaxError(c, want), MatMulTolerance);
            }
        }
        var x = Rand(1003, 3);
        var y = Rand(1003, 4);
        var sum = PlainElementwise.AddNew(x, y);
        Record(s, "add 1003", "plain SIMD", MaxError(sum, x.Select((v, i) => (double)(v + y[i])).ToArray()), ExactTolerance);
        var bias = Rand(17, 5);
        var rowSum = new float[59 * 17];
        PlainElementwise.AddRow(x, bias, rowSum, 59, 17);
        Record(s, "add row-broadcast [59, 17]", "plain SIMD", MaxError(rowSum, rowSum.Select((_, i) => (double)(x[i] + bias[i % 17])).ToArray()), ExactTolerance);
        var axpy = y.Select((v, i) => (double)v + 0.5 * x[i]).ToArray();
        PlainElementwise.Axpy(y, x, 0.5f);
        Record(s, "axpy 1003", "plain SIMD", MaxError(y, axpy), 1e-6);
    }

    static void Record(SuiteResults s, string what, string reference, double error, double tolerance)
    {
        s.Add(new Measurement("host", $"reference check: {what}", reference, "abs", error));
        if (!(error <= tolerance))
            throw new BenchCheckException($"the bench's {reference} reference is wrong on {what}: max |error| {error:G3} against double-precision host loops (allowed {tolerance:G2})");
    }

    static float[] Rand(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    static double[] HostMatMul(float[] a, float[] b, int m, int n, int k)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++) sum += (double)a[i * k + p] * b[p * n + j];
                c[i * n + j] = sum;
            }
        return c;
    }

    static double MaxError(float[] got, double[] want)
    {
        double e = 0;
        for (int i = 0; i < want.Length; i++) e = Math.Max(e, Math.Abs(got[i] - want[i])); // NaN propagates through Max
        return e;
    }
}
