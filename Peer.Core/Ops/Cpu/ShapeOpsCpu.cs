// The CPU accelerator's bodies for the shape ops (permute, slice, concat), reached through [External] so that
// each contiguous run of elements is one block copy instead of one ArrayView index computation per element.
// Measured reason: the q/k/v permute and slices of a tiny-preset step cost 36-52 ms of a ~230 ms step through the
// portable kernels. They only move floats, so the results are bit for bit those of the portable kernels in
// ShapeOps.cs (the definition).
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Block-copy shape bodies over CPU memory and the kernels that call them, which <see cref="ShapeKernels"/> loads in
/// place of its portable kernels on the CPU accelerator (the bodies cannot compile for GPUs).</summary>
internal static class ShapeOpsCpu
{
    // x: [.. any order ..] -> y: [D0, D1, D2, D3]; one index per worker, whose chunks of the output the body copies
    internal static void PermuteKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, PermuteShape p)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) Permute(x, y, p, s, work.End(s));
    }

    // x: [outer, Size, Inner] -> y: [outer, Length, Inner] = x[:, Start:Start+Length, :]
    internal static void TakeKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, SliceShape sh)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) Take(x, y, sh, s, work.End(s));
    }

    // src: [outer, Length, Inner] -> dst[:, Start:Start+Length, :] of dst: [outer, Size, Inner]; chunks of the source
    internal static void PutKernel(Index1D w, Work work, ArrayView<float> src, ArrayView<float> dst, SliceShape sh)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride) Put(src, dst, sh, s, work.End(s));
    }

    /// <summary>
    /// Output elements <c>[start, end)</c> of the permute (see <see cref="ShapeKernels"/>): runs along the last output dimension are
    /// block copies when its input stride is 1, else strided loops.
    /// </summary>
    [External("peer_permute_cpu")]
    public static void Permute(ArrayView<float> x, ArrayView<float> y, PermuteShape p, int start, int end)
    {
        ref float x0 = ref x[0], y0 = ref y[0];
        for (int i = start; i < end;)
        {
            int r = i;
            int i3 = r % p.D3; r /= p.D3;
            int i2 = r % p.D2; r /= p.D2;
            int i1 = r % p.D1; r /= p.D1;
            int len = Math.Min(end - i, p.D3 - i3);
            nint src = (nint)r * p.S0 + (nint)i1 * p.S1 + (nint)i2 * p.S2 + (nint)i3 * p.S3;
            if (p.S3 == 1)
                CpuView.Copy(ref Unsafe.Add(ref x0, src), ref Unsafe.Add(ref y0, i), len);
            else
                for (int j = 0; j < len; j++) Unsafe.Add(ref y0, i + j) = Unsafe.Add(ref x0, src + (nint)j * p.S3);
            i += len;
        }
    }

    /// <summary>Output elements <c>[start, end)</c> of the slice <c>y = x[:, Start:Start+Length, :]</c> (see <see cref="ShapeKernels"/>).</summary>
    [External("peer_take_cpu")]
    public static void Take(ArrayView<float> x, ArrayView<float> y, SliceShape s, int start, int end)
    {
        ref float x0 = ref x[0], y0 = ref y[0];
        int block = s.Length * s.Inner;
        for (int i = start; i < end;)
        {
            int o = i / block, r = i - o * block, len = Math.Min(end - i, block - r);
            CpuView.Copy(ref Unsafe.Add(ref x0, (nint)o * s.Size * s.Inner + (nint)s.Start * s.Inner + r), ref Unsafe.Add(ref y0, i), len);
            i += len;
        }
    }

    /// <summary>Source elements <c>[start, end)</c> of <c>dst[:, Start:Start+Length, :] = src</c> (see <see cref="ShapeKernels"/>).</summary>
    [External("peer_put_cpu")]
    public static void Put(ArrayView<float> src, ArrayView<float> dst, SliceShape s, int start, int end)
    {
        ref float s0 = ref src[0], d0 = ref dst[0];
        int block = s.Length * s.Inner;
        for (int i = start; i < end;)
        {
            int o = i / block, r = i - o * block, len = Math.Min(end - i, block - r);
            CpuView.Copy(ref Unsafe.Add(ref s0, i), ref Unsafe.Add(ref d0, (nint)o * s.Size * s.Inner + (nint)s.Start * s.Inner + r), len);
            i += len;
        }
    }
}
