// Kernels of the MoE routing ops (MoeRouting.cs). Selection kernels take one expert (or one token) per
// work item and write every output they own, so results are deterministic without atomics; the
// data-movement kernels take one row per item.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Kernels of expert-choice and top-k routing, dispatch, combine and the per-expert bias.</summary>
internal sealed class MoeRoutingKernels
{
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<int>, ArrayView<int>> ExpertChoice;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<int>, ArrayView<float>> Choose;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>> Capacity;
    public readonly Action<Index1D, Work, int, ArrayView<float>, ArrayView<int>, ArrayView<float>> Dispatch;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<int>, ArrayView<float>> DispatchBackward;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>> Combine;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>> CombineBackwardOutputs;
    public readonly Action<Index1D, Work, RouteShape, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>> CombineBackwardGates;
    public readonly Action<Index1D, Work, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>> Bias;
    public readonly Action<Index1D, Work, int, int, ArrayView<float>, ArrayView<float>> BiasBackward;

    public MoeRoutingKernels(Device d)
    {
        ExpertChoice = d.LoadKernel(ExpertChoiceKernel);
        Choose = d.LoadKernel(ChooseKernel);
        Capacity = d.LoadKernel(CapacityKernel);
        Dispatch = d.LoadKernel(DispatchKernel);
        DispatchBackward = d.LoadKernel(DispatchBackwardKernel);
        Combine = d.LoadKernel(CombineKernel);
        CombineBackwardOutputs = d.LoadKernel(CombineBackwardOutputsKernel);
        CombineBackwardGates = d.LoadKernel(CombineBackwardGatesKernel);
        Bias = d.LoadKernel(BiasKernel);
        BiasBackward = d.LoadKernel(BiasBackwardKernel);
    }

    // A probability's IEEE bits: for values >= 0 they order as the values do (negative values, which a softmax never
    // gives, are mapped to key 0).
    static int Key(float p)
    {
        int k = (int)Interop.FloatAsInt(p);
        return k < 0 ? 0 : k;
    }

    // probs: [T, E] -> slots: [E, C] (ascending token ids), pos: [T, E]; one expert per item.
    // Radix select, 8 bits at a time from the top, finds the C-th largest key; tokens above it are all taken, tokens
    // equal to it are taken in token order until C slots are full (ties toward the smaller token index).
    static void ExpertChoiceKernel(Index1D w, Work work, RouteShape s, ArrayView<float> probs, ArrayView<int> slots, ArrayView<int> pos)
    {
        var hist = LocalMemory.Allocate<int>(256);
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int e = st, end = work.End(st); e < end; e++)
            {
                int prefix = 0, mask = 0, remaining = s.C;
                for (int shift = 24; shift >= 0; shift -= 8)
                {
                    for (int b = 0; b < 256; b++) hist[b] = 0;
                    for (int t = 0; t < s.T; t++)
                    {
                        int key = Key(probs[t * s.E + e]);
                        if ((key & mask) == prefix) hist[(key >> shift) & 255]++;
                    }
                    // Invariant: at least `remaining` keys match the prefix, so the walk stops at a bin holding enough.
                    int bin = 255;
                    while (bin > 0 && hist[bin] < remaining)
                    {
                        remaining -= hist[bin];
                        bin--;
                    }
                    prefix |= bin << shift;
                    mask |= 255 << shift;
                }
                int c = 0, equal = 0;
                for (int t = 0; t < s.T; t++)
                {
                    int key = Key(probs[t * s.E + e]), p = -1;
                    bool take = key > prefix || (key == prefix && equal < remaining);
                    if (take)
                    {
                        if (key == prefix) equal++;
                        slots[e * s.C + c] = t;
                        p = c;
                        c++;
                    }
                    pos[t * s.E + e] = p;
                }
            }
    }

    // probs: [T, E] -> choice: [T, k] (experts by descending probability, ties to the smaller id), chosen: [T, E] 0/1;
    // one token per item
    static void ChooseKernel(Index1D w, Work work, RouteShape s, ArrayView<float> probs, ArrayView<int> choice, ArrayView<float> chosen)
    {
        var ids = LocalMemory.Allocate<int>(Ops.MoeMaxTopK);
        var best = new ViewTopKList(LocalMemory.Allocate<float>(Ops.MoeMaxTopK), ids);
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
            {
                int count = 0;
                for (int e = 0; e < s.E; e++) count = TopKList.Insert(best, count, s.K, probs[t * s.E + e], e);
                for (int e = 0; e < s.E; e++) chosen[t * s.E + e] = 0f;
                for (int m = 0; m < s.K; m++)
                {
                    choice[t * s.K + m] = ids[m];
                    chosen[t * s.E + ids[m]] = 1f;
                }
            }
    }

    // choice: [T, k] -> slots: [E, C], pos: [T, E], fraction: [E] = choices / (T k); one expert per item, tokens in order
    static void CapacityKernel(Index1D w, Work work, RouteShape s, ArrayView<int> choice, ArrayView<int> slots, ArrayView<int> pos, ArrayView<float> fraction)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int e = st, end = work.End(st); e < end; e++)
            {
                int count = 0;
                for (int t = 0; t < s.T; t++)
                {
                    int p = -1;
                    for (int m = 0; m < s.K; m++)
                        if (choice[t * s.K + m] == e)
                        {
                            if (count < s.C)
                            {
                                slots[e * s.C + count] = t;
                                p = count;
                            }
                            count++;
                        }
                    pos[t * s.E + e] = p;
                }
                for (int c = count < s.C ? count : s.C; c < s.C; c++) slots[e * s.C + c] = -1;
                fraction[e] = count / (float)((long)s.T * s.K);
            }
    }

    // x: [T, d], slots: [E*C] -> y: [E*C, d]; one slot per item
    static void DispatchKernel(Index1D w, Work work, int d, ArrayView<float> x, ArrayView<int> slots, ArrayView<float> y)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, end = work.End(st); r < end; r++)
            {
                int tok = slots[r];
                for (int j = 0; j < d; j++) y[r * d + j] = tok >= 0 ? x[tok * d + j] : 0f;
            }
    }

    // dY: [E*C, d], pos: [T, E] -> dX: [T, d]; one token per item (s.K = d)
    static void DispatchBackwardKernel(Index1D w, Work work, RouteShape s, ArrayView<float> dY, ArrayView<int> pos, ArrayView<float> dX)
    {
        int d = s.K;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
            {
                for (int j = 0; j < d; j++) dX[t * d + j] = 0f;
                for (int e = 0; e < s.E; e++)
                {
                    int p = pos[t * s.E + e];
                    if (p < 0) continue;
                    int off = (e * s.C + p) * d;
                    for (int j = 0; j < d; j++) dX[t * d + j] += dY[off + j];
                }
            }
    }

    // outputs: [E*C, d], gates: [T, E], pos: [T, E] -> y: [T, d]; one token per item (s.K = d)
    static void CombineKernel(Index1D w, Work work, RouteShape s, ArrayView<float> outputs, ArrayView<float> gates, ArrayView<int> pos, ArrayView<float> y)
    {
        int d = s.K;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
            {
                for (int j = 0; j < d; j++) y[t * d + j] = 0f;
                for (int e = 0; e < s.E; e++)
                {
                    int p = pos[t * s.E + e];
                    if (p < 0) continue;
                    float g = gates[t * s.E + e];
                    int off = (e * s.C + p) * d;
                    for (int j = 0; j < d; j++) y[t * d + j] += g * outputs[off + j];
                }
            }
    }

    // gates: [T, E], slots: [E*C], dY: [T, d] -> dOut: [E*C, d]; one slot per item (s.K = d)
    static void CombineBackwardOutputsKernel(Index1D w, Work work, RouteShape s, ArrayView<float> gates, ArrayView<int> slots, ArrayView<float> dY, ArrayView<float> dOut)
    {
        int d = s.K;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, end = work.End(st); r < end; r++)
            {
                int tok = slots[r], e = r / s.C;
                float g = tok >= 0 ? gates[tok * s.E + e] : 0f;
                for (int j = 0; j < d; j++) dOut[r * d + j] = tok >= 0 ? g * dY[tok * d + j] : 0f;
            }
    }

    // outputs: [E*C, d], pos: [T, E], dY: [T, d] -> dG: [T, E]; one token per item (s.K = d)
    static void CombineBackwardGatesKernel(Index1D w, Work work, RouteShape s, ArrayView<float> outputs, ArrayView<int> pos, ArrayView<float> dY, ArrayView<float> dG)
    {
        int d = s.K;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
                for (int e = 0; e < s.E; e++)
                {
                    int p = pos[t * s.E + e];
                    float acc = 0f;
                    if (p >= 0)
                    {
                        int off = (e * s.C + p) * d;
                        for (int j = 0; j < d; j++) acc += outputs[off + j] * dY[t * d + j];
                    }
                    dG[t * s.E + e] = acc;
                }
    }

    // x: [E*C, n], bias: [E, n] -> y: [E*C, n]; one row per item
    static void BiasKernel(Index1D w, Work work, int c, int n, ArrayView<float> x, ArrayView<float> bias, ArrayView<float> y)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int r = st, end = work.End(st); r < end; r++)
            {
                int e = r / c;
                for (int j = 0; j < n; j++) y[r * n + j] = x[r * n + j] + bias[e * n + j];
            }
    }

    // dY: [E, C, n] -> dB: [E, n] summed over C in order; one bias element per item
    static void BiasBackwardKernel(Index1D w, Work work, int c, int n, ArrayView<float> dY, ArrayView<float> dB)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int i = st, end = work.End(st); i < end; i++)
            {
                int e = i / n, j = i - e * n;
                float acc = 0f;
                for (int r = 0; r < c; r++) acc += dY[(e * c + r) * n + j];
                dB[i] = acc;
            }
    }
}
