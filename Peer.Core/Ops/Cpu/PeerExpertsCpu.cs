// The CPU accelerator's bodies for the fused PEER experts (forward and the dense part of the backward), reached
// through [External] so that they run as plain .NET Vector256 code. Measured reason: the PEER layer was the largest
// CPU cost of a tiny-preset training step (90-150 ms of ~230 ms); at its shapes (T=512, d=64, h=4, k=8) these two
// kernels took ~8 + ~13 ms through the bounds-checked ArrayView indexer, the SIMD bodies ~1 + ~1.3 ms (and retrieval's
// selection, Cpu/ProductKeyTopKCpu.cs, ~26 -> ~4.5 ms). Same formulas and slot grouping as the portable kernels in
// PeerExperts.cs (the definition): the dot products down[i] . x[t] and up[i] . dY[t] are summed in eight lanes (rounding
// differs); the per-slot scalars and the y / dX updates keep the portable kernel's operation order (identical bits given
// the dots).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD fused-expert bodies over CPU memory and the kernels that call them, which <see cref="PeerExpertKernels"/> loads
/// in place of its fused expert kernels on the CPU accelerator with 256-bit vectors (router and range check: Cpu/PeerRouterCpu.cs;
/// the bodies cannot compile for GPUs).</summary>
internal static class PeerExpertsCpu
{
    // x: [T, d], indices, g: [T, h*k], down, up: [N, d] -> y: [T, d], z: [T, h*k]; one index per worker, whose chunks of tokens the body processes
    internal static void ForwardKernel(Index1D w, Work work, ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Forward(s, x, indices, g, down, up, y, z, st, work.End(st));
    }

    // dY: [T, d] -> dX: [T, d], dG, coefDown, coefUp: [T*h*k]; worker w's chunks of tokens
    internal static void BackwardKernel(Index1D w, Work work, ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            Backward(s, x, indices, g, down, up, z, dY, dX, dG, coefDown, coefUp, st, work.End(st));
    }

    // a . b over n floats: eight lanes, then the lane sum, then the scalar tail in order.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(ref float a, ref float b, int n)
    {
        var acc = Vector256<float>.Zero;
        int c = 0;
        for (; c <= n - 8; c += 8) acc += Vector256.LoadUnsafe(ref a, (nuint)c) * Vector256.LoadUnsafe(ref b, (nuint)c);
        float s = Vector256.Sum(acc);
        for (; c < n; c++) s += Unsafe.Add(ref a, c) * Unsafe.Add(ref b, c);
        return s;
    }

    // Four dot products against one vector b, sharing its loads.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Dot4(ref float a0, ref float a1, ref float a2, ref float a3, ref float b, int n,
        out float d0, out float d1, out float d2, out float d3)
    {
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        int c = 0;
        for (; c <= n - 8; c += 8)
        {
            var bv = Vector256.LoadUnsafe(ref b, (nuint)c);
            s0 += Vector256.LoadUnsafe(ref a0, (nuint)c) * bv;
            s1 += Vector256.LoadUnsafe(ref a1, (nuint)c) * bv;
            s2 += Vector256.LoadUnsafe(ref a2, (nuint)c) * bv;
            s3 += Vector256.LoadUnsafe(ref a3, (nuint)c) * bv;
        }
        d0 = Vector256.Sum(s0); d1 = Vector256.Sum(s1); d2 = Vector256.Sum(s2); d3 = Vector256.Sum(s3);
        for (; c < n; c++)
        {
            float bs = Unsafe.Add(ref b, c);
            d0 += Unsafe.Add(ref a0, c) * bs;
            d1 += Unsafe.Add(ref a1, c) * bs;
            d2 += Unsafe.Add(ref a2, c) * bs;
            d3 += Unsafe.Add(ref a3, c) * bs;
        }
    }

    // o[c] += k0 r0[c] + k1 r1[c] + k2 r2[c] + k3 r3[c], summed left to right as in the portable kernel.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Axpy4(ref float o, float k0, ref float r0, float k1, ref float r1, float k2, ref float r2, float k3, ref float r3, int n)
    {
        var v0 = Vector256.Create(k0); var v1 = Vector256.Create(k1); var v2 = Vector256.Create(k2); var v3 = Vector256.Create(k3);
        int c = 0;
        for (; c <= n - 8; c += 8)
        {
            var sum = v0 * Vector256.LoadUnsafe(ref r0, (nuint)c) + v1 * Vector256.LoadUnsafe(ref r1, (nuint)c)
                + v2 * Vector256.LoadUnsafe(ref r2, (nuint)c) + v3 * Vector256.LoadUnsafe(ref r3, (nuint)c);
            (Vector256.LoadUnsafe(ref o, (nuint)c) + sum).StoreUnsafe(ref o, (nuint)c);
        }
        for (; c < n; c++)
            Unsafe.Add(ref o, c) += k0 * Unsafe.Add(ref r0, c) + k1 * Unsafe.Add(ref r1, c) + k2 * Unsafe.Add(ref r2, c) + k3 * Unsafe.Add(ref r3, c);
    }

    // o[c] += k r[c].
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Axpy(ref float o, float k, ref float r, int n)
    {
        var kv = Vector256.Create(k);
        int c = 0;
        for (; c <= n - 8; c += 8) (Vector256.LoadUnsafe(ref o, (nuint)c) + kv * Vector256.LoadUnsafe(ref r, (nuint)c)).StoreUnsafe(ref o, (nuint)c);
        for (; c < n; c++) Unsafe.Add(ref o, c) += k * Unsafe.Add(ref r, c);
    }

    /// <summary>Tokens <c>[start, end)</c> of the fused expert forward (see <see cref="PeerExpertKernels"/>). D &gt; 0; there may be
    /// no slots (h*k = 0, and then maybe no experts).</summary>
    [External("peer_experts_forward_cpu")]
    public static void Forward(ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z, int start, int end)
    {
        int dm = s.D, hk = s.Hk;
        ref float x0 = ref x[0], dn0 = ref CpuView.First(down), up0 = ref CpuView.First(up), y0 = ref y[0], z0 = ref CpuView.First(z), g0 = ref CpuView.First(g);
        ref int i0 = ref CpuView.First(indices);
        for (int t = start; t < end; t++)
        {
            ref float xt = ref Unsafe.Add(ref x0, (nint)t * dm);
            ref float yt = ref Unsafe.Add(ref y0, (nint)t * dm);
            for (int c = 0; c < dm; c++) Unsafe.Add(ref yt, c) = 0f;
            int slot = 0;
            for (; slot + 4 <= hk; slot += 4)
            {
                int p = t * hk + slot;
                ref float a0 = ref Unsafe.Add(ref dn0, (nint)Unsafe.Add(ref i0, p) * dm);
                ref float a1 = ref Unsafe.Add(ref dn0, (nint)Unsafe.Add(ref i0, p + 1) * dm);
                ref float a2 = ref Unsafe.Add(ref dn0, (nint)Unsafe.Add(ref i0, p + 2) * dm);
                ref float a3 = ref Unsafe.Add(ref dn0, (nint)Unsafe.Add(ref i0, p + 3) * dm);
                Dot4(ref a0, ref a1, ref a2, ref a3, ref xt, dm, out float d0, out float d1, out float d2, out float d3);
                Unsafe.Add(ref z0, p) = d0; Unsafe.Add(ref z0, p + 1) = d1; Unsafe.Add(ref z0, p + 2) = d2; Unsafe.Add(ref z0, p + 3) = d3;
                float c0 = Unsafe.Add(ref g0, p) * PeerExpertKernels.Act(d0, s.Act), c1 = Unsafe.Add(ref g0, p + 1) * PeerExpertKernels.Act(d1, s.Act);
                float c2 = Unsafe.Add(ref g0, p + 2) * PeerExpertKernels.Act(d2, s.Act), c3 = Unsafe.Add(ref g0, p + 3) * PeerExpertKernels.Act(d3, s.Act);
                Axpy4(ref yt, c0, ref Unsafe.Add(ref up0, (nint)Unsafe.Add(ref i0, p) * dm), c1, ref Unsafe.Add(ref up0, (nint)Unsafe.Add(ref i0, p + 1) * dm),
                    c2, ref Unsafe.Add(ref up0, (nint)Unsafe.Add(ref i0, p + 2) * dm), c3, ref Unsafe.Add(ref up0, (nint)Unsafe.Add(ref i0, p + 3) * dm), dm);
            }
            for (; slot < hk; slot++)
            {
                int p = t * hk + slot;
                nint row = (nint)Unsafe.Add(ref i0, p) * dm;
                float dot = Dot(ref Unsafe.Add(ref dn0, row), ref xt, dm);
                Unsafe.Add(ref z0, p) = dot;
                Axpy(ref yt, Unsafe.Add(ref g0, p) * PeerExpertKernels.Act(dot, s.Act), ref Unsafe.Add(ref up0, row), dm);
            }
        }
    }

    /// <summary>Tokens <c>[start, end)</c> of the fused expert backward (see <see cref="PeerExpertKernels"/>). Rows may be empty
    /// (d = 0), and there may be no slots (h*k = 0).</summary>
    [External("peer_experts_backward_cpu")]
    public static void Backward(ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp, int start, int end)
    {
        int dm = s.D, hk = s.Hk;
        ref float dn0 = ref CpuView.First(down), up0 = ref CpuView.First(up), dy0 = ref CpuView.First(dY), dx0 = ref CpuView.First(dX);
        ref float z0 = ref CpuView.First(z), g0 = ref CpuView.First(g), dg0 = ref CpuView.First(dG), cd0 = ref CpuView.First(coefDown), cu0 = ref CpuView.First(coefUp);
        ref int i0 = ref CpuView.First(indices);
        for (int t = start; t < end; t++)
        {
            ref float dyt = ref Unsafe.Add(ref dy0, (nint)t * dm);
            ref float dxt = ref Unsafe.Add(ref dx0, (nint)t * dm);
            for (int c = 0; c < dm; c++) Unsafe.Add(ref dxt, c) = 0f;
            int slot = 0;
            for (; slot + 4 <= hk; slot += 4)
            {
                int p = t * hk + slot;
                nint r0 = (nint)Unsafe.Add(ref i0, p) * dm, r1 = (nint)Unsafe.Add(ref i0, p + 1) * dm;
                nint r2 = (nint)Unsafe.Add(ref i0, p + 2) * dm, r3 = (nint)Unsafe.Add(ref i0, p + 3) * dm;
                Dot4(ref Unsafe.Add(ref up0, r0), ref Unsafe.Add(ref up0, r1), ref Unsafe.Add(ref up0, r2), ref Unsafe.Add(ref up0, r3), ref dyt, dm,
                    out float v0, out float v1, out float v2, out float v3);
                float dz0 = Slot(s.Act, p, v0, ref z0, ref g0, ref dg0, ref cd0, ref cu0);
                float dz1 = Slot(s.Act, p + 1, v1, ref z0, ref g0, ref dg0, ref cd0, ref cu0);
                float dz2 = Slot(s.Act, p + 2, v2, ref z0, ref g0, ref dg0, ref cd0, ref cu0);
                float dz3 = Slot(s.Act, p + 3, v3, ref z0, ref g0, ref dg0, ref cd0, ref cu0);
                Axpy4(ref dxt, dz0, ref Unsafe.Add(ref dn0, r0), dz1, ref Unsafe.Add(ref dn0, r1), dz2, ref Unsafe.Add(ref dn0, r2), dz3, ref Unsafe.Add(ref dn0, r3), dm);
            }
            for (; slot < hk; slot++)
            {
                int p = t * hk + slot;
                nint row = (nint)Unsafe.Add(ref i0, p) * dm;
                float vdy = Dot(ref Unsafe.Add(ref up0, row), ref dyt, dm);
                float dz = Slot(s.Act, p, vdy, ref z0, ref g0, ref dg0, ref cd0, ref cu0);
                Axpy(ref dxt, dz, ref Unsafe.Add(ref dn0, row), dm);
            }
        }
    }

    // The portable kernel's per-slot scalars (same expressions): writes dG, coefDown, coefUp; returns dz = g act'(z) vdy.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Slot(int act, int p, float vdy, ref float z0, ref float g0, ref float dg0, ref float cd0, ref float cu0)
    {
        float zp = Unsafe.Add(ref z0, p), a = PeerExpertKernels.Act(zp, act), gp = Unsafe.Add(ref g0, p);
        float dz = gp * vdy * PeerExpertKernels.ActGrad(zp, act);
        Unsafe.Add(ref dg0, p) = a * vdy;
        Unsafe.Add(ref cd0, p) = dz;
        Unsafe.Add(ref cu0, p) = gp * a;
        return dz;
    }
}
