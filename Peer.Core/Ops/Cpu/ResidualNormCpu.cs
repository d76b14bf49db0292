// The CPU accelerator's bodies for the fused residual norm (ResidualNorm.cs, the definition), reached through [External].
// Measured reason: the portable kernels read through the ArrayView indexer, and the row norms they replace already run as
// SIMD bodies (Cpu/NormsCpu.cs), which the fused kernel would otherwise be slower than. Each row's sum is one IEEE addition
// per element, then NormsCpu's row bodies run on it, so the results are those of the unfused ops on this accelerator, bit
// for bit; the gradient sum gs + dx is one addition too, as the unfused accumulate's fused multiply-add by 1 is.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD bodies of the fused residual norm over CPU memory and the kernels that call them, which
/// <see cref="ResidualNormKernels"/> loads in place of its portable kernels on the CPU accelerator with 256-bit vectors.</summary>
internal static class ResidualNormCpu
{
    // x, r: [rows, C], weight, bias: [C] -> sum, y: [rows, C], mean, rstd: [rows]; worker w's chunks of rows
    internal static void ForwardKernel(Index1D w, Work work, NormShape s, ArrayView<float> x, ArrayView<float> r, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> sum, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Forward(s, x, r, weight, bias, sum, y, mean, rstd, st, work.End(st));
    }

    // sum, gy, gs: [rows, C], weight: [C], mean, rstd: [rows] -> da (db): [rows, C]; worker w's chunks of rows
    internal static void BackwardKernel(Index1D w, Work work, NormShape s, ResidualGrads f, ArrayView<float> sum, ArrayView<float> weight, ArrayView<float> gy,
        ArrayView<float> gs, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> da, ArrayView<float> db)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Backward(s, f, sum, weight, gy, gs, mean, rstd, da, db, st, work.End(st));
    }

    /// <summary>Rows <c>[start, end)</c>: each row's sum, then its norm (NormsCpu.RowForward) while the row is in cache. Rows, Cols &gt; 0.</summary>
    [External("peer_residual_norm_forward_cpu")]
    public static void Forward(NormShape s, ArrayView<float> x, ArrayView<float> r, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> sum, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int start, int end)
    {
        int c = s.Cols;
        ref float x0 = ref x[0], r0 = ref r[0], s0 = ref sum[0];
        for (int row = start; row < end; row++)
        {
            nint o = (nint)row * c;
            Add(ref Unsafe.Add(ref x0, o), ref Unsafe.Add(ref r0, o), ref Unsafe.Add(ref s0, o), c);
            NormsCpu.RowForward(s, sum, weight, bias, y, mean, rstd, row, row + 1);
        }
    }

    /// <summary>Rows <c>[start, end)</c> of the backward: NormsCpu.RowBackward into da where gy is present, then gs added, then da
    /// copied to db where both inputs take the gradient. Rows, Cols &gt; 0.</summary>
    [External("peer_residual_norm_backward_cpu")]
    public static void Backward(NormShape s, ResidualGrads f, ArrayView<float> sum, ArrayView<float> weight, ArrayView<float> gy, ArrayView<float> gs,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> da, ArrayView<float> db, int start, int end)
    {
        int c = s.Cols;
        ref float gs0 = ref gs[0], da0 = ref da[0], db0 = ref db[0];
        for (int row = start; row < end; row++)
        {
            nint o = (nint)row * c;
            ref float a = ref Unsafe.Add(ref da0, o), g = ref Unsafe.Add(ref gs0, o);
            if (f.NormGrad != 0)
            {
                NormsCpu.RowBackward(s, sum, weight, gy, mean, rstd, da, row, row + 1);
                if (f.SumGrad != 0) Add(ref g, ref a, ref a, c);
            }
            else Unsafe.CopyBlockUnaligned(ref Unsafe.As<float, byte>(ref a), ref Unsafe.As<float, byte>(ref g), (uint)c * sizeof(float));
            if (f.Second != 0)
                Unsafe.CopyBlockUnaligned(ref Unsafe.As<float, byte>(ref Unsafe.Add(ref db0, o)), ref Unsafe.As<float, byte>(ref a), (uint)c * sizeof(float));
        }
    }

    // z = a + b over n elements (z may be b).
    static void Add(ref float a, ref float b, ref float z, int n)
    {
        int j = 0;
        for (; j <= n - 8; j += 8) (Vector256.LoadUnsafe(ref a, (nuint)j) + Vector256.LoadUnsafe(ref b, (nuint)j)).StoreUnsafe(ref z, (nuint)j);
        for (; j < n; j++) Unsafe.Add(ref z, j) = Unsafe.Add(ref a, j) + Unsafe.Add(ref b, j);
    }
}
