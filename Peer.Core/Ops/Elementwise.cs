// Elementwise arithmetic: fill, in-place accumulate, add, multiply, scale. The shape every kernel here
// follows: one index per worker walking its chunk (Work), with the launcher validating views on the host.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>The differentiable tensor operations. Each op family lives in its own file under <c>Peer.Core/Ops</c>.</summary>
public static partial class Ops
{
    /// <summary>Sets every element of <paramref name="t"/> to <paramref name="value"/> (not recorded).</summary>
    public static void Fill(Tensor t, float value)
    {
        Check.DType(t, DType.F32, nameof(t));
        if (t.Length == 0) return;
        var k = t.Device.Get(static d => new ElementwiseKernels(d));
        var w = t.Device.Split(t.Length);
        k.Fill(w.Workers, w, t.View, value);
    }

    /// <summary><c>y += alpha * x</c> in place (not recorded). Shapes must match.</summary>
    public static void AddInPlace(Tensor y, Tensor x, float alpha = 1f)
    {
        Check.DType(y, DType.F32, nameof(y));
        Check.DType(x, DType.F32, nameof(x));
        Check.SameDevice(y, x, nameof(x));
        Check.Shape(x, nameof(x), y.Shape);
        if (y.Length == 0) return;
        var d = y.Device;
        var w = d.Split(y.Length);
        d.Get(static d => new ElementwiseKernels(d)).Axpy(w.Workers, w, y.View, x.View, alpha);
    }

    /// <summary><c>a + b</c> for tensors of equal shape. Differentiable.</summary>
    public static Tensor Add(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Add);

    /// <summary><c>a * b</c> elementwise for tensors of equal shape. Differentiable.</summary>
    public static Tensor Mul(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Mul);

    /// <summary><c>alpha * x</c>. Differentiable.</summary>
    public static Tensor Scale(Tensor x, float alpha)
    {
        Check.DType(x, DType.F32, nameof(x));
        var d = x.Device;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (x.Length > 0)
        {
            var w = d.Split(x.Length);
            d.Get(static d => new ElementwiseKernels(d)).Scale(w.Workers, w, x.View, y.View, alpha);
        }
        if (d.Tape.Needs(x))
            d.Tape.Record(y, [x], g => Tape.Accumulate(x, Scale(g, alpha)));
        return y;
    }

    enum BinaryOp { Add, Mul }

    static Tensor Binary(Tensor a, Tensor b, BinaryOp op)
    {
        Check.DType(a, DType.F32, nameof(a));
        Check.DType(b, DType.F32, nameof(b));
        Check.SameDevice(a, b, nameof(b));
        Check.Shape(b, nameof(b), a.Shape);
        var d = a.Device;
        var y = Tensor.Empty(d, DType.F32, a.Shape);
        if (a.Length > 0)
        {
            var w = d.Split(a.Length);
            var k = d.Get(static d => new ElementwiseKernels(d));
            (op == BinaryOp.Add ? k.Add : k.Mul)(w.Workers, w, a.View, b.View, y.View);
        }
        if (d.Tape.Needs(a, b))
        {
            d.Tape.Record(y, [a, b], g =>
            {
                if (op == BinaryOp.Add)
                {
                    if (a.RequiresGrad) Tape.Accumulate(a, Scale(g, 1f));
                    if (b.RequiresGrad) Tape.Accumulate(b, Scale(g, 1f));
                }
                else
                {
                    if (a.RequiresGrad) Tape.Accumulate(a, Mul(g, b));
                    if (b.RequiresGrad) Tape.Accumulate(b, Mul(g, a));
                }
            });
        }
        return y;
    }
}

/// <summary>Kernels of the elementwise family, loaded once per device.</summary>
internal sealed class ElementwiseKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, float> Fill;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, float> Axpy;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, float> Scale;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>> Add;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>> Mul;

    public ElementwiseKernels(Device d)
    {
        var acc = d.Accelerator;
        Fill = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, float>(FillKernel);
        Axpy = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, float>(AxpyKernel);
        Scale = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, float>(ScaleKernel);
        Add = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>>(AddKernel);
        Mul = acc.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MulKernel);
    }

    // y: [n] <- value
    static void FillKernel(Index1D w, Work work, ArrayView<float> y, float value)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = value;
    }

    // y: [n] += alpha * x: [n]
    static void AxpyKernel(Index1D w, Work work, ArrayView<float> y, ArrayView<float> x, float alpha)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] += alpha * x[i];
    }

    // x: [n] -> y: [n] = alpha * x
    static void ScaleKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, float alpha)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = alpha * x[i];
    }

    // a, b: [n] -> y: [n] = a + b
    static void AddKernel(Index1D w, Work work, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = a[i] + b[i];
    }

    // a, b: [n] -> y: [n] = a * b
    static void MulKernel(Index1D w, Work work, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = a[i] * b[i];
    }
}
