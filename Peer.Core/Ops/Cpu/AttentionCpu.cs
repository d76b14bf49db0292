// The CPU accelerator's attention bodies (causal or not), reached through [External] so that they run as plain .NET
// code: the same loops as the portable kernels in Attention.cs (the definition), in the same order (online
// softmax with the running maximum and sum, log-sum-exp saved; backward recomputes P from it), but every
// Dh-long dot product and row update is a Vector256 FMA loop over refs. Measured reason: the portable
// attention took ~53% of a tiny-preset training step on the CPU accelerator (~0.2 GFLOP/s through the
// ArrayView indexer). Short sequences take the transposed path of AttentionCpu.Short.cs instead. Never compiled for GPUs.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD attention (causal or not) over CPU memory and the kernels that call it, which <see cref="AttentionKernels"/> loads in
/// place of its portable kernels on the CPU accelerator with 256-bit vectors (the bodies cannot compile for GPUs).</summary>
internal static partial class AttentionCpu
{
    // q, k, v: [B*H*T, Dh] -> o: [B*H*T, Dh], lse: [B*H*T]; one index per worker, whose chunks of query rows the body processes
    internal static void ForwardKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> lse)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Forward(s, q, k, v, o, lse, st, work.End(st));
    }

    // q, k, v, o, dO: [B*H*T, Dh], lse: [B*H*T] -> delta: [B*H*T], dQ: [B*H*T, Dh]; worker w's chunks of query rows
    internal static void BackwardQueryKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> o, ArrayView<float> dO, ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dQ)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) BackwardQuery(s, q, k, v, o, dO, lse, delta, dQ, st, work.End(st));
    }

    // q, k, v, dO: [B*H*T, Dh], lse, delta: [B*H*T] -> dK, dV: [B*H*T, Dh]; worker w's chunks of key rows
    internal static void BackwardKeyKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> dO, ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dK, ArrayView<float> dV)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) BackwardKey(s, q, k, v, dO, lse, delta, dK, dV, st, work.End(st));
    }

    // The rows' operands may be empty (Dh = 0): the bodies then read no row, only lse and delta.

    /// <summary>Rows <c>[start, end)</c> of <see cref="AttentionKernels"/>' forward: o and lse of each query row.</summary>
    [External("peer_attention_forward_cpu")]
    public static void Forward(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> lse, int start, int end)
    {
        if (ShortRows(s))
        {
            ForwardShort(s, q, k, v, o, lse, start, end);
            return;
        }
        int dh = s.Dh;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), o0 = ref CpuView.First(o), lse0 = ref lse[0];
        for (int r = start; r < end; r++)
        {
            int i = r % s.T, first = r - i;
            ref float qi = ref Row(ref q0, r, dh);
            ref float oi = ref Row(ref o0, r, dh);
            CpuView.Fill(ref oi, 0f, dh);
            float m = float.NegativeInfinity, l = 0f;
            for (int j = 0, last = s.LastKey(i); j <= last; j++)
            {
                float score = Dot(ref qi, ref Row(ref k0, first + j, dh), dh) * s.Scale;
                if (score > m)
                {
                    float corr = MathF.Exp(m - score);
                    l *= corr;
                    Scale(ref oi, corr, dh);
                    m = score;
                }
                float p = MathF.Exp(score - m);
                l += p;
                Axpy(ref oi, p, ref Row(ref v0, first + j, dh), dh);
            }
            Scale(ref oi, 1f / l, dh);
            Unsafe.Add(ref lse0, r) = m + MathF.Log(l);
        }
    }

    /// <summary>Rows <c>[start, end)</c> of <see cref="AttentionKernels"/>' query backward: delta and dQ of each query row.</summary>
    [External("peer_attention_backward_query_cpu")]
    public static void BackwardQuery(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dQ, int start, int end)
    {
        if (ShortRows(s))
        {
            BackwardQueryShort(s, q, k, v, o, dO, lse, delta, dQ, start, end);
            return;
        }
        int dh = s.Dh;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), o0 = ref CpuView.First(o), dO0 = ref CpuView.First(dO);
        ref float lse0 = ref lse[0], delta0 = ref delta[0], dQ0 = ref CpuView.First(dQ);
        for (int r = start; r < end; r++)
        {
            int i = r % s.T, first = r - i;
            ref float qi = ref Row(ref q0, r, dh);
            ref float gi = ref Row(ref dO0, r, dh);
            ref float dqi = ref Row(ref dQ0, r, dh);
            float di = Dot(ref gi, ref Row(ref o0, r, dh), dh), l = Unsafe.Add(ref lse0, r);
            Unsafe.Add(ref delta0, r) = di;
            CpuView.Fill(ref dqi, 0f, dh);
            for (int j = 0, last = s.LastKey(i); j <= last; j++)
            {
                ref float kj = ref Row(ref k0, first + j, dh);
                float p = MathF.Exp(Dot(ref qi, ref kj, dh) * s.Scale - l);
                float ds = p * (Dot(ref gi, ref Row(ref v0, first + j, dh), dh) - di) * s.Scale;
                Axpy(ref dqi, ds, ref kj, dh);
            }
        }
    }

    /// <summary>Rows <c>[start, end)</c> of <see cref="AttentionKernels"/>' key backward: dK and dV of each key row.</summary>
    [External("peer_attention_backward_key_cpu")]
    public static void BackwardKey(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dK, ArrayView<float> dV, int start, int end)
    {
        if (ShortRows(s))
        {
            BackwardKeyShort(s, q, k, v, dO, lse, delta, dK, dV, start, end);
            return;
        }
        int dh = s.Dh;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), dO0 = ref CpuView.First(dO);
        ref float lse0 = ref lse[0], delta0 = ref delta[0], dK0 = ref CpuView.First(dK), dV0 = ref CpuView.First(dV);
        for (int r = start; r < end; r++)
        {
            int j = r % s.T, first = r - j;
            ref float kj = ref Row(ref k0, r, dh);
            ref float vj = ref Row(ref v0, r, dh);
            ref float dkj = ref Row(ref dK0, r, dh);
            ref float dvj = ref Row(ref dV0, r, dh);
            CpuView.Fill(ref dkj, 0f, dh);
            CpuView.Fill(ref dvj, 0f, dh);
            for (int i = s.FirstQuery(j); i < s.T; i++)
            {
                int qr = first + i;
                ref float qi = ref Row(ref q0, qr, dh);
                ref float gi = ref Row(ref dO0, qr, dh);
                float p = MathF.Exp(Dot(ref qi, ref kj, dh) * s.Scale - Unsafe.Add(ref lse0, qr));
                float ds = p * (Dot(ref gi, ref vj, dh) - Unsafe.Add(ref delta0, qr)) * s.Scale;
                Axpy(ref dkj, ds, ref qi, dh);
                Axpy(ref dvj, p, ref gi, dh);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ref float Row(ref float x0, int row, int dh) => ref Unsafe.Add(ref x0, (nint)row * dh);

    // Σ_c a[c] b[c]: eight lanes with FMA, then the lanes summed, then the tail in order
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(ref float a, ref float b, int n)
    {
        int c = 0;
        float acc = 0f;
        if (n >= 8)
        {
            var sum = Vector256<float>.Zero;
            for (; c <= n - 8; c += 8)
                sum = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref a, (nuint)c), Vector256.LoadUnsafe(ref b, (nuint)c), sum);
            acc = Vector256.Sum(sum);
        }
        for (; c < n; c++) acc += Unsafe.Add(ref a, c) * Unsafe.Add(ref b, c);
        return acc;
    }

    // y[c] += alpha x[c]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Axpy(ref float y, float alpha, ref float x, int n)
    {
        int c = 0;
        var a = Vector256.Create(alpha);
        for (; c <= n - 8; c += 8)
            Vector256.FusedMultiplyAdd(a, Vector256.LoadUnsafe(ref x, (nuint)c), Vector256.LoadUnsafe(ref y, (nuint)c)).StoreUnsafe(ref y, (nuint)c);
        for (; c < n; c++) Unsafe.Add(ref y, c) += alpha * Unsafe.Add(ref x, c);
    }

    // y[c] *= alpha
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Scale(ref float y, float alpha, int n)
    {
        int c = 0;
        var a = Vector256.Create(alpha);
        for (; c <= n - 8; c += 8) (a * Vector256.LoadUnsafe(ref y, (nuint)c)).StoreUnsafe(ref y, (nuint)c);
        for (; c < n; c++) Unsafe.Add(ref y, c) *= alpha;
    }
}
