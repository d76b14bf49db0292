// The CPU accelerator's bodies for the linear op's bias add and bias gradient, reached through [External] so
// that they run as plain .NET Vector256 code. Measured reason: on the tiny preset the two bias kernels cost
// about as much as the matmuls they follow (~12 ms of a ~300 ms step through the ArrayView indexer). Both do
// exactly the portable kernels' float operations in the same order (Linear.cs, the definition): identical bits.
// The fused bias + activation bodies run these bias bodies and the activation bodies (Cpu/ActivationsCpu.cs) by blocks of rows
// (the forward) or column chunk by column chunk (the backward), so they agree with the portable fused kernels as those bodies do:
// identical bits but for the exact GELU's eight-lane exponential (within 5 u |z| forward, 9 u |g| backward per element).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD bias bodies over CPU memory and the kernels that call them, which <see cref="LinearKernels"/> loads in place
/// of its portable kernels on the CPU accelerator with 256-bit vectors (the bodies cannot compile for GPUs).</summary>
internal static class LinearCpu
{
    // y: [rows, cols] += bias: [cols]; one index per worker, whose chunks of rows the body processes
    internal static void AddBiasKernel(Index1D w, Work work, ArrayView<float> y, ArrayView<float> bias, int cols)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) AddBias(y, bias, cols, s, work.End(s));
    }

    // g: [rows, cols] -> db: [cols] = Σ_rows g; worker w's chunks of columns
    internal static void ColumnSumsKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> db, int rows)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) ColumnSums(g, db, rows, work.N, s, work.End(s));
    }

    /// <summary><c>y[r, j] += bias[j]</c> for rows <c>[start, end)</c>. Cols &gt; 0.</summary>
    [External("peer_linear_add_bias_cpu")]
    public static void AddBias(ArrayView<float> y, ArrayView<float> bias, int cols, int start, int end)
    {
        ref float y0 = ref y[0], b0 = ref bias[0];
        for (int r = start; r < end; r++)
        {
            ref float yr = ref Unsafe.Add(ref y0, (nint)r * cols);
            int j = 0;
            for (; j <= cols - 8; j += 8)
                (Vector256.LoadUnsafe(ref yr, (nuint)j) + Vector256.LoadUnsafe(ref b0, (nuint)j)).StoreUnsafe(ref yr, (nuint)j);
            for (; j < cols; j++) Unsafe.Add(ref yr, j) += Unsafe.Add(ref b0, j);
        }
    }

    /// <summary><c>db[j] = Σ_r g[r, j]</c> for columns <c>[start, end)</c>, rows summed in order, eight columns at a time
    /// (zeros when there are no rows). Cols &gt; 0.</summary>
    [External("peer_linear_column_sums_cpu")]
    public static void ColumnSums(ArrayView<float> g, ArrayView<float> db, int rows, int cols, int start, int end)
    {
        ref float g0 = ref CpuView.First(g), db0 = ref db[0];
        int j = start;
        for (; j <= end - 8; j += 8)
        {
            var acc = Vector256<float>.Zero;
            for (int r = 0; r < rows; r++) acc += Vector256.LoadUnsafe(ref g0, (nuint)((nint)r * cols + j));
            acc.StoreUnsafe(ref db0, (nuint)j);
        }
        for (; j < end; j++)
        {
            float acc = 0f;
            for (int r = 0; r < rows; r++) acc += Unsafe.Add(ref g0, (nint)r * cols + j);
            Unsafe.Add(ref db0, j) = acc;
        }
    }

    // z: [rows, cols] += bias, y = act(z); worker w's chunks of rows
    internal static void BiasActivationKernel<TAct>(Index1D w, Work work, ArrayView<float> z, ArrayView<float> bias, ArrayView<float> y, int cols)
        where TAct : struct, IActivation
    {
        int act = default(TAct).Code;
        for (int s = work.Start(w); s < work.N; s += work.Stride) BiasActivation(act, z, bias, y, cols, s, work.End(s));
    }

    // z, g: [rows, cols] -> dz = g * act'(z), db: [cols] = Σ_rows dz; worker w's chunks of columns
    internal static void BiasActivationBackwardKernel<TAct>(Index1D w, Work work, ArrayView<float> z, ArrayView<float> g, ArrayView<float> dz,
        ArrayView<float> db, int rows) where TAct : struct, IActivation
    {
        int act = default(TAct).Code;
        for (int s = work.Start(w); s < work.N; s += work.Stride) BiasActivationBackward(act, z, g, dz, db, rows, work.N, s, work.End(s));
    }

    /// <summary>Rows <c>[start, end)</c>: <c>z[r, j] += bias[j]</c>, then <c>y = act(z)</c> over blocks of rows of at least
    /// <see cref="BlockFloats"/> floats while they are in cache (one activation call per block, so narrow rows do not pay a call
    /// each); act is the activation's number (ActivationsCpu.Forward). Cols &gt; 0.</summary>
    [External("peer_linear_bias_activation_cpu")]
    public static void BiasActivation(int act, ArrayView<float> z, ArrayView<float> bias, ArrayView<float> y, int cols, int start, int end)
    {
        int block = Math.Max(1, BlockFloats / cols);
        for (int r = start; r < end; r += block)
        {
            int e = Math.Min(end, r + block);
            AddBias(z, bias, cols, r, e);
            ActivationsCpu.Forward(act, z, y, r * cols, e * cols);
        }
    }

    /// <summary>Floats per block of rows in <see cref="BiasActivation"/> (8 KiB: in L1 between the bias add and the activation).</summary>
    const int BlockFloats = 2048;

    /// <summary>Columns <c>[start, end)</c>: <c>dz = g * act'(z)</c> row by row over the columns (ActivationsCpu.Backward), each
    /// row's part added to <c>db</c> as it is made, so the columns are summed in row order (zeros when there are no rows).</summary>
    [External("peer_linear_bias_activation_backward_cpu")]
    public static void BiasActivationBackward(int act, ArrayView<float> z, ArrayView<float> g, ArrayView<float> dz, ArrayView<float> db,
        int rows, int cols, int start, int end)
    {
        ref float dz0 = ref CpuView.First(dz), db0 = ref db[0];
        for (int j = start; j < end; j++) Unsafe.Add(ref db0, j) = 0f;
        for (int r = 0; r < rows; r++)
        {
            int o = r * cols;
            ActivationsCpu.Backward(act, z, g, dz, o + start, o + end);
            ref float dr = ref Unsafe.Add(ref dz0, o);
            int j = start;
            for (; j <= end - 8; j += 8)
                (Vector256.LoadUnsafe(ref db0, (nuint)j) + Vector256.LoadUnsafe(ref dr, (nuint)j)).StoreUnsafe(ref db0, (nuint)j);
            for (; j < end; j++) Unsafe.Add(ref db0, j) += Unsafe.Add(ref dr, j);
        }
    }
}
