// The one loop shape every elementwise-style kernel uses. On the CPU accelerator a kernel is launched
// with as many indices as hardware threads and each index walks a contiguous chunk (fast: see
// docs/ilgpu.md); on a GPU each index takes one element per round (chunk 1, grid-stride, coalesced).
namespace Peer;

/// <summary>How <see cref="N"/> items are split between <see cref="Workers"/> kernel indices, <see cref="Chunk"/> consecutive items at a time.</summary>
public readonly struct Work
{
    /// <summary>Items to process.</summary>
    public readonly int N;
    /// <summary>Kernel indices launched.</summary>
    public readonly int Workers;
    /// <summary>Consecutive items a worker takes per round.</summary>
    public readonly int Chunk;

    /// <summary>Creates a split; prefer <see cref="Device.Split"/>.</summary>
    public Work(int n, int workers, int chunk)
    {
        N = n;
        Workers = workers;
        Chunk = chunk;
    }

    /// <summary>First item of worker <paramref name="w"/>'s first round.</summary>
    public int Start(int w) => w * Chunk;

    /// <summary>Distance between a worker's rounds.</summary>
    public int Stride => Workers * Chunk;

    /// <summary>End (exclusive) of the round that starts at <paramref name="start"/>.</summary>
    public int End(int start) => start + Chunk < N ? start + Chunk : N;
}
