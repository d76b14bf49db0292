// Activations: GELU (exact erf form, or the tanh approximation), ReLU and SiLU, each a forward map and a
// fused backward (dx = g * act'(x)). The scalar functions live in ActivationMath so that other kernels
// (the PEER expert kernels) can call the same code: no throw, only MathF. These portable kernels are the definition;
// on the CPU accelerator the launcher loads the bodies of Cpu/ActivationsCpu.cs instead (Device.Choose; identical bits,
// but for the exact GELU's eight-lane exponential, within 5 u |x| forward and 9 u |g| backward).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Which form of GELU to compute.</summary>
public enum GeluApproximation
{
    /// <summary>The exact form <c>x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))</c>.</summary>
    None,
    /// <summary>The tanh approximation <c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>.</summary>
    Tanh,
}

/// <summary>Scalar activation functions and their derivatives, callable from kernels (no throw, only MathF).</summary>
public static class ActivationMath
{
    const float TwoOverSqrtPi = 1.1283791671f, InvSqrt2 = 0.70710678118f, InvSqrt2Pi = 0.39894228040f, SqrtTwoOverPi = 0.79788456080f;

    /// <summary>
    /// The error function <c>erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt</c>, to about 1e-7 absolute (float rounding):
    /// for |x| &lt; 0.75 its Maclaurin series through x^19 (which also keeps the relative error small near 0); beyond,
    /// <c>1 - exp(-x^2) R(t)</c> with <c>t = 1 / (1 + x/2)</c> and R a degree-8 least-squares fit of <c>erfc(x) exp(x^2)</c>
    /// on [0.75, 6] (fitted for Peer in double precision against MathNet's erfc; fit error below 2e-9).
    /// </summary>
    public static float Erf(float x)
    {
        float ax = Math.Abs(x);
        if (ax < 0.75f)
        {
            // sum_n (-1)^n x^(2n+1) / (n! (2n+1)), n = 0..9, in Horner form over z = x^2
            float z = x * x;
            float p = MathF.FusedMultiplyAdd(z, -1f / 6894720f, 1f / 685440f);
            p = MathF.FusedMultiplyAdd(z, p, -1f / 75600f);
            p = MathF.FusedMultiplyAdd(z, p, 1f / 9360f);
            p = MathF.FusedMultiplyAdd(z, p, -1f / 1320f);
            p = MathF.FusedMultiplyAdd(z, p, 1f / 216f);
            p = MathF.FusedMultiplyAdd(z, p, -1f / 42f);
            p = MathF.FusedMultiplyAdd(z, p, 1f / 10f);
            p = MathF.FusedMultiplyAdd(z, p, -1f / 3f);
            p = MathF.FusedMultiplyAdd(z, p, 1f);
            return TwoOverSqrtPi * x * p;
        }
        float t = 1f / MathF.FusedMultiplyAdd(0.5f, ax, 1f);
        float r = MathF.FusedMultiplyAdd(t, 0.027794142f, 0.0052066434f);
        r = MathF.FusedMultiplyAdd(t, r, -0.26843372f);
        r = MathF.FusedMultiplyAdd(t, r, 0.35981964f);
        r = MathF.FusedMultiplyAdd(t, r, 0.022466118f);
        r = MathF.FusedMultiplyAdd(t, r, 0.29839800f);
        r = MathF.FusedMultiplyAdd(t, r, 0.27164149f);
        r = MathF.FusedMultiplyAdd(t, r, 0.28327973f);
        r = MathF.FusedMultiplyAdd(t, r, -5.7779204e-05f);
        float e = 1f - r * MathF.Exp(-ax * ax);
        return x < 0f ? -e : e;
    }

    /// <summary><c>0.5 x (1 + erf(x / sqrt 2))</c>.</summary>
    public static float GeluExact(float x) => 0.5f * x * (1f + Erf(x * InvSqrt2));

    /// <summary>Derivative of <see cref="GeluExact"/>: <c>Phi(x) + x phi(x)</c>.</summary>
    public static float GeluExactGrad(float x) =>
        0.5f * (1f + Erf(x * InvSqrt2)) + x * InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    /// <summary><c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>.</summary>
    public static float GeluTanh(float x) => 0.5f * x * (1f + MathF.Tanh(SqrtTwoOverPi * (x + 0.044715f * x * x * x)));

    /// <summary>Derivative of <see cref="GeluTanh"/>.</summary>
    public static float GeluTanhGrad(float x)
    {
        float t = MathF.Tanh(SqrtTwoOverPi * (x + 0.044715f * x * x * x));
        return 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * SqrtTwoOverPi * (1f + 3f * 0.044715f * x * x);
    }

    /// <summary><c>max(x, 0)</c>.</summary>
    public static float Relu(float x) => x > 0f ? x : 0f;

    /// <summary>Derivative of <see cref="Relu"/>: 1 for x &gt; 0, else 0 (0 at x = 0, as PyTorch).</summary>
    public static float ReluGrad(float x) => x > 0f ? 1f : 0f;

    /// <summary>Logistic sigmoid <c>1 / (1 + exp(-x))</c>.</summary>
    public static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    /// <summary><c>x * sigmoid(x)</c>.</summary>
    public static float Silu(float x) => x * Sigmoid(x);

    /// <summary>Derivative of <see cref="Silu"/>: <c>s (1 + x (1 - s))</c> with <c>s = sigmoid(x)</c>.</summary>
    public static float SiluGrad(float x)
    {
        float s = Sigmoid(x);
        return s * (1f + x * (1f - s));
    }
}

public static partial class Ops
{
    /// <summary>GELU elementwise, exact (<c>0.5 x (1 + erf(x / sqrt 2))</c>) or with the tanh approximation. Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32.</exception>
    public static Tensor Gelu(Tensor x, GeluApproximation approximate = GeluApproximation.None) =>
        Activate(x, approximate == GeluApproximation.Tanh ? Activation.GeluTanh : Activation.GeluExact);

    /// <summary><c>max(x, 0)</c> elementwise. Differentiable (gradient 0 at x = 0).</summary>
    /// <exception cref="ArgumentException">x is not F32.</exception>
    public static Tensor Relu(Tensor x) => Activate(x, Activation.Relu);

    /// <summary><c>x * sigmoid(x)</c> elementwise. Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32.</exception>
    public static Tensor Silu(Tensor x) => Activate(x, Activation.Silu);

    enum Activation { GeluExact, GeluTanh, Relu, Silu }

    static Tensor Activate(Tensor x, Activation act)
    {
        Check.DType(x, DType.F32, nameof(x));
        var d = x.Device;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (x.Length > 0)
        {
            var w = d.Split(x.Length);
            d.Get(static d => new ActivationKernels(d)).Forward[(int)act](w.Workers, w, x.View, y.View);
        }
        if (d.Tape.Needs(x))
        {
            d.Tape.Record(y, [x], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, x.Shape);
                if (x.Length > 0)
                {
                    var w = d.Split(x.Length);
                    d.Get(static d => new ActivationKernels(d)).Backward[(int)act](w.Workers, w, x.View, g.View, dx.View);
                }
                Tape.Accumulate(x, dx);
            });
        }
        return y;
    }
}

/// <summary>An activation and its derivative, for the generic kernels; <c>Code</c> is its number in the CPU body's switch.</summary>
internal interface IActivation { float F(float x); float D(float x); int Code { get; } }
internal readonly struct GeluExactAct : IActivation { public float F(float x) => ActivationMath.GeluExact(x); public float D(float x) => ActivationMath.GeluExactGrad(x); public int Code => 0; }
internal readonly struct GeluTanhAct : IActivation { public float F(float x) => ActivationMath.GeluTanh(x); public float D(float x) => ActivationMath.GeluTanhGrad(x); public int Code => 1; }
internal readonly struct ReluAct : IActivation { public float F(float x) => ActivationMath.Relu(x); public float D(float x) => ActivationMath.ReluGrad(x); public int Code => 2; }
internal readonly struct SiluAct : IActivation { public float F(float x) => ActivationMath.Silu(x); public float D(float x) => ActivationMath.SiluGrad(x); public int Code => 3; }

/// <summary>Kernels of the activations, indexed by the op's activation number: the portable kernels below, or the CPU
/// bodies' kernels (Cpu/ActivationsCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class ActivationKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>>[] Forward;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>>[] Backward;

    public ActivationKernels(Device d)
    {
        Forward = [LoadForward<GeluExactAct>(d), LoadForward<GeluTanhAct>(d), LoadForward<ReluAct>(d), LoadForward<SiluAct>(d)];
        Backward = [LoadBackward<GeluExactAct>(d), LoadBackward<GeluTanhAct>(d), LoadBackward<ReluAct>(d), LoadBackward<SiluAct>(d)];
    }

    // The CPU bodies use eight lanes where the CPU has them and a scalar loop otherwise: they need no vector unit.
    static Action<Index1D, Work, ArrayView<float>, ArrayView<float>> LoadForward<TAct>(Device d) where TAct : struct, IActivation =>
        d.LoadKernel(ForwardKernel<TAct>, ActivationsCpu.ForwardKernel<TAct>, 0);

    static Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>> LoadBackward<TAct>(Device d) where TAct : struct, IActivation =>
        d.LoadKernel(BackwardKernel<TAct>, ActivationsCpu.BackwardKernel<TAct>, 0);

    // x: [n] -> y: [n] = act(x)
    static void ForwardKernel<TAct>(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y) where TAct : struct, IActivation
    {
        var act = default(TAct);
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = act.F(x[i]);
    }

    // x: [n], g: [n] -> dx: [n] = g * act'(x)
    static void BackwardKernel<TAct>(Index1D w, Work work, ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx) where TAct : struct, IActivation
    {
        var act = default(TAct);
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) dx[i] = g[i] * act.D(x[i]);
    }
}
