// PEER router weights and the fused singleton experts (docs/peer-spec.md, steps 5-7):
// y[t] = sum_j sum_m g[t,j,m] * act(down[i] . x[t]) * up[i], i = indices[t,j,m], reading expert rows where
// they live: nothing of size [T, h, k, d] is ever materialised. The backward gives dx and d(g) densely,
// and the gradients of only the retrieved rows of experts.down/up as RowSparseGrad, summed per row by a
// sort-and-segment reduction (SortSegment.cs), so a step costs O(T*h*k*d) whatever N is.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer;

/// <summary>The expert activation of a PEER layer.</summary>
public enum PeerActivation
{
    /// <summary>GELU, exact erf form: <c>0.5 z (1 + erf(z / sqrt 2))</c> (the default).</summary>
    Gelu,
    /// <summary>ReLU: <c>max(z, 0)</c>.</summary>
    Relu,
}

/// <summary>How a PEER head turns its k kept scores into router weights.</summary>
public enum PeerRouter
{
    /// <summary>Softmax over the head's k kept scores (the paper's choice, the default).</summary>
    Softmax,
    /// <summary>Independent logistic sigmoid of each kept score.</summary>
    Sigmoid,
}

public static partial class Ops
{
    /// <summary>
    /// Router weights from kept scores F32 [T, h, k]: softmax over the last dimension
    /// (<c>g_m = exp(s_m - max s) / sum exp(s - max s)</c>) or an elementwise sigmoid. Differentiable.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="scores"/> is not an F32 rank-3 tensor.</exception>
    public static Tensor PeerRouterWeights(Tensor scores, PeerRouter router = PeerRouter.Softmax)
    {
        Check.DType(scores, DType.F32, nameof(scores));
        Check.Rank(scores, 3, nameof(scores));
        var d = scores.Device;
        int k = scores.Shape[2], groups = scores.Shape[0] * scores.Shape[1];
        int sigmoid = router == PeerRouter.Sigmoid ? 1 : 0;
        var g = Tensor.Empty(d, DType.F32, scores.Shape);
        var kernels = d.Get(static d => new PeerExpertKernels(d));
        if (g.Length > 0)
        {
            var w = d.Split(groups);
            kernels.Router(w.Workers, w, scores.View, g.View, k, sigmoid);
        }
        if (d.Tape.Needs(scores))
        {
            var savedG = g.Detach();
            d.Tape.Record(g, [scores], dG =>
            {
                var dS = Tensor.Empty(d, DType.F32, scores.Shape);
                if (dS.Length > 0)
                {
                    var w = d.Split(groups);
                    kernels.RouterBackward(w.Workers, w, savedG.View, dG.View, dS.View, k, sigmoid);
                }
                Tape.Accumulate(scores, dS);
            }, savedG);
        }
        return g;
    }

    /// <summary>
    /// Fused PEER experts: <c>y[t] = sum_{j,m} weights[t,j,m] * act(down[i] . x[t]) * up[i]</c> with <c>i = indices[t,j,m]</c>.
    /// Differentiable with respect to <paramref name="x"/> and <paramref name="weights"/> (dense gradients) and
    /// <paramref name="down"/>, <paramref name="up"/> (row-sparse gradients of the retrieved rows only, in
    /// <see cref="Tensor.SparseGrad"/>; accumulation is deterministic).
    /// </summary>
    /// <param name="x">Tokens F32 [T, d].</param>
    /// <param name="indices">Expert ids I32 [T, h, k], each in [0, N).</param>
    /// <param name="weights">Router weights F32 [T, h, k].</param>
    /// <param name="down">experts.down F32 [N, d] (u_i).</param>
    /// <param name="up">experts.up F32 [N, d] (v_i).</param>
    /// <param name="activation">GELU (exact) or ReLU.</param>
    /// <exception cref="ArgumentException">Wrong dtypes or shapes, or (where the device checks ids: always on the CPU accelerator, elsewhere
    /// with <see cref="DeviceOptions.CheckIndices"/>) an index outside [0, N). Unchecked, such an index is never used to read: its
    /// token's output and gradients are NaN, and the tables get no gradient from it.</exception>
    public static Tensor PeerExperts(Tensor x, Tensor indices, Tensor weights, Tensor down, Tensor up, PeerActivation activation = PeerActivation.Gelu)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(indices, DType.I32, nameof(indices));
        Check.DType(weights, DType.F32, nameof(weights));
        Check.DType(down, DType.F32, nameof(down));
        Check.DType(up, DType.F32, nameof(up));
        foreach (var (t_, name) in new[] { (indices, nameof(indices)), (weights, nameof(weights)), (down, nameof(down)), (up, nameof(up)) })
            Check.SameDevice(x, t_, name);
        Check.Rank(x, 2, nameof(x));
        Check.Rank(indices, 3, nameof(indices));
        int t = x.Shape[0], dm = x.Shape[1], hk = indices.Shape[1] * indices.Shape[2];
        Check.That(indices.Shape[0] == t, nameof(indices), indices.Shape, $"[T = {t}, h, k] (one row of ids per token of x)");
        Check.Shape(weights, nameof(weights), indices.Shape);
        Check.Rank(down, 2, nameof(down));
        Check.That(down.Shape[1] == dm, nameof(down), down.Shape, $"[N, d = {dm}]");
        Check.Shape(up, nameof(up), down.Shape);
        int nExperts = down.Shape[0];
        var d = x.Device;
        var kernels = d.Get(static d => new PeerExpertKernels(d));
        // A host check only where it stalls nothing (DeviceOptions.CheckIndices); unchecked, an id outside [0, N) gives NaN.
        if (d.ChecksIndices)
        {
            int bad = CountOutOfRange(indices, nExperts);
            Check.That(bad == 0, nameof(indices), $"{bad} ids outside [0, {nExperts})", $"every expert id in [0, N = {nExperts})");
        }

        int act = activation == PeerActivation.Relu ? 1 : 0;
        var y = Tensor.Empty(d, DType.F32, t, dm);
        var z = Tensor.Empty(d, DType.F32, t, hk); // pre-activations, kept for the backward
        var shape = new ExpertShape(dm, hk, act, nExperts);
        if (t > 0 && dm > 0) kernels.RunForward(d, shape, t, x.View, indices.IntView, weights.View, down.View, up.View, y.View, z.View);
        else Ops.Fill(y, 0f);

        if (d.Tape.Needs(x, weights, down, up))
        {
            var savedIdx = indices.Detach();
            d.Tape.Record(y, [x, weights, down, up], dY =>
            {
                var dX = Tensor.Empty(d, DType.F32, t, dm);
                var dG = Tensor.Empty(d, DType.F32, indices.Shape);
                using var coefDown = Tensor.Empty(d, DType.F32, t * hk);
                using var coefUp = Tensor.Empty(d, DType.F32, t * hk);
                if (t > 0)
                    kernels.RunBackward(d, shape, t, x.View, savedIdx.IntView, weights.View, down.View, up.View,
                        z.View, dY.View, dX.View, dG.View, coefDown.View, coefUp.View);
                Tape.Accumulate(x, dX);
                Tape.Accumulate(weights, dG);
                if (down.RequiresGrad || up.RequiresGrad)
                {
                    // Pair p = t*h*k + slot reads row p / (h*k) = t of x (for down) and of dY (for up).
                    using var flat = savedIdx.Reshape(t * hk);
                    var grads = RowSparseGradients.Build(flat, nExperts, dm, (coefDown, x, hk, dm, 0), (coefUp, dY, hk, dm, 0));
                    RowSparseGradients.Accumulate(down, grads[0]);
                    RowSparseGradients.Accumulate(up, grads[1]);
                }
            }, savedIdx, z);
        }
        else z.Dispose();
        return y;
    }

    /// <summary>Number of ids outside [0, n), counted by a kernel (per-block counts summed on the host).</summary>
    internal static int CountOutOfRange(Tensor indices, int n)
    {
        var d = indices.Device;
        var kernels = d.Get(static d => new PeerExpertKernels(d));
        int p = indices.Length;
        if (p == 0) return 0;
        int blocks = Math.Min(p, d.IsCpu ? d.Workers : 1024), len = (p + blocks - 1) / blocks;
        blocks = (p + len - 1) / len;
        using var counts = Tensor.Empty(d, DType.I32, blocks);
        kernels.OutOfRange(blocks, indices.IntView, counts.IntView, len, n);
        return counts.ToIntArray().Sum();
    }
}

/// <summary>Sizes of one fused expert call: model width d, h*k slots per token, activation (0 GELU, 1 ReLU), N experts.</summary>
internal readonly struct ExpertShape(int d, int hk, int act, int n)
{
    public readonly int D = d, Hk = hk, Act = act, N = n;
}

/// <summary>Kernels of the PEER router and fused experts: the portable kernels below (the definition); on the CPU accelerator the
/// fused experts' SIMD bodies (Cpu/PeerExpertsCpu.cs) and the router's and range check's plain bodies (Cpu/PeerRouterCpu.cs) where
/// <see cref="Device.Choose"/> picks them; on GPUs the grouped kernels of
/// Gpu/PeerExpertsGpu.cs (a group of threads per token instead of one thread).</summary>
internal sealed class PeerExpertKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, int, int> Router;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> RouterBackward;
    public readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int, int> OutOfRange;
    readonly Action<Index1D, Work, ExpertShape, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>? forward;
    readonly Action<Index1D, Work, ExpertShape, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>? backward;
    readonly PeerExpertsGpu? grouped;

    /// <summary>The kernels for <paramref name="d"/>: grouped on GPUs whose groups hold <see cref="PeerExpertsGpu.GroupSize"/> threads,
    /// one token per item elsewhere.</summary>
    public PeerExpertKernels(Device d) : this(d, !d.ChunksWork && d.MaxGroupSize >= PeerExpertsGpu.GroupSize ? PeerExpertsGpu.GroupSize : 0) { }

    /// <summary>The kernels with the fused experts grouped in groups of <paramref name="groupSize"/> threads (a multiple of 4, at most
    /// <see cref="PeerExpertsGpu.MaxGroupSize"/>), or one token per item with 0; tests run the grouped kernels on CPU devices.</summary>
    internal PeerExpertKernels(Device d, int groupSize)
    {
        Router = d.LoadKernel(RouterKernel, PeerRouterCpu.RouterKernel, 0);
        RouterBackward = d.LoadKernel(RouterBackwardKernel, PeerRouterCpu.RouterBackwardKernel, 0);
        OutOfRange = d.LoadKernel(OutOfRangeKernel, PeerRouterCpu.OutOfRangeKernel, 0);
        if (groupSize > 0) grouped = new PeerExpertsGpu(d, groupSize);
        else
        {
            forward = d.LoadKernel(ForwardKernel, PeerExpertsCpu.ForwardKernel, 256);
            backward = d.LoadKernel(BackwardKernel, PeerExpertsCpu.BackwardKernel, 256);
        }
    }

    /// <summary>The fused forward over <paramref name="t"/> tokens (see <see cref="ForwardKernel"/>).</summary>
    public void RunForward(Device d, ExpertShape s, int t, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z)
    {
        if (grouped is not null) grouped.Forward(s, t, x, indices, g, down, up, y, z);
        else
        {
            var w = d.Split(t);
            forward!(w.Workers, w, s, x, indices, g, down, up, y, z);
        }
    }

    /// <summary>The fused backward over <paramref name="t"/> tokens (see <see cref="BackwardKernel"/>).</summary>
    public void RunBackward(Device d, ExpertShape s, int t, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp)
    {
        if (grouped is not null) grouped.Backward(s, t, x, indices, g, down, up, z, dY, dX, dG, coefDown, coefUp);
        else
        {
            var w = d.Split(t);
            backward!(w.Workers, w, s, x, indices, g, down, up, z, dY, dX, dG, coefDown, coefUp);
        }
    }

    /// <summary>Whether id names an expert. A slot whose id does not is never used to index the tables (it reads row 0) and
    /// contributes NaN, so that where ids are not checked on the host (<see cref="DeviceOptions.CheckIndices"/>) no backend reads
    /// outside the tables and the mistake shows in the output (as Ops.Embedding and Ops.CrossEntropy do).</summary>
    internal static bool InRange(int id, ExpertShape s) => (uint)id < (uint)s.N;

    // The exact-erf GELU of Ops.Gelu's portable kernel (ActivationMath). Ops.Gelu's CPU body vectorises it and agrees within a few
    // float32 rounding units (ActivationsCpuTests), not bit for bit.
    internal static float Act(float z, int act) => act == 1 ? (z > 0f ? z : 0f) : ActivationMath.GeluExact(z);

    internal static float ActGrad(float z, int act) => act == 1 ? (z > 0f ? 1f : 0f) : ActivationMath.GeluExactGrad(z);

    // scores: [groups, k] -> g: [groups, k], softmax per group (or sigmoid elementwise); one group per item
    static void RouterKernel(Index1D w, Work work, ArrayView<float> scores, ArrayView<float> g, int k, int sigmoid)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int grp = st, e = work.End(st); grp < e; grp++)
            {
                int off = grp * k;
                if (sigmoid != 0)
                {
                    for (int m = 0; m < k; m++) g[off + m] = 1f / (1f + XMath.Exp(-scores[off + m]));
                    continue;
                }
                float max = scores[off];
                for (int m = 1; m < k; m++) max = XMath.Max(max, scores[off + m]);
                float sum = 0f;
                for (int m = 0; m < k; m++)
                {
                    float ex = XMath.Exp(scores[off + m] - max);
                    g[off + m] = ex;
                    sum += ex;
                }
                float inv = 1f / sum;
                for (int m = 0; m < k; m++) g[off + m] *= inv;
            }
    }

    // g, dG: [groups, k] -> dS: [groups, k]; softmax: dS = g * (dG - sum(g * dG)); sigmoid: dS = dG * g * (1 - g)
    static void RouterBackwardKernel(Index1D w, Work work, ArrayView<float> g, ArrayView<float> dG, ArrayView<float> dS, int k, int sigmoid)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int grp = st, e = work.End(st); grp < e; grp++)
            {
                int off = grp * k;
                if (sigmoid != 0)
                {
                    for (int m = 0; m < k; m++) dS[off + m] = dG[off + m] * g[off + m] * (1f - g[off + m]);
                    continue;
                }
                float dot = 0f;
                for (int m = 0; m < k; m++) dot += g[off + m] * dG[off + m];
                for (int m = 0; m < k; m++) dS[off + m] = g[off + m] * (dG[off + m] - dot);
            }
    }

    // indices: [P] -> counts[b]: ids outside [0, n) in block b = [b*len, (b+1)*len)
    static void OutOfRangeKernel(Index1D b, ArrayView<int> indices, ArrayView<int> counts, int len, int n)
    {
        int p = (int)indices.Length, from = b * len, to = from + len < p ? from + len : p, c = 0;
        for (int i = from; i < to; i++)
            if (indices[i] < 0 || indices[i] >= n) c++;
        counts[b] = c;
    }

    // x: [T, d], indices, g: [T, h*k], down, up: [N, d] -> y: [T, d], z: [T, h*k] pre-activations; one token per item.
    // Slots go four at a time so that each x load serves four dot products and each y update four expert rows (the CPU
    // accelerator pays a bounds check per view access); the order of every sum is fixed, so results are deterministic.
    static void ForwardKernel(Index1D w, Work work, ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> y, ArrayView<float> z)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, e = work.End(st); t < e; t++)
            {
                int xOff = t * s.D, slot = 0;
                for (int c = 0; c < s.D; c++) y[xOff + c] = 0f;
                for (; slot + 4 <= s.Hk; slot += 4)
                {
                    int p = t * s.Hk + slot;
                    int i0 = indices[p], i1 = indices[p + 1], i2 = indices[p + 2], i3 = indices[p + 3];
                    bool k0 = InRange(i0, s), k1 = InRange(i1, s), k2 = InRange(i2, s), k3 = InRange(i3, s);
                    int r0 = k0 ? i0 * s.D : 0, r1 = k1 ? i1 * s.D : 0, r2 = k2 ? i2 * s.D : 0, r3 = k3 ? i3 * s.D : 0;
                    float d0 = 0f, d1 = 0f, d2 = 0f, d3 = 0f;
                    for (int c = 0; c < s.D; c++)
                    {
                        float xv = x[xOff + c];
                        d0 += down[r0 + c] * xv;
                        d1 += down[r1 + c] * xv;
                        d2 += down[r2 + c] * xv;
                        d3 += down[r3 + c] * xv;
                    }
                    z[p] = d0; z[p + 1] = d1; z[p + 2] = d2; z[p + 3] = d3;
                    float c0 = k0 ? g[p] * Act(d0, s.Act) : float.NaN, c1 = k1 ? g[p + 1] * Act(d1, s.Act) : float.NaN;
                    float c2 = k2 ? g[p + 2] * Act(d2, s.Act) : float.NaN, c3 = k3 ? g[p + 3] * Act(d3, s.Act) : float.NaN;
                    for (int c = 0; c < s.D; c++)
                        y[xOff + c] += c0 * up[r0 + c] + c1 * up[r1 + c] + c2 * up[r2 + c] + c3 * up[r3 + c];
                }
                for (; slot < s.Hk; slot++)
                {
                    int p = t * s.Hk + slot, id = indices[p];
                    bool ok = InRange(id, s);
                    int rowOff = ok ? id * s.D : 0;
                    float dot = 0f;
                    for (int c = 0; c < s.D; c++) dot += down[rowOff + c] * x[xOff + c];
                    z[p] = dot;
                    float coef = ok ? g[p] * Act(dot, s.Act) : float.NaN;
                    for (int c = 0; c < s.D; c++) y[xOff + c] += coef * up[rowOff + c];
                }
            }
    }

    // dY: [T, d] -> dX: [T, d], dG: [T, h*k], coefDown: [T*h*k] (= g act'(z) (up . dY)), coefUp: [T*h*k] (= g act(z));
    // the table gradients are then dDown[i] = sum coefDown * x[t], dUp[i] = sum coefUp * dY[t] (SortSegment.cs).
    // Four slots at a time, as in the forward.
    static void BackwardKernel(Index1D w, Work work, ExpertShape s, ArrayView<float> x, ArrayView<int> indices, ArrayView<float> g,
        ArrayView<float> down, ArrayView<float> up, ArrayView<float> z, ArrayView<float> dY,
        ArrayView<float> dX, ArrayView<float> dG, ArrayView<float> coefDown, ArrayView<float> coefUp)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int t = st, e = work.End(st); t < e; t++)
            {
                int xOff = t * s.D, slot = 0;
                for (int c = 0; c < s.D; c++) dX[xOff + c] = 0f;
                for (; slot + 4 <= s.Hk; slot += 4)
                {
                    int p = t * s.Hk + slot;
                    int i0 = indices[p], i1 = indices[p + 1], i2 = indices[p + 2], i3 = indices[p + 3];
                    bool k0 = InRange(i0, s), k1 = InRange(i1, s), k2 = InRange(i2, s), k3 = InRange(i3, s);
                    int r0 = k0 ? i0 * s.D : 0, r1 = k1 ? i1 * s.D : 0, r2 = k2 ? i2 * s.D : 0, r3 = k3 ? i3 * s.D : 0;
                    float v0 = 0f, v1 = 0f, v2 = 0f, v3 = 0f;
                    for (int c = 0; c < s.D; c++)
                    {
                        float dy = dY[xOff + c];
                        v0 += up[r0 + c] * dy;
                        v1 += up[r1 + c] * dy;
                        v2 += up[r2 + c] * dy;
                        v3 += up[r3 + c] * dy;
                    }
                    float dz0 = Slot(s, p, k0, v0, z, g, dG, coefDown, coefUp);
                    float dz1 = Slot(s, p + 1, k1, v1, z, g, dG, coefDown, coefUp);
                    float dz2 = Slot(s, p + 2, k2, v2, z, g, dG, coefDown, coefUp);
                    float dz3 = Slot(s, p + 3, k3, v3, z, g, dG, coefDown, coefUp);
                    for (int c = 0; c < s.D; c++)
                        dX[xOff + c] += dz0 * down[r0 + c] + dz1 * down[r1 + c] + dz2 * down[r2 + c] + dz3 * down[r3 + c];
                }
                for (; slot < s.Hk; slot++)
                {
                    int p = t * s.Hk + slot, id = indices[p];
                    bool ok = InRange(id, s);
                    int rowOff = ok ? id * s.D : 0;
                    float vdy = 0f;
                    for (int c = 0; c < s.D; c++) vdy += up[rowOff + c] * dY[xOff + c];
                    float dz = Slot(s, p, ok, vdy, z, g, dG, coefDown, coefUp);
                    for (int c = 0; c < s.D; c++) dX[xOff + c] += dz * down[rowOff + c];
                }
            }
    }

    // Per-slot scalars of the backward, given vdy = up[i] . dY[t]: writes dG, coefDown, coefUp; returns dz = g act'(z) vdy.
    // A skipped slot (ok false: its id names no expert) gives NaN for dG and dz and no table gradient.
    internal static float Slot(ExpertShape s, int p, bool ok, float vdy, ArrayView<float> z, ArrayView<float> g, ArrayView<float> dG,
        ArrayView<float> coefDown, ArrayView<float> coefUp)
    {
        if (!ok)
        {
            dG[p] = float.NaN;
            coefDown[p] = 0f;
            coefUp[p] = 0f;
            return float.NaN;
        }
        float zp = z[p], a = Act(zp, s.Act), gp = g[p];
        float dz = gp * vdy * ActGrad(zp, s.Act);
        dG[p] = a * vdy;
        coefDown[p] = dz;
        coefUp[p] = gp * a;
        return dz;
    }
}
