// The CPU accelerator's bodies for the linear op's bias add and bias gradient, reached through [External] so
// that they run as plain .NET Vector256 code. Measured reason: on the tiny preset the two bias kernels cost
// about as much as the matmuls they follow (~12 ms of a ~300 ms step through the ArrayView indexer). Both do
// exactly the portable kernels' float operations in the same order (Linear.cs, the definition): identical bits.
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
}
