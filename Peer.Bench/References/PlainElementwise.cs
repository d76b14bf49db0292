// Plain-C# elementwise references for the kernels suite; never used by the framework: y += alpha * x
// and a bias add y[r, :] = a[r, :] + b, with Vector<T>, one contiguous chunk per core.
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

    public static void AddRow(float[] a, float[] b, float[] y, int rows, int n)
    {
        int parts = Environment.ProcessorCount;
        Parallel.For(0, parts, part =>
        {
            int r0 = (int)((long)rows * part / parts), r1 = (int)((long)rows * (part + 1) / parts);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(b.AsSpan());
            for (int r = r0; r < r1; r++)
            {
                var ar = a.AsSpan(r * n, n);
                var yr = y.AsSpan(r * n, n);
                var av = MemoryMarshal.Cast<float, Vector<float>>(ar);
                var yv = MemoryMarshal.Cast<float, Vector<float>>(yr);
                for (int i = 0; i < yv.Length; i++) yv[i] = av[i] + bv[i];
                for (int i = yv.Length * Vector<float>.Count; i < n; i++) yr[i] = ar[i] + b[i];
            }
        });
    }

    /// <summary><c>a + b</c> into a new array, as an op that allocates its output (the GC reuses freed memory).</summary>
    public static float[] AddNew(float[] a, float[] b)
    {
        var y = GC.AllocateUninitializedArray<float>(a.Length);
        int parts = Environment.ProcessorCount, n = a.Length;
        Parallel.For(0, parts, part =>
        {
            int s = (int)((long)n * part / parts), e = (int)((long)n * (part + 1) / parts);
            var av = MemoryMarshal.Cast<float, Vector<float>>(a.AsSpan(s, e - s));
            var bv = MemoryMarshal.Cast<float, Vector<float>>(b.AsSpan(s, e - s));
            var yv = MemoryMarshal.Cast<float, Vector<float>>(y.AsSpan(s, e - s));
            for (int i = 0; i < yv.Length; i++) yv[i] = av[i] + bv[i];
            for (int i = s + yv.Length * Vector<float>.Count; i < e; i++) y[i] = a[i] + b[i];
        });
        return y;
    }
}
