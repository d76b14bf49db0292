// Seeded random tensors from a counter-based generator run as a kernel: element i of a tensor drawn
// with seed s is a pure function of (s, i), computed with 32-bit integer arithmetic only, so one seed
// gives the same numbers on every backend and with any number of workers.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>Fills <paramref name="t"/> with uniform samples in [<paramref name="low"/>, <paramref name="high"/>) drawn from <paramref name="seed"/>.</summary>
    public static void UniformInit(Tensor t, ulong seed, float low = 0f, float high = 1f)
    {
        Check.DType(t, DType.F32, nameof(t));
        Check.That(high >= low, nameof(high), high, $"a value >= low ({low})");
        if (t.Length == 0) return;
        var w = t.Device.Split(t.Length);
        t.Device.Get(static d => new RandomKernels(d)).Uniform(w.Workers, w, t.View, (uint)seed, (uint)(seed >> 32), low, high - low);
    }

    /// <summary>Fills <paramref name="t"/> with normal samples of the given mean and standard deviation drawn from <paramref name="seed"/>.</summary>
    public static void NormalInit(Tensor t, ulong seed, float mean = 0f, float std = 1f)
    {
        Check.DType(t, DType.F32, nameof(t));
        Check.That(std >= 0, nameof(std), std, "a non-negative standard deviation");
        if (t.Length == 0) return;
        var w = t.Device.Split(t.Length);
        t.Device.Get(static d => new RandomKernels(d)).Normal(w.Workers, w, t.View, (uint)seed, (uint)(seed >> 32), mean, std);
    }

    /// <summary>A new float tensor of uniform samples in [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public static Tensor Uniform(Device device, ulong seed, float low, float high, params int[] shape)
    {
        var t = Tensor.Empty(device, DType.F32, shape);
        UniformInit(t, seed, low, high);
        return t;
    }

    /// <summary>A new float tensor of normal samples.</summary>
    public static Tensor Normal(Device device, ulong seed, float mean, float std, params int[] shape)
    {
        var t = Tensor.Empty(device, DType.F32, shape);
        NormalInit(t, seed, mean, std);
        return t;
    }

    /// <summary>
    /// Columns <c>[colStart, colStart + colCount)</c> of the tensor <see cref="Normal"/> draws with the same seed and shape <c>[rows, cols]</c>,
    /// as a new <c>[rows, colCount]</c> tensor, without building the whole one (for tables split by columns between ranks).
    /// </summary>
    /// <exception cref="ArgumentException">A column range outside [0, cols), or a negative size or deviation.</exception>
    public static Tensor NormalColumns(Device device, ulong seed, float mean, float std, int rows, int cols, int colStart, int colCount)
    {
        Check.That(rows >= 0 && cols >= 0 && (long)rows * cols <= int.MaxValue, nameof(rows), $"[{rows}, {cols}]", "a table of at most 2^31 - 1 elements");
        Check.That(colStart >= 0 && colCount >= 0 && colStart + colCount <= cols, nameof(colStart), $"{colStart} + {colCount}", $"a column range inside [0, {cols})");
        Check.That(std >= 0, nameof(std), std, "a non-negative standard deviation");
        var t = Tensor.Empty(device, DType.F32, rows, colCount);
        if (t.Length == 0) return t;
        var w = device.Split(t.Length);
        device.Get(static d => new RandomKernels(d)).NormalColumns(w.Workers, w, t.View, (uint)seed, (uint)(seed >> 32), mean, std,
            new ColumnRange(cols, colStart, colCount));
        return t;
    }

    /// <summary>The generator's uniform sample in [0, 1) for counter <paramref name="i"/>, as kernels compute it (24 random bits).</summary>
    public static float UniformAt(uint seedLo, uint seedHi, uint i) => RandomKernels.ToUnit(RandomKernels.Hash(seedLo, seedHi, i));
}

/// <summary>Kernels of the counter-based generator.</summary>
internal sealed class RandomKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, uint, uint, float, float> Uniform;
    public readonly Action<Index1D, Work, ArrayView<float>, uint, uint, float, float> Normal;
    public readonly Action<Index1D, Work, ArrayView<float>, uint, uint, float, float, ColumnRange> NormalColumns;

    public RandomKernels(Device d)
    {
        Uniform = d.LoadKernel(UniformKernel);
        Normal = d.LoadKernel(NormalKernel);
        NormalColumns = d.LoadKernel(NormalColumnsKernel);
    }

    // Three rounds of a 32-bit avalanche mix over (seed, counter): a small stateless hash in the spirit of
    // counter-based generators (Random123); statistically adequate for initialisation and dropout masks.
    internal static uint Hash(uint seedLo, uint seedHi, uint i)
    {
        uint h = Mix(i * 0x9E3779B9u ^ seedLo);
        h = Mix(h ^ seedHi * 0x85EBCA6Bu ^ 0x27D4EB2Fu);
        return Mix(h + i);
    }

    static uint Mix(uint x)
    {
        x ^= x >> 16;
        x *= 0x7FEB352Du;
        x ^= x >> 15;
        x *= 0x846CA68Bu;
        x ^= x >> 16;
        return x;
    }

    internal static float ToUnit(uint h) => (h >> 8) * (1f / 16777216f);

    // y: [n] <- low + range * U(0,1)
    static void UniformKernel(Index1D w, Work work, ArrayView<float> y, uint seedLo, uint seedHi, float low, float range)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                y[i] = low + range * ToUnit(Hash(seedLo, seedHi, (uint)i));
    }

    // y: [n] <- mean + std * N(0,1), Box-Muller on counters 2i and 2i+1 (one normal per element)
    static void NormalKernel(Index1D w, Work work, ArrayView<float> y, uint seedLo, uint seedHi, float mean, float std)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
                y[i] = NormalAt(seedLo, seedHi, (uint)i, mean, std);
    }

    // y: [rows, Count] <- the columns [Start, Start + Count) of the [rows, Cols] tensor NormalKernel draws
    static void NormalColumnsKernel(Index1D w, Work work, ArrayView<float> y, uint seedLo, uint seedHi, float mean, float std, ColumnRange r)
    {
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int row = i / r.Count;
                y[i] = NormalAt(seedLo, seedHi, (uint)(row * r.Cols + r.Start + (i - row * r.Count)), mean, std);
            }
    }

    static float NormalAt(uint seedLo, uint seedHi, uint i, float mean, float std)
    {
        float u1 = ToUnit(Hash(seedLo, seedHi, 2u * i)) + (0.5f / 16777216f);
        float u2 = ToUnit(Hash(seedLo, seedHi, 2u * i + 1u));
        float r = XMath.Sqrt(-2f * XMath.Log(u1));
        return mean + std * r * XMath.Cos(6.28318530718f * u2);
    }
}

/// <summary>Columns [Start, Start + Count) of a table of Cols columns.</summary>
internal readonly struct ColumnRange(int cols, int start, int count)
{
    public readonly int Cols = cols, Start = start, Count = count;
}
