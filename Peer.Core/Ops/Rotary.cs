// Rotary position embedding (RoFormer, Su et al. 2021, "interleaved" pairs): each pair (x[2i], x[2i+1]) of a head's
// vector at position t turns by the angle t * base^(-2i/Dh), so the dot product of a turned query and a turned key
// depends on their positions only through their offset. The backward turns the gradient back by the same angle.
// Angles are computed in the kernel from (t, i): no table to store, cache or invalidate.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Rotary position embedding of <paramref name="x"/> <c>[B, H, T, Dh]</c> (Dh even), positions <c>t = 0..T-1</c> along the third axis:
    /// for each pair <c>i &lt; Dh/2</c>, with <c>θ = t · base^(−2i/Dh)</c>, <c>y[2i] = x[2i] cos θ − x[2i+1] sin θ</c> and
    /// <c>y[2i+1] = x[2i] sin θ + x[2i+1] cos θ</c>. Differentiable; the backward turns the gradient by <c>−θ</c>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="x"/> is not F32 rank 4 with an even last axis, or <paramref name="base"/> is not a finite number above 1.</exception>
    public static Tensor Rotary(Tensor x, float @base = 10000f)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 4, nameof(x));
        Check.That(x.Shape[3] % 2 == 0, nameof(x), Tensor.FormatShape(x.Shape), "[B, H, T, Dh] with an even head size Dh");
        Check.That(@base > 1f && float.IsFinite(@base), nameof(@base), @base, "a finite base above 1");
        var d = x.Device;
        var k = d.Get(static d => new RotaryKernels(d));
        int t = x.Shape[2], half = x.Shape[3] / 2, pairs = x.Length / 2;
        // ln(base) / Dh per pair index: θ = t · exp(−2i · ln(base) / Dh).
        var shape = new RotaryShape(t, half, -2f * MathF.Log(@base) / x.Shape[3]);
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        var w = d.Split(pairs);
        if (pairs > 0) k.Turn(w.Workers, w, shape, x.View, y.View, 1f);
        if (d.Tape.Needs(x))
        {
            d.Tape.Record(y, [x], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, x.Shape);
                if (pairs > 0) k.Turn(w.Workers, w, shape, g.View, dx.View, -1f);
                Tape.Accumulate(x, dx);
            });
        }
        return y;
    }
}

/// <summary>Sequence length, pairs per head and the exponent scale <c>−2 ln(base) / Dh</c> of one rotary call.</summary>
internal readonly struct RotaryShape(int t, int half, float logScale)
{
    public readonly int T = t, Half = half;
    public readonly float LogScale = logScale;
}

/// <summary>Kernels of the rotary position embedding.</summary>
internal sealed class RotaryKernels
{
    public readonly Action<Index1D, Work, RotaryShape, ArrayView<float>, ArrayView<float>, float> Turn;

    public RotaryKernels(Device d) =>
        Turn = d.LoadKernel<Action<Index1D, Work, RotaryShape, ArrayView<float>, ArrayView<float>, float>>(TurnKernel);

    // x: [B, H, T, Dh] -> y: [B, H, T, Dh], pair p = (row, i) with row = (b, h, t): y = rotation(sign · θ(t, i)) x
    // (sign +1 forward on x, −1 backward on dy)
    static void TurnKernel(Index1D w, Work work, RotaryShape s, ArrayView<float> x, ArrayView<float> y, float sign)
    {
        for (int start = work.Start(w); start < work.N; start += work.Stride)
            for (int p = start, e = work.End(start); p < e; p++)
            {
                int i = p % s.Half, row = p / s.Half, t = row % s.T;
                float angle = sign * t * MathF.Exp(s.LogScale * i);
                float c = MathF.Cos(angle), sn = MathF.Sin(angle);
                long at = 2L * p;
                float a = x[at], b = x[at + 1];
                y[at] = a * c - b * sn;
                y[at + 1] = a * sn + b * c;
            }
    }
}
