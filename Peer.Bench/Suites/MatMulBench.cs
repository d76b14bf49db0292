// Matmul timing shared by the ceilings and kernels suites: C = A B of size s^3 through one path, validated against
// the plain-C# reference before it is timed (as llm.c's kernel lab does).
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

    public void Launch(Ops.MatMulPath path)
    {
        int s = Size;
        Ops.MatMulInto(a, b, c, false, false, 1, s, s, s, false, false, false, path);
        device.Synchronize();
    }

    /// <summary>Max |Peer - plain reference| of one product through <paramref name="path"/>.</summary>
    public double Validate(Ops.MatMulPath path)
    {
        Launch(path);
        PlainMatMul.Best(A, B, C, Size, Size, Size);
        var got = c.ToArray();
        double err = 0;
        for (int i = 0; i < got.Length; i++) err = Math.Max(err, Math.Abs(got[i] - C[i]));
        return err;
    }

    /// <summary>GFLOP/s of the path Peer chooses on <paramref name="device"/>, validated first.</summary>
    public static Rate Chosen(Device device, int size, int warmup, int repeats)
    {
        using var m = new MatMulBench(device, size);
        var path = Ops.ChoosePath(device);
        double err = m.Validate(path);
        if (err > 1e-3 * Math.Sqrt(size)) throw new InvalidOperationException($"matmul {size}^3 through {path} differs from the plain reference by {err}");
        return Timing.Measure(() => m.Launch(path), warmup, repeats).Per(m.GigaFlop);
    }

    public void Dispose() => scope.Dispose();
}
