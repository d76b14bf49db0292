// Expert usage as the paper defines it (docs/peer-spec.md, "Metrics"): z'_i = sum over tokens of the router
// weight g_i (0 where i was never retrieved), z = z' / |z'|_1, usage = fraction of i with z_i != 0,
// unevenness = log N + sum z log z. The [N] accumulator lives on the device; each batch adds its
// (expert, weight) pairs through the sort-and-segment reduction (distinct rows, so the scatter has no
// conflicts and needs no atomics). Adding a batch costs O(T*h*k); only Reset and Compute touch all N.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer.Nn;

/// <summary>Usage fraction and unevenness of a PEER layer's experts.</summary>
/// <param name="Usage">Fraction of experts with nonzero accumulated router weight, in [0, 1].</param>
/// <param name="Unevenness"><c>log N + sum_i z_i log z_i</c> (KL divergence from uniform; 0 when perfectly even). NaN when nothing was accumulated.</param>
/// <param name="Total">Sum of all accumulated router weights, <c>|z'|_1</c>.</param>
public sealed record ExpertUsageStats(double Usage, double Unevenness, double Total);

/// <summary>Accumulates router weights per expert over an evaluation pass, on the device.</summary>
public sealed class ExpertUsage : IDisposable
{
    readonly Tensor acc; // z': [N]

    /// <summary>Number of experts N.</summary>
    public int Experts { get; }
    /// <summary>The device.</summary>
    public Device Device { get; }

    /// <summary>Creates a zeroed accumulator for <paramref name="experts"/> experts.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="experts"/> is not positive.</exception>
    public ExpertUsage(Device device, int experts)
    {
        ArgumentNullException.ThrowIfNull(device);
        Check.Positive(experts, nameof(experts));
        Device = device;
        Experts = experts;
        acc = Scope.Unscope(Tensor.Zeros(device, experts));
    }

    /// <summary>The accumulator z' F32 [N] (owned by this object).</summary>
    public Tensor Accumulated => acc;

    /// <summary>Zeroes the accumulator.</summary>
    public void Reset() => Ops.Fill(acc, 0f);

    /// <summary>Adds <c>weights[t, j, m]</c> to <c>z'[indices[t, j, m]]</c> for every slot (deterministically, without atomics).</summary>
    /// <exception cref="ArgumentException">Dtypes or shapes differ, or an index is outside [0, N).</exception>
    public void Add(Tensor indices, Tensor weights)
    {
        Check.DType(indices, DType.I32, nameof(indices));
        Check.DType(weights, DType.F32, nameof(weights));
        Check.SameDevice(acc, indices, nameof(indices));
        Check.SameDevice(acc, weights, nameof(weights));
        Check.Shape(weights, nameof(weights), indices.Shape);
        int p = indices.Length;
        if (p == 0) return;
        var k = Device.Get(static d => new ExpertUsageKernels(d));
        using var s = Scope.Begin();
        var flat = indices.Detach().Reshape(p);
        int bad = Ops.CountOutOfRange(flat, Experts);
        Check.That(bad == 0, nameof(indices), $"{bad} ids outside [0, {Experts})", $"every expert id in [0, N = {Experts})");
        var w = weights.Detach().Reshape(p);
        using var segments = SortSegment.Run(null, flat, Experts);
        var one = Tensor.Full(Device, 1f, 1);
        var sums = SortSegment.Sum(segments, null, w, one, p, 0, 0, 1); // [B, 1]: sum of the weights of each distinct expert, then padding
        var rows = segments.Rows;
        if (rows.Length > 0)
        {
            var work = Device.Split(rows.Length);
            k.Scatter(work.Workers, work, rows.IntView, sums.View, acc.View);
        }
    }

    /// <summary>Usage fraction and unevenness of the accumulated weights, reduced on the device.</summary>
    public ExpertUsageStats Compute()
    {
        var k = Device.Get(static d => new ExpertUsageKernels(d));
        // A fixed 1024 blocks on every backend: short float partial sums, and the same summation order everywhere.
        int blocks = Math.Min(Experts, 1024), len = (Experts + blocks - 1) / blocks;
        blocks = (Experts + len - 1) / len;
        using var s = Scope.Begin();
        var partial = Tensor.Empty(Device, DType.F32, blocks, 3);
        k.Partials(blocks, acc.View, partial.View, len);
        var total = Tensor.Empty(Device, DType.F32, 3);
        k.Combine(1, partial.View, total.View, blocks);
        var r = total.ToArray(); // nonzero count, S = sum z', sum z' log z'
        double sum = r[1];
        double uneven = sum > 0 ? Math.Log(Experts) + r[2] / sum - Math.Log(sum) : double.NaN;
        return new ExpertUsageStats((double)r[0] / Experts, uneven, sum);
    }

    /// <inheritdoc />
    public void Dispose() => acc.Dispose();
}

/// <summary>Kernels of the usage statistics.</summary>
internal sealed class ExpertUsageKernels
{
    public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<float>, ArrayView<float>> Scatter;
    public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> Partials;
    public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> Combine;

    public ExpertUsageKernels(Device d)
    {
        Scatter = d.LoadKernel(ScatterKernel);
        Partials = d.LoadKernel(PartialsKernel);
        Combine = d.LoadKernel(CombineKernel);
    }

    // rows: [B] distinct, sums: [B] -> acc[rows[s]] += sums[s]; rows are distinct, so no two items touch one element; the
    // sort-and-segment's padding rows (NoRow, outside acc) are skipped
    static void ScatterKernel(Index1D w, Work work, ArrayView<int> rows, ArrayView<float> sums, ArrayView<float> acc)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int s = st, e = work.End(st); s < e; s++)
                if ((uint)rows[s] < (uint)acc.Length) acc[rows[s]] += sums[s];
    }

    // acc: [N] -> partial[b] = (count of z' != 0, sum z', sum z' log z') over block b = [b*len, (b+1)*len)
    static void PartialsKernel(Index1D b, ArrayView<float> acc, ArrayView<float> partial, int len)
    {
        int n = (int)acc.Length, from = b * len, to = from + len < n ? from + len : n;
        float count = 0f, sum = 0f, ent = 0f;
        for (int i = from; i < to; i++)
        {
            float z = acc[i];
            if (z != 0f)
            {
                count += 1f;
                sum += z;
                ent += z * XMath.Log(z);
            }
        }
        partial[b * 3] = count;
        partial[b * 3 + 1] = sum;
        partial[b * 3 + 2] = ent;
    }

    // partial: [blocks, 3] -> total: [3], summed in block order by one item (blocks is small)
    static void CombineKernel(Index1D i, ArrayView<float> partial, ArrayView<float> total, int blocks)
    {
        float c = 0f, s = 0f, e = 0f;
        for (int b = 0; b < blocks; b++)
        {
            c += partial[b * 3];
            s += partial[b * 3 + 1];
            e += partial[b * 3 + 2];
        }
        total[0] = c;
        total[1] = s;
        total[2] = e;
    }
}
