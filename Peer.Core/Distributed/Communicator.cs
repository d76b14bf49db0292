// The collectives a distributed run needs, behind one abstract class: all-reduce, all-gather(v), all-to-all(v),
// broadcast, barrier and abort over host memory. Every call returns only when its result is complete, and never
// waits longer than Timeout for the other ranks: a rank that died or hung turns into a CommunicationException here
// instead of a hang. SingleProcess (one rank) costs nothing and loads no library; MpiCommunicator (Mpi.cs) runs the
// same calls over MPI (docs/distributed.md). Each call also counts the bytes it brings to this rank, for the bench.
namespace Peer.Distributed;

/// <summary>A reduction applied element by element by <see cref="Communicator.AllReduce{T}(Span{T}, ReduceOp)"/>.</summary>
public enum ReduceOp
{
    /// <summary>The sum over ranks.</summary>
    Sum,
    /// <summary>The largest value over ranks.</summary>
    Max,
    /// <summary>The smallest value over ranks.</summary>
    Min,
}

/// <summary>A collective that failed: an MPI error, or no answer from the other ranks within <see cref="Communicator.Timeout"/>.
/// Its message is one line naming the rank, the operation and what to do.</summary>
public sealed class CommunicationException(string message) : Exception(message);

/// <summary>
/// A group of ranks (processes, possibly on several machines) that run the same program in lockstep and exchange host arrays
/// through collectives. Every rank must make the same calls in the same order with compatible sizes. Element types: float,
/// double, int, long and byte.
/// </summary>
public abstract class Communicator : IDisposable
{
    TimeSpan timeout = TimeSpan.FromSeconds(300);

    /// <summary>This process's rank, 0 .. <see cref="Size"/> - 1.</summary>
    public abstract int Rank { get; }
    /// <summary>Number of ranks.</summary>
    public abstract int Size { get; }
    /// <summary>This rank's index among the ranks on its machine.</summary>
    public abstract int LocalRank { get; }
    /// <summary>Number of ranks on this machine.</summary>
    public abstract int LocalSize { get; }
    /// <summary>What carries the collectives, e.g. "MPICH Version: 4.0.2" or "single process".</summary>
    public abstract string Library { get; }

    /// <summary>The longest a collective waits for the other ranks before it throws <see cref="CommunicationException"/>
    /// (default 300 s). It must exceed the longest time one rank can legitimately run ahead of another (e.g. rank 0 writing
    /// a checkpoint while the others wait at the barrier that follows).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not positive.</exception>
    public TimeSpan Timeout
    {
        get => timeout;
        set
        {
            if (value <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(Timeout), value, $"Timeout = {value}: expected a positive time.");
            timeout = value;
        }
    }

    /// <summary>Bytes brought to this rank by the collectives so far (see <see cref="Traffic"/> for how each call counts).</summary>
    public long BytesReceived { get; private set; }
    /// <summary>Collectives called so far.</summary>
    public long Calls { get; private set; }

    /// <summary>
    /// The bytes a collective brings to one rank, as this class counts them (independent of the algorithm MPI picks, except
    /// all-reduce, counted as the bandwidth-optimal ring does it: <c>2 (R - 1) / R</c> of the array). All-gather: everything
    /// but this rank's own part; all-to-all: everything but what this rank sends itself; broadcast: the array on non-roots.
    /// </summary>
    public static long Traffic(string collective, long bytes, long own, int size) => size <= 1 ? 0 : collective switch
    {
        "all-reduce" => 2 * (size - 1) * bytes / size,
        "all-gather" or "all-to-all" => bytes - own,
        "broadcast" => bytes - own,
        _ => 0,
    };

    /// <summary>Replaces <paramref name="data"/> on every rank by the element-wise reduction over all ranks' arrays (same
    /// length everywhere). The result is the same on every rank.</summary>
    public unsafe void AllReduce<T>(Span<T> data, ReduceOp op = ReduceOp.Sum) where T : unmanaged
    {
        var e = ElementOf<T>();
        Count("all-reduce", (long)data.Length * sizeof(T), 0);
        if (Size == 1 || data.Length == 0) return;
        fixed (T* p = data) AllReduceCore(p, data.Length, e, op);
    }

    /// <summary>Concatenates every rank's <paramref name="mine"/> (all of one length) in rank order into <paramref name="all"/>
    /// (<see cref="Size"/> times that length).</summary>
    /// <exception cref="ArgumentException"><paramref name="all"/> has the wrong length.</exception>
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        var counts = new int[Size];
        Array.Fill(counts, mine.Length);
        AllGatherV(mine, all, counts);
    }

    /// <summary>Concatenates every rank's <paramref name="mine"/> in rank order into <paramref name="all"/>; rank r contributes
    /// <c>counts[r]</c> elements (the same counts on every rank, <c>counts[Rank] = mine.Length</c>).</summary>
    /// <exception cref="ArgumentException">Counts that do not match <paramref name="mine"/> or <paramref name="all"/>.</exception>
    public unsafe void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        var e = ElementOf<T>();
        Check.That(counts.Length == Size, nameof(counts), counts.Length, $"one count per rank ({Size})");
        Check.That(counts[Rank] == mine.Length, nameof(counts), counts[Rank], $"this rank's count equal to mine.Length = {mine.Length}");
        var displs = Displacements(counts, nameof(counts));
        Check.That(displs[^1] == all.Length, nameof(all), all.Length, $"the sum of the counts ({displs[^1]})");
        Count("all-gather", (long)all.Length * sizeof(T), (long)mine.Length * sizeof(T));
        if (Size == 1)
        {
            mine.CopyTo(all);
            return;
        }
        fixed (T* s = mine)
        fixed (T* r = all)
        fixed (int* c = counts)
        fixed (int* d = displs)
            AllGatherVCore(s, mine.Length, r, c, d, e);
    }

    /// <summary>Sends <c>sendCounts[s]</c> elements of <paramref name="send"/> (blocks in rank order) to each rank s and receives
    /// <c>recvCounts[s]</c> elements from each rank s into <paramref name="recv"/> (blocks in rank order). A rank's send count to
    /// s must equal s's receive count from it.</summary>
    /// <exception cref="ArgumentException">Counts that do not match the spans.</exception>
    public unsafe void AllToAllV<T>(ReadOnlySpan<T> send, ReadOnlySpan<int> sendCounts, Span<T> recv, ReadOnlySpan<int> recvCounts) where T : unmanaged
    {
        var e = ElementOf<T>();
        Check.That(sendCounts.Length == Size && recvCounts.Length == Size, nameof(sendCounts), $"{sendCounts.Length} and {recvCounts.Length} counts",
            $"one send and one receive count per rank ({Size})");
        var sd = Displacements(sendCounts, nameof(sendCounts));
        var rd = Displacements(recvCounts, nameof(recvCounts));
        Check.That(sd[^1] == send.Length, nameof(send), send.Length, $"the sum of the send counts ({sd[^1]})");
        Check.That(rd[^1] == recv.Length, nameof(recv), recv.Length, $"the sum of the receive counts ({rd[^1]})");
        Count("all-to-all", (long)recv.Length * sizeof(T), (long)recvCounts[Rank] * sizeof(T));
        if (Size == 1)
        {
            send.CopyTo(recv);
            return;
        }
        fixed (T* s = send)
        fixed (T* r = recv)
        fixed (int* sc = sendCounts)
        fixed (int* sdp = sd)
        fixed (int* rc = recvCounts)
        fixed (int* rdp = rd)
            AllToAllVCore(s, sc, sdp, r, rc, rdp, e);
    }

    /// <summary>Copies <paramref name="data"/> of rank <paramref name="root"/> into every rank's <paramref name="data"/> (same length everywhere).</summary>
    public unsafe void Broadcast<T>(Span<T> data, int root = 0) where T : unmanaged
    {
        var e = ElementOf<T>();
        Check.That(root >= 0 && root < Size, nameof(root), root, $"a rank in [0, {Size})");
        long bytes = (long)data.Length * sizeof(T);
        Count("broadcast", bytes, Rank == root ? bytes : 0);
        if (Size == 1 || data.Length == 0) return;
        fixed (T* p = data) BroadcastCore(p, data.Length, e, root);
    }

    /// <summary>Returns when every rank has called it.</summary>
    public void Barrier()
    {
        Count("barrier", 0, 0);
        if (Size > 1) BarrierCore();
    }

    /// <summary>Ends every rank of the group at once with <paramref name="exitCode"/> (after the caller has said why). Does not return.</summary>
    public abstract void Abort(int exitCode);

    /// <summary>Releases the group (MPI: finalizes MPI; call it on every rank after the last collective).</summary>
    public abstract void Dispose();

    /// <summary>"rank r of R" for messages.</summary>
    public string Who => $"rank {Rank} of {Size}";

    internal unsafe abstract void AllReduceCore(void* data, int count, Element e, ReduceOp op);
    internal unsafe abstract void AllGatherVCore(void* send, int sendCount, void* recv, int* counts, int* displs, Element e);
    internal unsafe abstract void AllToAllVCore(void* send, int* sendCounts, int* sendDispls, void* recv, int* recvCounts, int* recvDispls, Element e);
    internal unsafe abstract void BroadcastCore(void* data, int count, Element e, int root);
    internal abstract void BarrierCore();

    /// <summary>Element types the collectives carry.</summary>
    internal enum Element { Float, Double, Int, Long, Byte }

    static Element ElementOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? Element.Float : typeof(T) == typeof(double) ? Element.Double : typeof(T) == typeof(int) ? Element.Int
        : typeof(T) == typeof(long) ? Element.Long : typeof(T) == typeof(byte) ? Element.Byte
        : throw new ArgumentException($"T = {typeof(T).Name}: expected float, double, int, long or byte.", nameof(T));

    static int[] Displacements(ReadOnlySpan<int> counts, string name)
    {
        var d = new int[counts.Length + 1];
        for (int i = 0; i < counts.Length; i++)
        {
            Check.That(counts[i] >= 0, name, counts[i], "non-negative counts");
            Check.That((long)d[i] + counts[i] <= int.MaxValue, name, $"{(long)d[i] + counts[i]} elements", $"at most {int.MaxValue} elements in all");
            d[i + 1] = d[i] + counts[i];
        }
        return d;
    }

    void Count(string collective, long bytes, long own)
    {
        Calls++;
        BytesReceived += Traffic(collective, bytes, own, Size);
    }
}

/// <summary>The group of one: every collective is a copy or nothing, and no MPI library is loaded.</summary>
public sealed class SingleProcess : Communicator
{
    /// <inheritdoc />
    public override int Rank => 0;
    /// <inheritdoc />
    public override int Size => 1;
    /// <inheritdoc />
    public override int LocalRank => 0;
    /// <inheritdoc />
    public override int LocalSize => 1;
    /// <inheritdoc />
    public override string Library => "single process";

    /// <summary>Ends this process with <paramref name="exitCode"/>.</summary>
    public override void Abort(int exitCode) => Environment.Exit(exitCode);

    /// <inheritdoc />
    public override void Dispose() { }

    internal override unsafe void AllReduceCore(void* data, int count, Element e, ReduceOp op) { }
    internal override unsafe void AllGatherVCore(void* send, int sendCount, void* recv, int* counts, int* displs, Element e) { }
    internal override unsafe void AllToAllVCore(void* send, int* sendCounts, int* sendDispls, void* recv, int* recvCounts, int* recvDispls, Element e) { }
    internal override unsafe void BroadcastCore(void* data, int count, Element e, int root) { }
    internal override void BarrierCore() { }
}
