// Matmul timing shared by the ceilings and kernels suites: C = A B of size s^3 through the kernel the device chose or
// through the portable kernel (the definition), validated against double-precision host dot products before it is
// timed (as llm.c's kernel lab does).
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Bench;

internal sealed class MatMulBench : IDisposable
{
    readonly Device device;
    readonly Scope scope;
    public readonly int Size;
    public readonly float[] A, B, C;
    readonly Tensor a, b, c;

    public MatMulBench(Device device, int size)
    {
        this.device = device;
        Size = size;
        var rng = new Random(size);
        A = Rand(rng, size * size);
        B = Rand(rng, size * size);
        C = new float[size * size];
        scope = Scope.Begin();
        a = Tensor.FromArray(device, A, size, size);
        b = Tensor.FromArray(device, B, size, size);
        c = Tensor.Zeros(device, size, size);
    }

    static float[] Rand(Random rng, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(rng.NextDouble() * 2 - 1);
        return v;
    }

    public double GigaFlop => 2.0 * Size * Size * Size / 1e9;

    /// <summary>One product through the kernel the device chose (what Ops.MatMul runs).</summary>
    public void Launch()
    {
        int s = Size;
        Ops.MatMulInto(a, b, c, false, false, 1, s, s, s, false, false, false);
        device.Synchronize();
    }

    // The definition kernel loaded on a device (cached by Device.Get), to time it where the device chose another kernel.
    sealed class Definition(Device d)
    {
        public readonly Action<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>> Portable =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, Work, MatMulShape, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MatMulKernels.PortableKernel);
    }

    /// <summary>One product through the portable kernel, the definition.</summary>
    public void LaunchPortable()
    {
        int s = Size;
        var w = device.Split(s);
        device.Get(static d => new Definition(d)).Portable(w.Workers, w, new MatMulShape(s, s, s, false, false, 0, 0, false), a.View, b.View, c.View);
        device.Synchronize();
    }

    /// <summary>The kernel the device chose, as reports name it (e.g. "cpu 512-bit", "tiled").</summary>
    public static string ChosenName(Device device) => device.Get(static d => new MatMulKernels(d)).Chosen;

    /// <summary>Max |Peer - double-precision host result| of one product through the kernel the device chose.</summary>
    public double Validate()
    {
        Launch();
        return HostError(c.ToArray());
    }

    /// <summary>
    /// Max |<paramref name="got"/> - A B| with A B computed in double precision on the host: every entry up to 256^3,
    /// 4096 entries drawn at random above (a wrong row, column or block still shows).
    /// </summary>
    public double HostError(float[] got)
    {
        int s = Size;
        var rng = new Random(s + 1);
        bool all = (long)s * s * s <= 1L << 24;
        int count = all ? s * s : 4096;
        double err = 0;
        for (int e = 0; e < count; e++)
        {
            int idx = all ? e : rng.Next(s * s), i = idx / s, j = idx % s;
            double want = 0;
            for (int p = 0; p < s; p++) want += (double)A[i * s + p] * B[p * s + j];
            err = Math.Max(err, Math.Abs(got[idx] - want));
        }
        return err;
    }

    /// <summary>GFLOP/s of the path Peer chooses on <paramref name="device"/>, validated first.</summary>
    public static Rate Chosen(Device device, int size, int warmup, int repeats)
    {
        using var m = new MatMulBench(device, size);
        double err = m.Validate();
        if (err > 1e-3 * Math.Sqrt(size)) throw new InvalidOperationException($"matmul {size}^3 through {ChosenName(device)} differs from double-precision host dot products by {err}");
        return Timing.Measure(m.Launch, warmup, repeats).Per(m.GigaFlop);
    }

    public void Dispose() => scope.Dispose();
}
