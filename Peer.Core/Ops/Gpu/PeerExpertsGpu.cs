// The fused PEER experts shaped for GPUs: a group of threads per token instead of one thread (PeerExperts.cs, the
// definition, whose parallelism is only T). Slots (the token's h*k retrieved experts) go a group at a time: each thread
// takes one slot and computes its dot product with the token (the down projection in the forward, up . dY in the
// backward) in the definition's order, the group shares the slots' rows and coefficients in shared memory, then each
// thread takes columns of the output row (coalesced reads of the expert rows) and adds the slots' terms in the
// definition's order and grouping (four slots at a time from each multiple of four). So the results are the
// definition's, bit for bit, on a backend that evaluates the same float operations (tests: the CPU accelerator and PoCL).
// Parallelism T * groupSize; per thread a few registers, per group 2 * groupSize words of shared memory.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Grouped fused-expert kernels for GPUs (<see cref="PeerExpertKernels"/> chooses them where groups hold <see cref="GroupSize"/> threads).</summary>
internal sealed class PeerExpertsGpu
{
    /// <summary>Threads per group on GPUs: four warps of 32, one slot each (h*k = 128 slots in one round at h = 8, k = 16).</summary>
    public const int GroupSize = 128;
    /// <summary>The largest group the kernels' shared memory holds.</summary>
    public const int MaxGroupSize = 256;

    readonly int groupSize;
    readonly Action<KernelConfig, ExpertShape, int, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>> forward;
    readonly Action<KernelConfig, ExpertShape, int, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> backward;

    public PeerExpertsGpu(Device d, int groupSize)
    {
        // A multiple of 4 keeps each round's slots aligned with the definition's groups of four.
        Check.That(groupSize > 0 && groupSize % 4 == 0 && groupSize <= MaxGroupSize && groupSize <= d.MaxGroupSize, nameof(groupSize), groupSize,
            $"a positive multiple of 4 up to {Math.Min(MaxGroupSize, d.MaxGroupSize)} (this device's largest group, and the kernels' shared memory)");
        this.groupSize = groupSize;
        forward = d.LoadGroupedKernel<Action<KernelConfig, ExpertShape, int, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>>>(ForwardKernel);
        backward = d.LoadGroupedKernel<Action<KernelConfig, ExpertShape, int, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>>(BackwardKernel);
    }

    // One group per token (t > 0).
    KernelConfig Config(int t) => new(new Index1D(t), new Index1D(groupSize));

    public void Forward(ExpertShape s, int t, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z) =>
        forward(Config(t), s, t, x, indices, g, down, up, y, z);

    public void Backward(ExpertShape s, int t, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp) =>
        backward(Config(t), s, t, x, indices, g, down, up, z, dY, dX, dG, coefDown, coefUp);

    // grid (groups) x group (G): x: [T, d], indices, g: [T, h*k], down, up: [N, d] -> y: [T, d], z: [T, h*k] (as PeerExpertKernels.ForwardKernel)
    static void ForwardKernel(ExpertShape s, int tokens, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z)
    {
        var rows = SharedMemory.Allocate<int>(MaxGroupSize);
        var coef = SharedMemory.Allocate<float>(MaxGroupSize);
        int lane = Group.IdxX, size = Group.DimX;
        for (int t = Grid.IdxX; t < tokens; t += Grid.DimX)
        {
            int xOff = t * s.D;
            for (int c = lane; c < s.D; c += size) y[xOff + c] = 0f;
            for (int first = 0; first < s.Hk; first += size)
            {
                int slot = first + lane;
                if (slot < s.Hk)
                {
                    int p = t * s.Hk + slot, id = indices[p];
                    bool ok = PeerExpertKernels.InRange(id, s);
                    int rowOff = ok ? id * s.D : 0;
                    float dot = 0f;
                    for (int c = 0; c < s.D; c++) dot += down[rowOff + c] * x[xOff + c];
                    z[p] = dot;
                    rows[lane] = rowOff;
                    coef[lane] = ok ? g[p] * PeerExpertKernels.Act(dot, s.Act) : float.NaN;
                }
                Group.Barrier();
                int count = s.Hk - first < size ? s.Hk - first : size;
                for (int c = lane; c < s.D; c += size) y[xOff + c] = AddTerms(y[xOff + c], count, rows, coef, up, c);
                Group.Barrier();
            }
        }
    }

    // grid x group as the forward: dY: [T, d] -> dX: [T, d], dG, coefDown, coefUp: [T*h*k] (as PeerExpertKernels.BackwardKernel)
    static void BackwardKernel(ExpertShape s, int tokens, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp)
    {
        var rows = SharedMemory.Allocate<int>(MaxGroupSize);
        var dz = SharedMemory.Allocate<float>(MaxGroupSize);
        int lane = Group.IdxX, size = Group.DimX;
        for (int t = Grid.IdxX; t < tokens; t += Grid.DimX)
        {
            int xOff = t * s.D;
            for (int c = lane; c < s.D; c += size) dX[xOff + c] = 0f;
            for (int first = 0; first < s.Hk; first += size)
            {
                int slot = first + lane;
                if (slot < s.Hk)
                {
                    int p = t * s.Hk + slot, id = indices[p];
                    bool ok = PeerExpertKernels.InRange(id, s);
                    int rowOff = ok ? id * s.D : 0;
                    float vdy = 0f;
                    for (int c = 0; c < s.D; c++) vdy += up[rowOff + c] * dY[xOff + c];
                    rows[lane] = rowOff;
                    dz[lane] = PeerExpertKernels.Slot(s, p, ok, vdy, z, g, dG, coefDown, coefUp);
                }
                Group.Barrier();
                int count = s.Hk - first < size ? s.Hk - first : size;
                for (int c = lane; c < s.D; c += size) dX[xOff + c] = AddTerms(dX[xOff + c], count, rows, dz, down, c);
                Group.Barrier();
            }
        }
    }

    // acc + sum over this round's count slots of coef[j] * table[rows[j] + c], four slots per addition as the definition
    // (acc += c0 r0 + c1 r1 + c2 r2 + c3 r3, left to right), then the remaining ones singly.
    static float AddTerms(float acc, int count, ArrayView<int> rows, ArrayView<float> coef, ArrayView<float> table, int c)
    {
        int j = 0;
        for (; j + 4 <= count; j += 4)
            acc += coef[j] * table[rows[j] + c] + coef[j + 1] * table[rows[j + 1] + c] + coef[j + 2] * table[rows[j + 2] + c] + coef[j + 3] * table[rows[j + 3] + c];
        for (; j < count; j++) acc += coef[j] * table[rows[j] + c];
        return acc;
    }
}
