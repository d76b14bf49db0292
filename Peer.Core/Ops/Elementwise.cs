// Elementwise arithmetic: fill, in-place accumulate, scale and affine maps, binary ops with row/column
// broadcasting, and cheap unary maps (exp, log, sqrt, square). One index per worker walks its chunk
// (Work); per-element logic is a readonly struct passed as a generic argument to one kernel. On the CPU
// accelerator the launcher loads SIMD bodies for axpy, affine and the binary ops (Cpu/ElementwiseCpu.cs, Device.Choose).
using System.Numerics;
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

    /// <summary>
    /// <c>a + b</c>. <paramref name="b"/> has a's shape, or is a row <c>[n]</c> broadcast over a <c>[.., n]</c>, or a
    /// column <c>[.., 1]</c> broadcast along a's last dimension. Differentiable (b's gradient is summed over the broadcast).
    /// </summary>
    /// <exception cref="ArgumentException">Other dtypes than F32, different devices, or a shape of b that is none of the three.</exception>
    public static Tensor Add(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Add);

    /// <summary><c>a - b</c>, broadcasting b as <see cref="Add"/> does. Differentiable.</summary>
    /// <exception cref="ArgumentException">As for <see cref="Add"/>.</exception>
    public static Tensor Sub(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Sub);

    /// <summary><c>a * b</c> elementwise, broadcasting b as <see cref="Add"/> does. Differentiable.</summary>
    /// <exception cref="ArgumentException">As for <see cref="Add"/>.</exception>
    public static Tensor Mul(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Mul);

    /// <summary><c>a / b</c> elementwise (IEEE division: b = 0 gives infinities or NaN), broadcasting b as <see cref="Add"/> does. Differentiable.</summary>
    /// <exception cref="ArgumentException">As for <see cref="Add"/>.</exception>
    public static Tensor Div(Tensor a, Tensor b) => Binary(a, b, BinaryOp.Div);

    /// <summary><c>alpha * x</c>. Differentiable.</summary>
    public static Tensor Scale(Tensor x, float alpha) => Affine(x, alpha, 0f);

    /// <summary><c>x + c</c> for a scalar c. Differentiable.</summary>
    public static Tensor AddScalar(Tensor x, float c) => Affine(x, 1f, c);

    /// <summary><c>-x</c>. Differentiable.</summary>
    public static Tensor Neg(Tensor x) => Affine(x, -1f, 0f);

    /// <summary><c>alpha * x + beta</c>. Differentiable (<c>dx = alpha * g</c>).</summary>
    /// <exception cref="ArgumentException">x is not F32.</exception>
    public static Tensor Affine(Tensor x, float alpha, float beta)
    {
        Check.DType(x, DType.F32, nameof(x));
        var d = x.Device;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (x.Length > 0)
        {
            var w = d.Split(x.Length);
            d.Get(static d => new ElementwiseKernels(d)).Affine(w.Workers, w, x.View, y.View, alpha, beta);
        }
        if (d.Tape.Needs(x))
            d.Tape.Record(y, [x], g => Tape.Accumulate(x, Scale(g, alpha)));
        return y;
    }

    /// <summary><c>exp(x)</c> elementwise. Differentiable (<c>dx = g * y</c>).</summary>
    public static Tensor Exp(Tensor x) => Unary(x, UnaryOp.Exp);

    /// <summary>Natural logarithm elementwise (x &lt;= 0 gives -inf or NaN). Differentiable (<c>dx = g / x</c>).</summary>
    public static Tensor Log(Tensor x) => Unary(x, UnaryOp.Log);

    /// <summary>Square root elementwise (x &lt; 0 gives NaN). Differentiable (<c>dx = g / (2 y)</c>).</summary>
    public static Tensor Sqrt(Tensor x) => Unary(x, UnaryOp.Sqrt);

    /// <summary><c>x * x</c> elementwise. Differentiable (<c>dx = 2 g x</c>).</summary>
    public static Tensor Square(Tensor x) => Unary(x, UnaryOp.Square);

    internal enum BinaryOp { Add = 0, Sub = 1, Mul = 2, Div = 3 }

    enum UnaryOp { Exp, Log, Sqrt, Square }

    /// <summary>How the second operand of a binary op is laid out against the first.</summary>
    internal enum Broadcast { Same = 0, Row = 1, Column = 2 }

    /// <summary>The broadcast of <paramref name="b"/> against <paramref name="a"/>, or an exception naming b's shape.</summary>
    internal static Broadcast BroadcastOf(Tensor a, Tensor b, string argument)
    {
        if (a.Shape.AsSpan().SequenceEqual(b.Shape)) return Broadcast.Same;
        if (a.Rank >= 1)
        {
            int n = a.Shape[^1];
            if (b.Rank == 1 && b.Shape[0] == n) return Broadcast.Row;
            if (b.Rank == a.Rank && b.Shape[^1] == 1 && a.Shape.AsSpan(0, a.Rank - 1).SequenceEqual(b.Shape.AsSpan(0, b.Rank - 1)))
                return Broadcast.Column;
        }
        var column = (int[])a.Shape.Clone();
        if (column.Length > 0) column[^1] = 1;
        throw new ArgumentException(
            $"{argument} has shape {Tensor.FormatShape(b.Shape)}: expected {Tensor.FormatShape(a.Shape)}" +
            (a.Rank >= 1 ? $", [{a.Shape[^1]}] (a row broadcast) or {Tensor.FormatShape(column)} (a column broadcast)" : "") + ".", argument);
    }

    static Tensor Binary(Tensor a, Tensor b, BinaryOp op)
    {
        Check.DType(a, DType.F32, nameof(a));
        Check.DType(b, DType.F32, nameof(b));
        Check.SameDevice(a, b, nameof(b));
        var mode = BroadcastOf(a, b, nameof(b));
        var d = a.Device;
        var y = Tensor.Empty(d, DType.F32, a.Shape);
        BinaryInto(a, b, y, op, mode);
        if (d.Tape.Needs(a, b))
        {
            d.Tape.Record(y, [a, b], g =>
            {
                switch (op)
                {
                    case BinaryOp.Add or BinaryOp.Sub:
                        if (a.RequiresGrad) Tape.Accumulate(a, Scale(g, 1f));
                        if (b.RequiresGrad) Tape.Accumulate(b, SumToOperand(g, mode, b.Shape, op == BinaryOp.Add ? 1f : -1f));
                        break;
                    case BinaryOp.Mul:
                        if (a.RequiresGrad) Tape.Accumulate(a, Mul(g, b));
                        if (b.RequiresGrad) { using var ga = Mul(g, a); Tape.Accumulate(b, SumToOperand(ga, mode, b.Shape, 1f)); }
                        break;
                    default:
                        // y = a / b: da = g / b, db = -g a / b^2 = -(g y) / b
                        if (a.RequiresGrad) Tape.Accumulate(a, Div(g, b));
                        if (b.RequiresGrad)
                        {
                            using var gy = Mul(g, y);
                            using var t = Div(gy, b);
                            Tape.Accumulate(b, SumToOperand(t, mode, b.Shape, -1f));
                        }
                        break;
                }
            });
        }
        return y;
    }

    /// <summary>Launches <c>y = a op b</c> (shapes validated by the caller).</summary>
    internal static void BinaryInto(Tensor a, Tensor b, Tensor y, BinaryOp op, Broadcast mode)
    {
        if (a.Length == 0) return;
        var d = a.Device;
        var w = d.Split(a.Length);
        var k = d.Get(static d => new ElementwiseKernels(d));
        var kernel = op switch { BinaryOp.Add => k.Add, BinaryOp.Sub => k.Sub, BinaryOp.Mul => k.Mul, _ => k.Div };
        kernel(w.Workers, w, a.View, b.View, y.View, Math.Max(1, a.Shape[^1]), (int)mode);
    }

    static Tensor Unary(Tensor x, UnaryOp op)
    {
        Check.DType(x, DType.F32, nameof(x));
        var d = x.Device;
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (x.Length > 0)
        {
            var w = d.Split(x.Length);
            var k = d.Get(static d => new ElementwiseKernels(d));
            var kernel = op switch { UnaryOp.Exp => k.Exp, UnaryOp.Log => k.Log, UnaryOp.Sqrt => k.Sqrt, _ => k.Square };
            kernel(w.Workers, w, x.View, y.View);
        }
        if (d.Tape.Needs(x))
        {
            d.Tape.Record(y, [x], g =>
            {
                switch (op)
                {
                    case UnaryOp.Exp: Tape.Accumulate(x, Mul(g, y)); break;
                    case UnaryOp.Log: Tape.Accumulate(x, Div(g, x)); break;
                    case UnaryOp.Sqrt: { using var t = Div(g, y); Tape.Accumulate(x, Scale(t, 0.5f)); break; }
                    default: { using var t = Mul(g, x); Tape.Accumulate(x, Scale(t, 2f)); break; }
                }
            });
        }
        return y;
    }
}

/// <summary>Per-element logic of a binary kernel (the vector form and the code, the op's number in the CPU body's switch,
/// serve the CPU SIMD body only).</summary>
internal interface IBinaryOp { float Apply(float a, float b); Vector<float> Apply(Vector<float> a, Vector<float> b); int Code { get; } }
internal readonly struct AddOp : IBinaryOp { public float Apply(float a, float b) => a + b; public Vector<float> Apply(Vector<float> a, Vector<float> b) => a + b; public int Code => 0; }
internal readonly struct SubOp : IBinaryOp { public float Apply(float a, float b) => a - b; public Vector<float> Apply(Vector<float> a, Vector<float> b) => a - b; public int Code => 1; }
internal readonly struct MulOp : IBinaryOp { public float Apply(float a, float b) => a * b; public Vector<float> Apply(Vector<float> a, Vector<float> b) => a * b; public int Code => 2; }
internal readonly struct DivOp : IBinaryOp { public float Apply(float a, float b) => a / b; public Vector<float> Apply(Vector<float> a, Vector<float> b) => a / b; public int Code => 3; }

/// <summary>Per-element logic of a unary kernel.</summary>
internal interface IUnaryOp { float Apply(float x); }
internal readonly struct ExpOp : IUnaryOp { public float Apply(float x) => MathF.Exp(x); }
internal readonly struct LogOp : IUnaryOp { public float Apply(float x) => MathF.Log(x); }
internal readonly struct SqrtOp : IUnaryOp { public float Apply(float x) => MathF.Sqrt(x); }
internal readonly struct SquareOp : IUnaryOp { public float Apply(float x) => x * x; }

/// <summary>Kernels of the elementwise family, loaded once per device: axpy, affine and the binary ops are the CPU SIMD
/// bodies' kernels (Cpu/ElementwiseCpu.cs) where <see cref="Device.Choose"/> picks them, the rest always portable.</summary>
internal sealed class ElementwiseKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, float> Fill;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, float> Axpy;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, float, float> Affine;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> Add, Sub, Mul, Div;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>> Exp, Log, Sqrt, Square;

    public ElementwiseKernels(Device d)
    {
        Fill = d.LoadKernel(FillKernel);
        // The CPU bodies use Vector<float>, whatever width it has here (scalar without SIMD): they need no vector unit.
        Axpy = d.LoadKernel(AxpyKernel, ElementwiseCpu.AxpyKernel, 0);
        Affine = d.LoadKernel(AffineKernel, ElementwiseCpu.AffineKernel, 0);
        Add = d.LoadKernel(BinaryKernel<AddOp>, ElementwiseCpu.BinaryKernel<AddOp>, 0);
        Sub = d.LoadKernel(BinaryKernel<SubOp>, ElementwiseCpu.BinaryKernel<SubOp>, 0);
        Mul = d.LoadKernel(BinaryKernel<MulOp>, ElementwiseCpu.BinaryKernel<MulOp>, 0);
        Div = d.LoadKernel(BinaryKernel<DivOp>, ElementwiseCpu.BinaryKernel<DivOp>, 0);
        Exp = d.LoadKernel(UnaryKernel<ExpOp>);
        Log = d.LoadKernel(UnaryKernel<LogOp>);
        Sqrt = d.LoadKernel(UnaryKernel<SqrtOp>);
        Square = d.LoadKernel(UnaryKernel<SquareOp>);
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

    // x: [n] -> y: [n] = alpha * x + beta
    static void AffineKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, float alpha, float beta)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = alpha * x[i] + beta;
    }

    // a: [rows, n], b: [rows, n] (mode 0) | [n] (mode 1, row) | [rows, 1] (mode 2, column) -> y: [rows, n] = op(a, b)
    static void BinaryKernel<TOp>(Index1D w, Work work, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n, int mode)
        where TOp : struct, IBinaryOp
    {
        var op = default(TOp);
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int j = mode == 0 ? i : mode == 1 ? i % n : i / n;
                y[i] = op.Apply(a[i], b[j]);
            }
    }

    // x: [n] -> y: [n] = op(x)
    static void UnaryKernel<TOp>(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y) where TOp : struct, IUnaryOp
    {
        var op = default(TOp);
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++) y[i] = op.Apply(x[i]);
    }
}
