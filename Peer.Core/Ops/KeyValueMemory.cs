// The read of a product key memory (Lample et al. 2019): y[t] = sum over the token's retrieved slots of
// weight * values[id], reading value rows where they live (nothing of size [T, h, k, d] is built). The
// backward gives the weights' gradient densely and the value table's gradient as a RowSparseGrad of the
// retrieved rows only, summed per row by the deterministic sort-and-segment reduction (SortSegment.cs).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Weighted read of memory rows: <c>y[t] = sum_{j,m} weights[t,j,m] * values[indices[t,j,m]]</c>. Differentiable with respect
    /// to <paramref name="weights"/> (dense: <c>dweights[t,j,m] = values[i] . dy[t]</c>) and <paramref name="values"/> (a
    /// <see cref="RowSparseGrad"/> of the retrieved rows: <c>dvalues[i] = sum over slots holding i of weight * dy[t]</c>).
    /// </summary>
    /// <param name="indices">Memory ids I32 [T, h, k], each in [0, N).</param>
    /// <param name="weights">Weights F32 [T, h, k].</param>
    /// <param name="values">Value table F32 [N, d].</param>
    /// <exception cref="ArgumentException">Wrong dtypes or shapes, different devices, or (where the device checks ids: always on the CPU
    /// accelerator, elsewhere with <see cref="DeviceOptions.CheckIndices"/>) an id outside [0, N). Unchecked, such an id is never used
    /// to read: its token's output and weight gradients are NaN.</exception>
    public static Tensor MemoryRead(Tensor indices, Tensor weights, Tensor values)
    {
        Check.DType(indices, DType.I32, nameof(indices));
        Check.DType(weights, DType.F32, nameof(weights));
        Check.DType(values, DType.F32, nameof(values));
        Check.SameDevice(values, indices, nameof(indices));
        Check.SameDevice(values, weights, nameof(weights));
        Check.Rank(indices, 3, nameof(indices));
        Check.Shape(weights, nameof(weights), indices.Shape);
        Check.Rank(values, 2, nameof(values));
        int n = values.Shape[0], dm = values.Shape[1], t = indices.Shape[0], hk = indices.Shape[1] * indices.Shape[2];
        var d = values.Device;
        // A host check only where it stalls nothing (DeviceOptions.CheckIndices); unchecked, an id outside [0, N) gives NaN.
        if (d.ChecksIndices)
        {
            int bad = CountOutOfRange(indices, n);
            Check.That(bad == 0, nameof(indices), $"{bad} ids outside [0, {n})", $"every memory id in [0, N = {n})");
        }
        var kernels = d.Get(static d => new MemoryReadKernels(d));
        var y = Tensor.Empty(d, DType.F32, t, dm);
        if (y.Length > 0)
        {
            var w = d.Split(t);
            kernels.Forward(w.Workers, w, dm, hk, n, indices.IntView, weights.View, values.View, y.View);
        }
        if (d.Tape.Needs(weights, values))
        {
            var savedIdx = indices.Detach();
            d.Tape.Record(y, [weights, values], dY =>
            {
                if (weights.RequiresGrad)
                {
                    var dW = Tensor.Empty(d, DType.F32, indices.Shape);
                    if (dW.Length > 0)
                    {
                        var w = d.Split(t);
                        kernels.BackwardWeights(w.Workers, w, dm, hk, n, savedIdx.IntView, values.View, dY.View, dW.View);
                    }
                    Tape.Accumulate(weights, dW);
                }
                if (values.RequiresGrad)
                {
                    // Pair p = t*h*k + slot: coefficient weights[p], source row p / (h*k) = t of dY.
                    using var flat = savedIdx.Reshape(t * hk);
                    RowSparseGradients.Accumulate(values, RowSparseGradients.Build(flat, n, dm, (weights, dY, hk, dm, 0))[0]);
                }
            }, savedIdx);
        }
        return y;
    }
}

/// <summary>Kernels of <see cref="Ops.MemoryRead"/>.</summary>
internal sealed class MemoryReadKernels
{
    public readonly Action<Index1D, Work, int, int, int, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>> Forward;
    public readonly Action<Index1D, Work, int, int, int, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>> BackwardWeights;

    public MemoryReadKernels(Device d)
    {
        Forward = d.LoadKernel(ForwardKernel);
        BackwardWeights = d.LoadKernel(BackwardWeightsKernel);
    }

    // indices, weights: [T, hk], values: [N, d] -> y: [T, d]; one token per item (an id outside [0, N) reads row 0 and adds NaN)
    static void ForwardKernel(Index1D w, Work work, int d, int hk, int n, ArrayView<int> indices, ArrayView<float> weights, ArrayView<float> values, ArrayView<float> y)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
            {
                for (int j = 0; j < d; j++) y[t * d + j] = 0f;
                for (int slot = 0; slot < hk; slot++)
                {
                    int p = t * hk + slot, id = indices[p];
                    bool ok = (uint)id < (uint)n;
                    int row = ok ? id * d : 0;
                    float g = ok ? weights[p] : float.NaN;
                    for (int j = 0; j < d; j++) y[t * d + j] += g * values[row + j];
                }
            }
    }

    // indices: [T, hk], values: [N, d], dY: [T, d] -> dW: [T, hk]; one token per item
    static void BackwardWeightsKernel(Index1D w, Work work, int d, int hk, int n, ArrayView<int> indices, ArrayView<float> values, ArrayView<float> dY, ArrayView<float> dW)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, end = work.End(st); t < end; t++)
                for (int slot = 0; slot < hk; slot++)
                {
                    int p = t * hk + slot, id = indices[p];
                    bool ok = (uint)id < (uint)n;
                    int row = ok ? id * d : 0;
                    float acc = 0f;
                    for (int j = 0; j < d; j++) acc += values[row + j] * dY[t * d + j];
                    dW[p] = ok ? acc : float.NaN;
                }
    }
}
