// The CPU accelerator's bodies for the activations (GELU exact and tanh, ReLU, SiLU: forward and fused backward),
// reached through [External] so that the loop runs over plain references instead of the ArrayView indexer.
// Measured reason: GELU forward + backward cost 25-70 ms of a ~230 ms tiny-preset step through the portable kernels.
// The exact GELU runs ActivationMath.Erf's operations in eight lanes (Vector256), in the same order, with only the
// exponential replaced by Vector256.Exp (within 3 u = 3 * 2^-24 of MathF.Exp, measured over the arguments used): the
// results agree with the portable kernels within 5 u |x| (forward) and 9 u |g| (backward), see ActivationsCpuTests.
// The other activations and the scalar tails call the same ActivationMath function per element (identical bits).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Activation bodies over CPU memory and the kernels that call them, which <see cref="ActivationKernels"/> loads in
/// place of its portable kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static class ActivationsCpu
{
    // x: [n] -> y: [n] = act(x); one index per worker, whose chunks the body processes
    internal static void ForwardKernel<TAct>(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y) where TAct : struct, IActivation
    {
        int act = default(TAct).Code;
        for (int s = work.Start(w); s < work.N; s += work.Stride) Forward(act, x, y, s, work.End(s));
    }

    // x: [n], g: [n] -> dx: [n] = g * act'(x)
    internal static void BackwardKernel<TAct>(Index1D w, Work work, ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx) where TAct : struct, IActivation
    {
        int act = default(TAct).Code;
        for (int s = work.Start(w); s < work.N; s += work.Stride) Backward(act, x, g, dx, s, work.End(s));
    }

    /// <summary><c>y[i] = act(x[i])</c> for i in [start, end); act is the op's activation number (GeluExact, GeluTanh, Relu, Silu).</summary>
    [External("peer_activation_forward_cpu")]
    public static void Forward(int act, ArrayView<float> x, ArrayView<float> y, int start, int end)
    {
        switch (act)
        {
            case 0: GeluForward(x, y, start, end); break;
            case 1: Forward<GeluTanhAct>(x, y, start, end); break;
            case 2: Forward<ReluAct>(x, y, start, end); break;
            default: Forward<SiluAct>(x, y, start, end); break;
        }
    }

    /// <summary><c>dx[i] = g[i] * act'(x[i])</c> for i in [start, end); act as in <see cref="Forward(int, ArrayView{float}, ArrayView{float}, int, int)"/>.</summary>
    [External("peer_activation_backward_cpu")]
    public static void Backward(int act, ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx, int start, int end)
    {
        switch (act)
        {
            case 0: GeluBackward(x, g, dx, start, end); break;
            case 1: Backward<GeluTanhAct>(x, g, dx, start, end); break;
            case 2: Backward<ReluAct>(x, g, dx, start, end); break;
            default: Backward<SiluAct>(x, g, dx, start, end); break;
        }
    }

    const float TwoOverSqrtPi = 1.1283791671f, InvSqrt2 = 0.70710678118f, InvSqrt2Pi = 0.39894228040f;

    static void GeluForward(ArrayView<float> x, ArrayView<float> y, int start, int end)
    {
        ref float x0 = ref x[0], y0 = ref y[0];
        int i = start;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= end - 8; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref x0, (nuint)i);
                (v * Vector256.Create(0.5f) * (Vector256<float>.One + Erf(v * Vector256.Create(InvSqrt2)))).StoreUnsafe(ref y0, (nuint)i);
            }
        for (; i < end; i++) Unsafe.Add(ref y0, i) = ActivationMath.GeluExact(Unsafe.Add(ref x0, i));
    }

    static void GeluBackward(ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx, int start, int end)
    {
        ref float x0 = ref x[0], g0 = ref g[0], d0 = ref dx[0];
        int i = start;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= end - 8; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref x0, (nuint)i);
                var dg = Vector256.Create(0.5f) * (Vector256<float>.One + Erf(v * Vector256.Create(InvSqrt2)))
                    + v * Vector256.Create(InvSqrt2Pi) * Vector256.Exp(Vector256.Create(-0.5f) * v * v);
                (Vector256.LoadUnsafe(ref g0, (nuint)i) * dg).StoreUnsafe(ref d0, (nuint)i);
            }
        for (; i < end; i++) Unsafe.Add(ref d0, i) = Unsafe.Add(ref g0, i) * ActivationMath.GeluExactGrad(Unsafe.Add(ref x0, i));
    }

    // ActivationMath.Erf in eight lanes: the same operations in the same order on both branches, then a select by |x|;
    // only the exponential is Vector256.Exp instead of MathF.Exp.
    static Vector256<float> Erf(Vector256<float> x)
    {
        var ax = Vector256.Abs(x);
        var z = x * x;
        var p = Vector256.FusedMultiplyAdd(z, Vector256.Create(-1f / 6894720f), Vector256.Create(1f / 685440f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(-1f / 75600f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(1f / 9360f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(-1f / 1320f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(1f / 216f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(-1f / 42f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(1f / 10f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256.Create(-1f / 3f));
        p = Vector256.FusedMultiplyAdd(z, p, Vector256<float>.One);
        var small = Vector256.Create(TwoOverSqrtPi) * x * p;
        var t = Vector256<float>.One / Vector256.FusedMultiplyAdd(Vector256.Create(0.5f), ax, Vector256<float>.One);
        var r = Vector256.FusedMultiplyAdd(t, Vector256.Create(0.027794142f), Vector256.Create(0.0052066434f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(-0.26843372f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(0.35981964f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(0.022466118f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(0.29839800f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(0.27164149f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(0.28327973f));
        r = Vector256.FusedMultiplyAdd(t, r, Vector256.Create(-5.7779204e-05f));
        var e = Vector256<float>.One - r * Vector256.Exp(-ax * ax);
        var large = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<float>.Zero), -e, e);
        return Vector256.ConditionalSelect(Vector256.LessThan(ax, Vector256.Create(0.75f)), small, large);
    }

    static void Forward<TAct>(ArrayView<float> x, ArrayView<float> y, int start, int end) where TAct : struct, IActivation
    {
        var act = default(TAct);
        ref float x0 = ref x[0], y0 = ref y[0];
        for (int i = start; i < end; i++) Unsafe.Add(ref y0, i) = act.F(Unsafe.Add(ref x0, i));
    }

    static void Backward<TAct>(ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx, int start, int end) where TAct : struct, IActivation
    {
        var act = default(TAct);
        ref float x0 = ref x[0], g0 = ref g[0], d0 = ref dx[0];
        for (int i = start; i < end; i++) Unsafe.Add(ref d0, i) = Unsafe.Add(ref g0, i) * act.D(Unsafe.Add(ref x0, i));
    }
}
