// The plain-C# matmul a user would write without a library, for the kernels suite; never used by the framework.
// C = A @ B, row-major A [m, k], B [k, n]: Vector<T> ikj over rows in parallel. It shows what Peer's CPU body
// gains over straightforward vectorised code, and is the only matmul reference when OpenBLAS (the machine's
// ceiling, References/OpenBlas.cs) is absent. Deliberately not tiled or packed: a tuned copy of Peer's own
// micro-kernel would measure dispatch overhead, not the distance to an independent baseline.
using System.Numerics;

namespace Peer.Bench;

internal static class PlainMatMul
{
    public static void Simple(float[] a, float[] b, float[] c, int m, int n, int k)
    {
        int w = Vector<float>.Count;
        Parallel.For(0, m, i =>
        {
            var ci = c.AsSpan(i * n, n);
            ci.Clear();
            for (int p = 0; p < k; p++)
            {
                float av = a[i * k + p];
                var va = new Vector<float>(av);
                var bp = b.AsSpan(p * n, n);
                int j = 0;
                for (; j <= n - w; j += w) (new Vector<float>(ci[j..]) + va * new Vector<float>(bp[j..])).CopyTo(ci[j..]);
                for (; j < n; j++) ci[j] += av * bp[j];
            }
        });
    }
}
