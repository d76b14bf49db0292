// Multi-head scaled dot-product attention as fused kernels, causal (each query sees the keys at or before it, the
// language model's) or not (each query sees every key of its sequence, the vision model's). Forward: one work item per
// (batch, head, query row) streams over the keys it sees with an online softmax (running maximum and sum, the output
// row rescaled when the maximum grows), and saves the row's log-sum-exp. Backward recomputes probabilities from
// the log-sum-exp: one pass per query row (dQ and D = dO·O), one pass per key row (dK, dV), no atomics.
// These kernels are the definition; on the CPU accelerator the launcher loads the same loops as SIMD bodies (Cpu/AttentionCpu.cs).
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Causal scaled dot-product attention per batch and head: for <paramref name="q"/>, <paramref name="k"/>, <paramref name="v"/>
    /// <c>[B, H, T, Dh]</c>, <c>y[b, h, i] = Σ_{j ≤ i} softmax_j(q_i · k_j / sqrt(Dh)) v_j</c>, result <c>[B, H, T, Dh]</c>.
    /// Differentiable in all three inputs. The same as <see cref="Attention"/> with <c>causal: true</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Operands not F32 or on different devices, q not rank 4, or k, v shaped differently from q.</exception>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v) => Attention(q, k, v, causal: true);

    /// <summary>
    /// Scaled dot-product attention per batch and head: for <paramref name="q"/>, <paramref name="k"/>, <paramref name="v"/>
    /// <c>[B, H, T, Dh]</c>, <c>y[b, h, i] = Σ_j softmax_j(q_i · k_j / sqrt(Dh)) v_j</c> over the keys <c>j ≤ i</c> when
    /// <paramref name="causal"/>, over all <c>T</c> keys of the sequence when not; result <c>[B, H, T, Dh]</c>. Differentiable in
    /// all three inputs. One fused kernel each way (the scores are never stored), so prefer it to a composition of matrix
    /// products and a softmax.
    /// </summary>
    /// <exception cref="ArgumentException">Operands not F32 or on different devices, q not rank 4, or k, v shaped differently from q.</exception>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, bool causal)
    {
        Check.DType(q, DType.F32, nameof(q));
        Check.DType(k, DType.F32, nameof(k));
        Check.DType(v, DType.F32, nameof(v));
        Check.SameDevice(q, k, nameof(k));
        Check.SameDevice(q, v, nameof(v));
        Check.Rank(q, 4, nameof(q));
        Check.Shape(k, nameof(k), q.Shape);
        Check.Shape(v, nameof(v), q.Shape);
        int t = q.Shape[2], dh = q.Shape[3], rows = q.Shape[0] * q.Shape[1] * t;
        var d = q.Device;
        var kern = d.Get(static d => new AttentionKernels(d));
        var shape = new AttentionShape(t, dh, dh == 0 ? 1f : 1f / MathF.Sqrt(dh), causal);
        var y = Tensor.Empty(d, DType.F32, q.Shape);
        var lse = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
        var w = d.Split(rows);
        if (rows > 0) kern.Forward(w.Workers, w, shape, q.View, k.View, v.View, y.View, lse.View);
        if (!d.Tape.Needs(q, k, v))
        {
            lse.Dispose();
            return y;
        }
        var o = y.Detach();
        d.Tape.Record(y, [q, k, v], g =>
        {
            var dq = Tensor.Empty(d, DType.F32, q.Shape);
            var dk = Tensor.Empty(d, DType.F32, q.Shape);
            var dv = Tensor.Empty(d, DType.F32, q.Shape);
            using var delta = Tensor.Empty(d, DType.F32, Math.Max(rows, 1));
            if (rows > 0)
            {
                kern.BackwardQuery(w.Workers, w, shape, q.View, k.View, v.View, o.View, g.View, lse.View, delta.View, dq.View);
                kern.BackwardKey(w.Workers, w, shape, q.View, k.View, v.View, g.View, lse.View, delta.View, dk.View, dv.View);
            }
            Tape.Accumulate(q, dq);
            Tape.Accumulate(k, dk);
            Tape.Accumulate(v, dv);
        }, o, lse);
        return y;
    }
}

/// <summary>Sequence length, head size, score scale and mask of one attention call.</summary>
internal readonly struct AttentionShape(int t, int dh, float scale, bool causal)
{
    public readonly int T = t, Dh = dh;
    public readonly float Scale = scale;
    /// <summary>1: query i sees keys 0..i; 0: it sees all T keys.</summary>
    public readonly int Causal = causal ? 1 : 0;

    /// <summary>The last key query row <paramref name="i"/> of its sequence sees.</summary>
    public int LastKey(int i) => Causal != 0 ? i : T - 1;

    /// <summary>The first query row that sees key row <paramref name="j"/> of its sequence.</summary>
    public int FirstQuery(int j) => Causal != 0 ? j : 0;
}

/// <summary>Kernels of attention, causal or not: the portable kernels below (the definition), or the SIMD bodies' kernels
/// (Cpu/AttentionCpu.cs) where <see cref="Device.Choose"/> picks them.</summary>
internal sealed class AttentionKernels
{
    public readonly Action<Index1D, Work, AttentionShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> Forward;
    public readonly Action<Index1D, Work, AttentionShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BackwardQuery;
    public readonly Action<Index1D, Work, AttentionShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BackwardKey;

    public AttentionKernels(Device d)
    {
        Forward = d.LoadKernel(ForwardKernel, AttentionCpu.ForwardKernel, 256);
        BackwardQuery = d.LoadKernel(BackwardQueryKernel, AttentionCpu.BackwardQueryKernel, 256);
        BackwardKey = d.LoadKernel(BackwardKeyKernel, AttentionCpu.BackwardKeyKernel, 256);
    }

    static float Dot(ArrayView<float> a, int ao, ArrayView<float> b, int bo, int n)
    {
        float acc = 0f;
        for (int c = 0; c < n; c++) acc += a[ao + c] * b[bo + c];
        return acc;
    }

    // q, k, v: [B*H*T, Dh] -> o: [B*H*T, Dh], lse: [B*H*T]; one query row per item, online softmax over the keys it sees (j <= i when causal)
    static void ForwardKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> lse)
    {
        int dh = s.Dh;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++)
            {
                int i = r % s.T, first = r - i, ro = r * dh;
                float m = float.NegativeInfinity, l = 0f;
                for (int c = 0; c < dh; c++) o[ro + c] = 0f;
                for (int j = 0, last = s.LastKey(i); j <= last; j++)
                {
                    int ko = (first + j) * dh;
                    float score = Dot(q, ro, k, ko, dh) * s.Scale;
                    if (score > m)
                    {
                        float corr = XMath.Exp(m - score);
                        l *= corr;
                        for (int c = 0; c < dh; c++) o[ro + c] *= corr;
                        m = score;
                    }
                    float p = XMath.Exp(score - m);
                    l += p;
                    for (int c = 0; c < dh; c++) o[ro + c] += p * v[ko + c];
                }
                float inv = 1f / l;
                for (int c = 0; c < dh; c++) o[ro + c] *= inv;
                lse[r] = m + XMath.Log(l);
            }
    }

    // per query row i: delta_i = dO_i · O_i; dQ_i = scale Σ_{j seen by i} P_ij (dO_i · v_j - delta_i) k_j, P_ij = exp(q_i·k_j scale - lse_i)
    static void BackwardQueryKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> o, ArrayView<float> dO, ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dQ)
    {
        int dh = s.Dh;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++)
            {
                int i = r % s.T, first = r - i, ro = r * dh;
                float di = Dot(dO, ro, o, ro, dh), l = lse[r];
                delta[r] = di;
                for (int c = 0; c < dh; c++) dQ[ro + c] = 0f;
                for (int j = 0, last = s.LastKey(i); j <= last; j++)
                {
                    int ko = (first + j) * dh;
                    float p = XMath.Exp(Dot(q, ro, k, ko, dh) * s.Scale - l);
                    float ds = p * (Dot(dO, ro, v, ko, dh) - di) * s.Scale;
                    for (int c = 0; c < dh; c++) dQ[ro + c] += ds * k[ko + c];
                }
            }
    }

    // per key row j, over the queries i that see it (i >= j when causal): dK_j = scale Σ_i P_ij (dO_i · v_j - delta_i) q_i, dV_j = Σ_i P_ij dO_i
    static void BackwardKeyKernel(Index1D w, Work work, AttentionShape s, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> dO, ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dK, ArrayView<float> dV)
    {
        int dh = s.Dh;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, e = work.End(st); r < e; r++)
            {
                int j = r % s.T, first = r - j, ko = r * dh;
                for (int c = 0; c < dh; c++) { dK[ko + c] = 0f; dV[ko + c] = 0f; }
                for (int i = s.FirstQuery(j); i < s.T; i++)
                {
                    int qr = first + i, qo = qr * dh;
                    float p = XMath.Exp(Dot(q, qo, k, ko, dh) * s.Scale - lse[qr]);
                    float ds = p * (Dot(dO, qo, v, ko, dh) - delta[qr]) * s.Scale;
                    for (int c = 0; c < dh; c++)
                    {
                        dK[ko + c] += ds * q[qo + c];
                        dV[ko + c] += p * dO[qo + c];
                    }
                }
            }
    }
}
