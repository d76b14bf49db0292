// The CPU accelerator's bodies for the activations (GELU exact and tanh, ReLU, SiLU: forward and fused backward),
// reached through [External] so that the loop runs over plain references instead of the ArrayView indexer.
// Measured reason: GELU forward + backward cost 25-70 ms of a ~230 ms tiny-preset step through the portable kernels.
// Each element calls the same ActivationMath function as the portable kernels in Activations.cs (the definition), so
// the results are identical bits; only the loop around it changes.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Activation bodies over CPU memory, called from <see cref="ActivationCpuKernels"/>.</summary>
internal static class ActivationsCpu
{
    /// <summary><c>y[i] = act(x[i])</c> for i in [start, end); act is the op's activation number (GeluExact, GeluTanh, Relu, Silu).</summary>
    [External("peer_activation_forward_cpu")]
    public static void Forward(int act, ArrayView<float> x, ArrayView<float> y, int start, int end)
    {
        switch (act)
        {
            case 0: Forward<GeluExactAct>(x, y, start, end); break;
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
            case 0: Backward<GeluExactAct>(x, g, dx, start, end); break;
            case 1: Backward<GeluTanhAct>(x, g, dx, start, end); break;
            case 2: Backward<ReluAct>(x, g, dx, start, end); break;
            default: Backward<SiluAct>(x, g, dx, start, end); break;
        }
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

/// <summary>Launchers for <see cref="ActivationsCpu"/>: one index per worker, whose chunk the body processes. Loaded only on
/// the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal sealed class ActivationCpuKernels
{
    public readonly Action<Index1D, Work, int, ArrayView<float>, ArrayView<float>> Forward;
    public readonly Action<Index1D, Work, int, ArrayView<float>, ArrayView<float>, ArrayView<float>> Backward;

    public ActivationCpuKernels(Device d)
    {
        var acc = d.Accelerator;
        Forward = acc.LoadAutoGroupedStreamKernel<Index1D, Work, int, ArrayView<float>, ArrayView<float>>(ForwardKernel);
        Backward = acc.LoadAutoGroupedStreamKernel<Index1D, Work, int, ArrayView<float>, ArrayView<float>, ArrayView<float>>(BackwardKernel);
    }

    // x: [n] -> y: [n] = act(x), worker w's chunks through the body
    static void ForwardKernel(Index1D w, Work work, int act, ArrayView<float> x, ArrayView<float> y)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) ActivationsCpu.Forward(act, x, y, s, work.End(s));
    }

    // x: [n], g: [n] -> dx: [n] = g * act'(x)
    static void BackwardKernel(Index1D w, Work work, int act, ArrayView<float> x, ArrayView<float> g, ArrayView<float> dx)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) ActivationsCpu.Backward(act, x, g, dx, s, work.End(s));
    }
}
