// The CPU accelerator's bodies for the PEER router (softmax or sigmoid over each head's k kept scores, and its backward) and
// the expert ids' range check, reached through [External] so that they read and write through plain references instead of
// the bounds-checked ArrayView indexer. Measured reason: at the vision preset's PEER shapes (T*h = 8192 groups of k = 4,
// 32768 ids) the three portable kernels took ~1.9, ~1.4 and ~1.2 ms per call on the CPU accelerator (the profiler), more
// than the fused experts' forward. Same formulas in the same order as the portable kernels in PeerExperts.cs (the
// definition), XMath.Exp included, so the results are identical bits.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Plain-C# router and range-check bodies over CPU memory and the kernels that call them, which
/// <see cref="PeerExpertKernels"/> loads in place of its portable router and range-check kernels on the CPU accelerator (the
/// bodies cannot compile for GPUs).</summary>
internal static class PeerRouterCpu
{
    // scores: [groups, k] -> g: [groups, k]; worker w's chunks of groups
    internal static void RouterKernel(Index1D w, Work work, ArrayView<float> scores, ArrayView<float> g, int k, int sigmoid)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Router(scores, g, k, sigmoid, st, work.End(st));
    }

    // g, dG: [groups, k] -> dS: [groups, k]; worker w's chunks of groups
    internal static void RouterBackwardKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> dG, ArrayView<float> dS, int k, int sigmoid)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) RouterBackward(g, dG, dS, k, sigmoid, st, work.End(st));
    }

    // indices: [P] -> counts[b]: ids outside [0, n) in block b = [b*len, (b+1)*len)
    internal static void OutOfRangeKernel(Index1D b, ArrayView<int> indices, ArrayView<int> counts, int len, int n) =>
        OutOfRange(indices, counts, len, n, b);

    /// <summary>Groups <c>[from, to)</c> of the router: a softmax over each group's k scores (max, exponentials and their sum,
    /// then a product by the sum's reciprocal), or an elementwise sigmoid.</summary>
    [External("peer_router_cpu")]
    public static void Router(ArrayView<float> scores, ArrayView<float> g, int k, int sigmoid, int from, int to)
    {
        ref float s0 = ref scores[0], g0 = ref g[0];
        for (int grp = from; grp < to; grp++)
        {
            ref float s = ref Unsafe.Add(ref s0, (nint)grp * k);
            ref float o = ref Unsafe.Add(ref g0, (nint)grp * k);
            if (sigmoid != 0)
            {
                for (int m = 0; m < k; m++) Unsafe.Add(ref o, m) = 1f / (1f + XMath.Exp(-Unsafe.Add(ref s, m)));
                continue;
            }
            float max = s;
            for (int m = 1; m < k; m++) max = XMath.Max(max, Unsafe.Add(ref s, m));
            float sum = 0f;
            for (int m = 0; m < k; m++)
            {
                float ex = XMath.Exp(Unsafe.Add(ref s, m) - max);
                Unsafe.Add(ref o, m) = ex;
                sum += ex;
            }
            float inv = 1f / sum;
            for (int m = 0; m < k; m++) Unsafe.Add(ref o, m) *= inv;
        }
    }

    /// <summary>Groups <c>[from, to)</c> of the router's backward: softmax <c>dS = g * (dG - sum(g * dG))</c>, sigmoid
    /// <c>dS = dG * g * (1 - g)</c>.</summary>
    [External("peer_router_backward_cpu")]
    public static void RouterBackward(ArrayView<float> g, ArrayView<float> dG, ArrayView<float> dS, int k, int sigmoid, int from, int to)
    {
        ref float g0 = ref g[0], d0 = ref dG[0], o0 = ref dS[0];
        for (int grp = from; grp < to; grp++)
        {
            nint off = (nint)grp * k;
            ref float gg = ref Unsafe.Add(ref g0, off), dg = ref Unsafe.Add(ref d0, off), o = ref Unsafe.Add(ref o0, off);
            if (sigmoid != 0)
            {
                for (int m = 0; m < k; m++) Unsafe.Add(ref o, m) = Unsafe.Add(ref dg, m) * Unsafe.Add(ref gg, m) * (1f - Unsafe.Add(ref gg, m));
                continue;
            }
            float dot = 0f;
            for (int m = 0; m < k; m++) dot += Unsafe.Add(ref gg, m) * Unsafe.Add(ref dg, m);
            for (int m = 0; m < k; m++) Unsafe.Add(ref o, m) = Unsafe.Add(ref gg, m) * (Unsafe.Add(ref dg, m) - dot);
        }
    }

    /// <summary>Block <paramref name="b"/> of the range check: how many of ids <c>[b*len, min((b+1)*len, P))</c> lie outside [0, n).</summary>
    [External("peer_out_of_range_cpu")]
    public static void OutOfRange(ArrayView<int> indices, ArrayView<int> counts, int len, int n, int b)
    {
        int p = (int)indices.Length, from = b * len, to = from + len < p ? from + len : p, c = 0;
        ref int i0 = ref indices[0];
        for (int i = from; i < to; i++)
            if ((uint)Unsafe.Add(ref i0, i) >= (uint)n) c++;
        counts[b] = c;
    }
}
