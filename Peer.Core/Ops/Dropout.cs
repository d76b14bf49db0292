// Seeded dropout. The keep mask is never stored: element i is kept when the counter-based generator's
// uniform sample for (seed, i) is at least p, so forward and backward recompute the same mask, and one
// seed gives the same mask on every backend and worker count.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Dropout: in training, <c>y[i] = x[i] / (1 - p)</c> where <c>U(seed, i) ≥ p</c> and 0 elsewhere, with <c>U(seed, i)</c> the
    /// generator's uniform sample (<see cref="UniformAt"/> with the seed's low and high 32 bits and counter i). Differentiable:
    /// the backward applies the same mask and scale. With <paramref name="training"/> false or <paramref name="p"/> = 0 it is
    /// the identity and returns <paramref name="x"/> itself; with p = 1 every element is dropped.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="x"/> is not F32, or <paramref name="p"/> is outside [0, 1].</exception>
    public static Tensor Dropout(Tensor x, float p, ulong seed, bool training = true)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(p >= 0f && p <= 1f, nameof(p), p, "a drop probability in [0, 1]");
        if (!training || p == 0f) return x;
        var d = x.Device;
        var k = d.Get(static d => new DropoutKernels(d));
        uint lo = (uint)seed, hi = (uint)(seed >> 32);
        float scale = p < 1f ? 1f / (1f - p) : 0f;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var w = d.Split(x.Length);
        if (x.Length > 0) k.Mask(w.Workers, w, x.View, y.View, lo, hi, p, scale);
        if (d.Tape.Needs(x))
        {
            d.Tape.Record(y, [x], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, x.Shape);
                if (x.Length > 0) k.Mask(w.Workers, w, g.View, dx.View, lo, hi, p, scale);
                Tape.Accumulate(x, dx);
            });
        }
        return y;
    }
}

/// <summary>Kernels of dropout.</summary>
internal sealed class DropoutKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, uint, uint, float, float> Mask;

    public DropoutKernels(Device d) =>
        Mask = d.LoadKernel(MaskKernel);

    // x: [n] -> y: [n] = x * scale where U(seed, i) >= p, else 0 (forward on x, backward on dy)
    static void MaskKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, uint seedLo, uint seedHi, float p, float scale)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                y[i] = RandomKernels.ToUnit(RandomKernels.Hash(seedLo, seedHi, (uint)i)) >= p ? x[i] * scale : 0f;
    }
}
