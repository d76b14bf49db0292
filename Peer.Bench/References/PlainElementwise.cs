// Plain-C# elementwise reference for the kernels suite; never used by the framework:
// y += alpha * x with Vector<T>, one contiguous chunk per core.
using System.Numerics;
using System.Runtime.InteropServices;

namespace Peer.Bench;

internal static class PlainElementwise
{
    public static void Axpy(float[] y, float[] x, float alpha)
    {
        int parts = Environment.ProcessorCount, n = y.Length;
        Parallel.For(0, parts, part =>
        {
            int s = (int)((long)n * part / parts), e = (int)((long)n * (part + 1) / parts);
            var ys = y.AsSpan(s, e - s);
            var xs = x.AsSpan(s, e - s);
            var yv = MemoryMarshal.Cast<float, Vector<float>>(ys);
            var xv = MemoryMarshal.Cast<float, Vector<float>>(xs);
            var a = new Vector<float>(alpha);
            for (int i = 0; i < yv.Length; i++) yv[i] += a * xv[i];
            for (int i = yv.Length * Vector<float>.Count; i < ys.Length; i++) ys[i] += alpha * xs[i];
        });
    }
}
