// The CPU accelerator's bodies for the hottest elementwise ops (axpy: every gradient accumulation and
// optimizer step; affine; add/sub/mul/div, also with row broadcast (bias) or column broadcast), reached through [External] so they run as plain
// .NET SIMD code. Measured reason: through the ArrayView indexer the portable axpy reached ~0.3x of
// plain-C# SIMD (Peer.Bench kernels). The portable kernels in Elementwise.cs stay the definition.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD elementwise bodies over CPU memory and the kernels that call them, which <see cref="ElementwiseKernels"/> loads
/// in place of its portable kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static unsafe class ElementwiseCpu
{
    // y: [n] += alpha * x: [n]; one index per worker, whose chunks the SIMD body processes
    internal static void AxpyKernel(Index1D w, Work work, ArrayView<float> y, ArrayView<float> x, float alpha)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) Axpy(y, x, alpha, s, work.End(s));
    }

    // x: [n] -> y: [n] = alpha * x + beta
    internal static void AffineKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, float alpha, float beta)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) Affine(x, y, alpha, beta, s, work.End(s));
    }

    // a: [rows, n], b: [rows, n] | [n] | [rows, 1] (mode 0, 1, 2) -> y: [rows, n] = a op b
    internal static void BinaryKernel<TOp>(Index1D w, Work work, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n, int mode)
        where TOp : struct, IBinaryOp
    {
        int op = default(TOp).Code;
        for (int s = work.Start(w); s < work.N; s += work.Stride) Binary(op, mode, n, a, b, y, s, work.End(s));
    }

    static Span<float> Span(ArrayView<float> v, int start, int end) =>
        new((float*)Unsafe.AsPointer(ref v[0]) + start, end - start);

    /// <summary><c>y[i] += alpha * x[i]</c> for i in [start, end).</summary>
    [External("peer_axpy_cpu")]
    public static void Axpy(ArrayView<float> y, ArrayView<float> x, float alpha, int start, int end)
    {
        var ys = Span(y, start, end);
        var xs = Span(x, start, end);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(ys);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(xs);
        var a = new Vector<float>(alpha);
        for (int i = 0; i < yv.Length; i++) yv[i] = Vector.FusedMultiplyAdd(a, xv[i], yv[i]);
        for (int i = yv.Length * Vector<float>.Count; i < ys.Length; i++) ys[i] += alpha * xs[i];
    }

    /// <summary><c>y[i] = alpha * x[i] + beta</c> for i in [start, end).</summary>
    [External("peer_affine_cpu")]
    public static void Affine(ArrayView<float> x, ArrayView<float> y, float alpha, float beta, int start, int end)
    {
        var ys = Span(y, start, end);
        var xs = Span(x, start, end);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(ys);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(xs);
        var a = new Vector<float>(alpha);
        var b = new Vector<float>(beta);
        for (int i = 0; i < yv.Length; i++) yv[i] = Vector.FusedMultiplyAdd(a, xv[i], b);
        for (int i = yv.Length * Vector<float>.Count; i < ys.Length; i++) ys[i] = alpha * xs[i] + beta;
    }

    /// <summary>
    /// <c>y[i] = a[i] op b[j]</c> for i in [start, end), with j = i (mode 0), i mod n (mode 1, b a row [n]) or i / n (mode 2,
    /// b a column [rows, 1]); op 0 add, 1 sub, 2 mul, 3 div.
    /// </summary>
    [External("peer_binary_cpu")]
    public static void Binary(int op, int mode, int n, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int start, int end)
    {
        switch (op)
        {
            case 0: Segments<AddOp>(mode, n, a, b, y, start, end); break;
            case 1: Segments<SubOp>(mode, n, a, b, y, start, end); break;
            case 2: Segments<MulOp>(mode, n, a, b, y, start, end); break;
            default: Segments<DivOp>(mode, n, a, b, y, start, end); break;
        }
    }

    // Splits [start, end) into runs inside one row, so that each run is a plain vector loop.
    static void Segments<TOp>(int mode, int n, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int start, int end) where TOp : struct, IBinaryOp
    {
        if (mode == 0)
        {
            Run<TOp>(Span(a, start, end), Span(b, start, end), Span(y, start, end));
            return;
        }
        float* pb = (float*)Unsafe.AsPointer(ref b[0]);
        for (int i = start; i < end;)
        {
            int r = i / n, j = i - r * n, len = Math.Min(end - i, n - j);
            if (mode == 1) Run<TOp>(Span(a, i, i + len), new Span<float>(pb + j, len), Span(y, i, i + len));
            else RunScalar<TOp>(Span(a, i, i + len), pb[r], Span(y, i, i + len));
            i += len;
        }
    }

    static void Run<TOp>(Span<float> a, Span<float> b, Span<float> y) where TOp : struct, IBinaryOp
    {
        var op = default(TOp);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var av = MemoryMarshal.Cast<float, Vector<float>>(a);
        var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
        for (int i = 0; i < yv.Length; i++) yv[i] = op.Apply(av[i], bv[i]);
        for (int i = yv.Length * Vector<float>.Count; i < y.Length; i++) y[i] = op.Apply(a[i], b[i]);
    }

    static void RunScalar<TOp>(Span<float> a, float b, Span<float> y) where TOp : struct, IBinaryOp
    {
        var op = default(TOp);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var av = MemoryMarshal.Cast<float, Vector<float>>(a);
        var bb = new Vector<float>(b);
        for (int i = 0; i < yv.Length; i++) yv[i] = op.Apply(av[i], bb);
        for (int i = yv.Length * Vector<float>.Count; i < y.Length; i++) y[i] = op.Apply(a[i], b);
    }
}
