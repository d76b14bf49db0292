// The CPU attention bodies for short sequences (the vision model's 16 to 64 tokens of 16-wide heads). The row-at-a-time
// bodies (AttentionCpu.cs) take one Dh-long dot product per (query, key) pair and sum its eight lanes, which for Dh = 16
// costs more than the two FMAs it sums, and call MathF.Exp once per pair. Here the sequence's keys (or queries) are
// first transposed into a [Dh, T + 8] block on the stack, so that one row's scores against eight keys at a time are Dh
// broadcast FMAs with no lane sums, and the exponentials are Vector256.Exp over eight scores (exp(0) set to 1 exactly; within 3 u of MathF.Exp,
// ActivationsCpu.cs). With all of a row's scores at hand the softmax is taken in two passes (maximum, then exponentials and
// their sum) instead of online; the result is the portable kernels' (Attention.cs) up to float32 rounding, which
// AttentionCpuTests bounds element by element. Used when the transposed blocks fit the stack (ShortRows).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;

namespace Peer;

internal static partial class AttentionCpu
{
    const int ShortFloats = 4096; // one transposed block's floats (16 KB), two per body on the stack

    /// <summary>Whether the bodies take the short-sequence path: a transposed <c>[Dh, T + 8]</c> block fits <see cref="ShortFloats"/>.</summary>
    internal static bool ShortRows(AttentionShape s) => s.Dh > 0 && (long)(s.T + 8) * s.Dh <= ShortFloats;

    static void ForwardShort(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> lse, int start, int end)
    {
        int dh = s.Dh, stride = s.T + 8;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), o0 = ref CpuView.First(o), lse0 = ref lse[0];
        Span<float> kT = stackalloc float[stride * dh];
        Span<float> p = stackalloc float[stride];
        int loaded = -1;
        for (int r = start; r < end; r++)
        {
            int i = r % s.T, first = r - i, n = s.LastKey(i) + 1;
            if (first != loaded) Transpose(ref Row(ref k0, first, dh), s.T, dh, kT, stride);
            loaded = first;
            ref float oi = ref Row(ref o0, r, dh);
            Scores(ref Row(ref q0, r, dh), kT, stride, dh, 0, n, s.Scale, p);
            float m = Max(p, 0, n);
            float l = ExpSum(p, 0, n, m);
            WeightedSum(ref oi, p, 0, n, ref Row(ref v0, first, dh), dh);
            Scale(ref oi, 1f / l, dh);
            Unsafe.Add(ref lse0, r) = m + MathF.Log(l);
        }
    }

    static void BackwardQueryShort(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dQ, int start, int end)
    {
        int dh = s.Dh, stride = s.T + 8;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), o0 = ref CpuView.First(o), dO0 = ref CpuView.First(dO);
        ref float lse0 = ref lse[0], delta0 = ref delta[0], dQ0 = ref CpuView.First(dQ);
        Span<float> kT = stackalloc float[stride * dh];
        Span<float> vT = stackalloc float[stride * dh];
        Span<float> p = stackalloc float[stride];
        Span<float> dp = stackalloc float[stride];
        int loaded = -1;
        for (int r = start; r < end; r++)
        {
            int i = r % s.T, first = r - i, n = s.LastKey(i) + 1;
            if (first != loaded)
            {
                Transpose(ref Row(ref k0, first, dh), s.T, dh, kT, stride);
                Transpose(ref Row(ref v0, first, dh), s.T, dh, vT, stride);
            }
            loaded = first;
            ref float gi = ref Row(ref dO0, r, dh);
            ref float dqi = ref Row(ref dQ0, r, dh);
            float di = DotInOrder(ref gi, ref Row(ref o0, r, dh), dh);
            Unsafe.Add(ref delta0, r) = di;
            Scores(ref Row(ref q0, r, dh), kT, stride, dh, 0, n, s.Scale, p);
            Scores(ref gi, vT, stride, dh, 0, n, 1f, dp);
            // p_j = exp(score_j - lse_i), and dp_j becomes dS_j = p_j (dO_i · v_j - delta_i) scale, eight keys at a time
            var l = Vector256.Create(Unsafe.Add(ref lse0, r));
            var dv = Vector256.Create(di);
            var sc = Vector256.Create(s.Scale);
            for (int j = 0; j < n; j += 8)
            {
                var pj = Exp(Vector256.Create(p[j..]) - l);
                (pj * (Vector256.Create(dp[j..]) - dv) * sc).CopyTo(dp[j..]);
            }
            WeightedSum(ref dqi, dp, 0, n, ref Row(ref k0, first, dh), dh);
        }
    }

    static void BackwardKeyShort(AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dK, ArrayView<float> dV, int start, int end)
    {
        int dh = s.Dh, stride = s.T + 8;
        ref float q0 = ref CpuView.First(q), k0 = ref CpuView.First(k), v0 = ref CpuView.First(v), dO0 = ref CpuView.First(dO);
        ref float lse0 = ref lse[0], delta0 = ref delta[0], dK0 = ref CpuView.First(dK), dV0 = ref CpuView.First(dV);
        Span<float> qT = stackalloc float[stride * dh];
        Span<float> gT = stackalloc float[stride * dh];
        Span<float> p = stackalloc float[stride];
        Span<float> ds = stackalloc float[stride];
        Span<float> seqLse = stackalloc float[stride];   // the sequence's lse and delta, padded so that eight-wide loads stay inside
        Span<float> seqDelta = stackalloc float[stride];
        int loaded = -1;
        for (int r = start; r < end; r++)
        {
            int j = r % s.T, first = r - j, lo = s.FirstQuery(j);
            if (first != loaded)
            {
                Transpose(ref Row(ref q0, first, dh), s.T, dh, qT, stride);
                Transpose(ref Row(ref dO0, first, dh), s.T, dh, gT, stride);
                for (int i = 0; i < s.T; i++)
                {
                    seqLse[i] = Unsafe.Add(ref lse0, first + i);
                    seqDelta[i] = Unsafe.Add(ref delta0, first + i);
                }
            }
            loaded = first;
            ref float dkj = ref Row(ref dK0, r, dh);
            ref float dvj = ref Row(ref dV0, r, dh);
            Scores(ref Row(ref k0, r, dh), qT, stride, dh, lo, s.T, s.Scale, p);
            Scores(ref Row(ref v0, r, dh), gT, stride, dh, lo, s.T, 1f, ds);
            // p_i = exp(score_i - lse_i), dS_i = p_i (dO_i · v_j - delta_i) scale, eight queries at a time
            var sc = Vector256.Create(s.Scale);
            for (int i = lo; i < s.T; i += 8)
            {
                var pi = Exp(Vector256.Create(p[i..]) - Vector256.Create(seqLse[i..]));
                pi.CopyTo(p[i..]);
                (pi * (Vector256.Create(ds[i..]) - Vector256.Create(seqDelta[i..])) * sc).CopyTo(ds[i..]);
            }
            WeightedSum(ref dkj, ds, lo, s.T, ref Row(ref q0, first, dh), dh);
            WeightedSum(ref dvj, p, lo, s.T, ref Row(ref dO0, first, dh), dh);
        }
    }

    // xT[c * stride + j] = x[j * dh + c] for the t rows of a sequence
    static void Transpose(ref float x, int t, int dh, Span<float> xT, int stride)
    {
        for (int j = 0; j < t; j++)
        {
            ref float row = ref Unsafe.Add(ref x, (nint)j * dh);
            for (int c = 0; c < dh; c++) xT[c * stride + j] = Unsafe.Add(ref row, c);
        }
    }

    // s[j] = scale Σ_c a[c] xT[c, j] for j in [lo, hi), sixteen then eight at a time (two independent FMA chains hide the
    // FMA latency): the last step writes up to 7 entries past hi (inside the T + 8 padding; never read as scores). Each s[j]
    // sums over c in order, one FMA per c.
    static void Scores(ref float a, Span<float> xT, int stride, int dh, int lo, int hi, float scale, Span<float> s)
    {
        ref float t0 = ref xT[0];
        var sc = Vector256.Create(scale);
        int j = lo;
        for (; j + 8 < hi; j += 16)
        {
            Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero;
            for (int c = 0; c < dh; c++)
            {
                var ac = Vector256.Create(Unsafe.Add(ref a, c));
                acc0 = Vector256.FusedMultiplyAdd(ac, Vector256.LoadUnsafe(ref t0, (nuint)(c * stride + j)), acc0);
                acc1 = Vector256.FusedMultiplyAdd(ac, Vector256.LoadUnsafe(ref t0, (nuint)(c * stride + j + 8)), acc1);
            }
            (acc0 * sc).CopyTo(s[j..]);
            (acc1 * sc).CopyTo(s[(j + 8)..]);
        }
        for (; j < hi; j += 8)
        {
            var acc = Vector256<float>.Zero;
            for (int c = 0; c < dh; c++)
                acc = Vector256.FusedMultiplyAdd(Vector256.Create(Unsafe.Add(ref a, c)), Vector256.LoadUnsafe(ref t0, (nuint)(c * stride + j)), acc);
            (acc * sc).CopyTo(s[j..]);
        }
    }

    // y[c] = Σ_{j in [lo, hi)} w[j] x[j, c] over the rows x[j] = x0 + j dh, each sum in order of j with FMAs; the sums of
    // sixteen, then eight columns are kept in registers across all j (an Axpy per row would store and reload y every time).
    static void WeightedSum(ref float y, Span<float> w, int lo, int hi, ref float x0, int dh)
    {
        int c = 0;
        for (; c + 16 <= dh; c += 16)
        {
            Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero;
            for (int j = lo; j < hi; j++)
            {
                var wj = Vector256.Create(w[j]);
                ref float xr = ref Row(ref x0, j, dh);
                a0 = Vector256.FusedMultiplyAdd(wj, Vector256.LoadUnsafe(ref xr, (nuint)c), a0);
                a1 = Vector256.FusedMultiplyAdd(wj, Vector256.LoadUnsafe(ref xr, (nuint)(c + 8)), a1);
            }
            a0.StoreUnsafe(ref y, (nuint)c);
            a1.StoreUnsafe(ref y, (nuint)(c + 8));
        }
        for (; c + 8 <= dh; c += 8)
        {
            var a0 = Vector256<float>.Zero;
            for (int j = lo; j < hi; j++) a0 = Vector256.FusedMultiplyAdd(Vector256.Create(w[j]), Vector256.LoadUnsafe(ref Row(ref x0, j, dh), (nuint)c), a0);
            a0.StoreUnsafe(ref y, (nuint)c);
        }
        for (; c < dh; c++)
        {
            float acc = 0f;
            for (int j = lo; j < hi; j++) acc = MathF.FusedMultiplyAdd(w[j], Unsafe.Add(ref x0, (nint)j * dh + c), acc);
            Unsafe.Add(ref y, c) = acc;
        }
    }

    // max of s[lo, hi), hi > lo
    static float Max(Span<float> s, int lo, int hi)
    {
        float m = float.NegativeInfinity;
        for (int j = lo; j < hi; j++) m = MathF.Max(m, s[j]);
        return m;
    }

    // s[j] = exp(s[j] - m) for j in [lo, hi) (eight at a time, as Scores), and their sum
    static float ExpSum(Span<float> s, int lo, int hi, float m)
    {
        var mv = Vector256.Create(m);
        for (int j = lo; j < hi; j += 8) Exp(Vector256.Create(s[j..]) - mv).CopyTo(s[j..]);
        float l = 0f;
        for (int j = lo; j < hi; j++) l += s[j];
        return l;
    }

    // Vector256.Exp with exp(0) = 1 exactly (Vector256.Exp(0) is 1.0000001): the row's largest score then weighs exactly 1, so
    // that a row with one key (a single token, or the first query under the mask) gets o = v and lse = its score bit for bit,
    // and its backward p = 1 and dS = 0 exactly, as the portable kernels (MathF.Exp) give; otherwise the rounding of exp(0)
    // leaves dQ and dK of such rows small non-zero values where they are zero.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Exp(Vector256<float> x) =>
        Vector256.ConditionalSelect(Vector256.Equals(x, Vector256<float>.Zero), Vector256<float>.One, Vector256.Exp(x));

    // Σ_c a[c] b[c], one FMA per c in order: the same rounding as Scores' lanes, so that delta_i = dO_i · o_i equals dO_i · v_j
    // bit for bit when o_i = v_j (a single key), and dS_ij = p (dO_i · v_j - delta_i) scale is exactly 0 there.
    static float DotInOrder(ref float a, ref float b, int n)
    {
        float acc = 0f;
        for (int c = 0; c < n; c++) acc = MathF.FusedMultiplyAdd(Unsafe.Add(ref a, c), Unsafe.Add(ref b, c), acc);
        return acc;
    }
}
