// A test double of a communicator: R ranks as R threads of this process, exchanging arrays through shared slots between
// two barrier phases. It lets the distributed ops (synchronised BatchNorm, sharded experts, gradient reduction) be checked
// in-process against their one-process definitions; the real runs go through MPI (DistributedRunTests). Reductions add the
// ranks' arrays in rank order, so every rank gets the same bits.
using Peer.Distributed;

namespace Peer.Tests;

public sealed unsafe class ThreadGroup : Communicator
{
    sealed class Hub(int size)
    {
        public readonly Barrier Barrier = new(size);
        public readonly byte[]?[] Data = new byte[]?[size];
        public readonly int[]?[] Counts = new int[]?[size];
        public readonly int[]?[] Displs = new int[]?[size];
    }

    readonly Hub hub;
    readonly int rank;

    ThreadGroup(Hub hub, int rank)
    {
        this.hub = hub;
        this.rank = rank;
    }

    /// <summary>Runs <paramref name="body"/> as ranks 0..size-1 on their own threads, each with a CPU device of one worker thread;
    /// returns each rank's result. An exception on any rank fails the call (the others time out of their barriers).</summary>
    public static T[] Run<T>(int size, Func<ThreadGroup, Device, T> body)
    {
        var hub = new Hub(size);
        var results = new T[size];
        var errors = new Exception?[size];
        var threads = Enumerable.Range(0, size).Select(r => new Thread(() =>
        {
            try
            {
                using var device = Device.Open("cpu", new DeviceOptions { CpuThreads = 1 });
                using var g = new ThreadGroup(hub, r) { Timeout = TimeSpan.FromSeconds(120) };
                using (Scope.Begin()) results[r] = body(g, device);
            }
            catch (Exception e)
            {
                errors[r] = e;
                hub.Barrier.RemoveParticipant();
            }
        }, 16 << 20)).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var first = errors.FirstOrDefault(e => e is not null);
        if (first is not null) throw new AggregateException($"rank {Array.IndexOf(errors, first)} failed", first);
        return results;
    }

    public override int Rank => rank;
    public override int Size => hub.Data.Length;
    public override int LocalRank => rank;
    public override int LocalSize => Size;
    public override string Library => "threads of one process (tests)";
    public override void Abort(int exitCode) => throw new InvalidOperationException($"rank {rank} aborted with {exitCode}");
    public override void Dispose() { }

    void Phase()
    {
        if (!hub.Barrier.SignalAndWait(Timeout)) throw new CommunicationException($"{Who}: test group barrier timed out");
    }

    static int SizeOf(Element e) => e switch { Element.Double or Element.Long => 8, Element.Byte => 1, _ => 4 };

    internal override void AllReduceCore(void* data, int count, Element e, ReduceOp op)
    {
        int bytes = count * SizeOf(e);
        hub.Data[rank] = new ReadOnlySpan<byte>(data, bytes).ToArray();
        Phase();
        for (int i = 0; i < count; i++)
            switch (e)
            {
                case Element.Float: ((float*)data)[i] = Reduce(op, r => MemoryMarshalRead<float>(r, i)); break;
                case Element.Double: ((double*)data)[i] = Reduce(op, r => MemoryMarshalRead<double>(r, i)); break;
                case Element.Int: ((int*)data)[i] = Reduce(op, r => MemoryMarshalRead<int>(r, i)); break;
                case Element.Long: ((long*)data)[i] = Reduce(op, r => MemoryMarshalRead<long>(r, i)); break;
                default: ((byte*)data)[i] = Reduce(op, r => hub.Data[r]![i]); break;
            }
        Phase();
    }

    T MemoryMarshalRead<T>(int r, int i) where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(hub.Data[r])[i];

    T Reduce<T>(ReduceOp op, Func<int, T> at) where T : System.Numerics.INumber<T>
    {
        T acc = at(0);
        for (int r = 1; r < Size; r++)
            acc = op == ReduceOp.Sum ? acc + at(r) : op == ReduceOp.Max ? T.Max(acc, at(r)) : T.Min(acc, at(r));
        return acc;
    }

    internal override void AllGatherVCore(void* send, int sendCount, void* recv, int* counts, int* displs, Element e)
    {
        int es = SizeOf(e);
        hub.Data[rank] = new ReadOnlySpan<byte>(send, sendCount * es).ToArray();
        Phase();
        for (int r = 0; r < Size; r++) hub.Data[r].AsSpan().CopyTo(new Span<byte>((byte*)recv + (long)displs[r] * es, counts[r] * es));
        Phase();
    }

    internal override void AllToAllVCore(void* send, int* sendCounts, int* sendDispls, void* recv, int* recvCounts, int* recvDispls, Element e)
    {
        int es = SizeOf(e), total = sendDispls[Size];
        hub.Data[rank] = new ReadOnlySpan<byte>(send, total * es).ToArray();
        hub.Counts[rank] = new ReadOnlySpan<int>(sendCounts, Size).ToArray();
        hub.Displs[rank] = new ReadOnlySpan<int>(sendDispls, Size + 1).ToArray();
        Phase();
        for (int s = 0; s < Size; s++)
        {
            if (hub.Counts[s]![rank] != recvCounts[s]) throw new InvalidOperationException($"rank {s} sends {hub.Counts[s]![rank]} to rank {rank}, which expects {recvCounts[s]}");
            hub.Data[s].AsSpan(hub.Displs[s]![rank] * es, recvCounts[s] * es).CopyTo(new Span<byte>((byte*)recv + (long)recvDispls[s] * es, recvCounts[s] * es));
        }
        Phase();
    }

    internal override void BroadcastCore(void* data, int count, Element e, int root)
    {
        int bytes = count * SizeOf(e);
        if (rank == root) hub.Data[root] = new ReadOnlySpan<byte>(data, bytes).ToArray();
        Phase();
        if (rank != root) hub.Data[root].AsSpan().CopyTo(new Span<byte>(data, bytes));
        Phase();
    }

    internal override void BarrierCore() => Phase();
}
