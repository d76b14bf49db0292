// The communicator over MPI: a thin binding to the MPICH ABI (libmpich.so.12 from Debian's mpich package; Intel MPI
// and MVAPICH share the ABI), whose handles are integers with fixed values (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...),
// so the binding is a table of function pointers loaded on first use and a few constants: nothing is loaded unless a
// run asks for MPI. Every collective is the non-blocking MPI-3 call (MPI_Iallreduce, ...) polled with MPI_Test until
// it completes or Timeout passes; then it throws, and the program says why and calls Abort (docs/distributed.md).
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Peer.Distributed;

/// <summary>The ranks started by an MPI launcher (<c>mpiexec -np R ...</c>), over MPI_COMM_WORLD.</summary>
public sealed unsafe class MpiCommunicator : Communicator
{
    // MPICH ABI constants (mpi.h of MPICH 3.x and 4.x; unchanged since MPICH 3.1's ABI initiative).
    const int CommWorld = 0x44000000, ErrorsReturn = 0x54000001, InfoNull = 0x1c000000, CommTypeShared = 1, ThreadFunneled = 1;
    const int Float = 0x4c00040a, Double = 0x4c00080b, Int = 0x4c000405, LongLong = 0x4c000809, Byte = 0x4c00010d;
    const int OpMax = 0x58000001, OpMin = 0x58000002, OpSum = 0x58000003;
    static readonly nint StatusIgnore = 1;

    /// <summary>The libraries tried in order when <c>PEER_MPI_LIBRARY</c> names none.</summary>
    public static readonly string[] LibraryNames = ["libmpich.so.12", "libmpi.so.12"];

    static Native? native;
    static bool finalized;
    readonly int rank, size, localRank, localSize;

    /// <inheritdoc />
    public override int Rank => rank;
    /// <inheritdoc />
    public override int Size => size;
    /// <inheritdoc />
    public override int LocalRank => localRank;
    /// <inheritdoc />
    public override int LocalSize => localSize;
    /// <inheritdoc />
    public override string Library { get; }

    MpiCommunicator(int rank, int size, int localRank, int localSize, string library)
    {
        this.rank = rank;
        this.size = size;
        this.localRank = localRank;
        this.localSize = localSize;
        Library = library;
    }

    /// <summary>Whether this process was started by an MPI launcher (MPICH's Hydra or another PMI/PMIx one), with the world size it gives.</summary>
    public static bool Launched(out int worldSize)
    {
        string? s = Environment.GetEnvironmentVariable("PMI_SIZE") ?? Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE")
            ?? Environment.GetEnvironmentVariable("PMIX_SIZE");
        worldSize = int.TryParse(s, out int n) ? n : 0;
        return s != null || Environment.GetEnvironmentVariable("PMIX_RANK") != null;
    }

    /// <summary>
    /// Initialises MPI (once per process) and returns the world communicator. The library is <c>PEER_MPI_LIBRARY</c> when set,
    /// else the first of <see cref="LibraryNames"/> that loads.
    /// </summary>
    /// <exception cref="CommunicationException">No MPICH-ABI library, a launcher of another ABI (Open MPI), or MPI_Init failed;
    /// the message says what to install or run.</exception>
    public static MpiCommunicator Open()
    {
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") != null)
            throw new CommunicationException("MPI: this process was started by Open MPI's mpirun, but Peer speaks the MPICH ABI (libmpich.so.12); "
                + "install Debian's mpich package and start the run with mpiexec.mpich");
        if (finalized) throw new CommunicationException("MPI: already finalized in this process; MPI can be initialised once per process");
        var n = native ??= Native.Load();
        int initialized;
        n.Check(n.Initialized(&initialized), "MPI_Initialized");
        if (initialized == 0)
        {
            int provided;
            n.Check(n.InitThread(null, null, ThreadFunneled, &provided), "MPI_Init_thread");
        }
        n.Check(n.CommSetErrhandler(CommWorld, ErrorsReturn), "MPI_Comm_set_errhandler");
        int r, s, lr, ls, local;
        n.Check(n.CommRank(CommWorld, &r), "MPI_Comm_rank");
        n.Check(n.CommSize(CommWorld, &s), "MPI_Comm_size");
        n.Check(n.CommSplitType(CommWorld, CommTypeShared, r, InfoNull, &local), "MPI_Comm_split_type");
        n.Check(n.CommRank(local, &lr), "MPI_Comm_rank");
        n.Check(n.CommSize(local, &ls), "MPI_Comm_size");
        n.Check(n.CommFree(&local), "MPI_Comm_free");
        return new MpiCommunicator(r, s, lr, ls, $"{n.Version} ({n.Path})");
    }

    /// <summary>Calls MPI_Abort on the world: every rank ends with <paramref name="exitCode"/>.</summary>
    public override void Abort(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        native!.Abort(CommWorld, exitCode);
        Environment.Exit(exitCode); // MPI_Abort does not return; this is in case a library lets it
    }

    /// <summary>Finalizes MPI (after a barrier bounded by <see cref="Communicator.Timeout"/>, so that no rank leaves while another
    /// still talks to it).</summary>
    public override void Dispose()
    {
        if (finalized || native is null) return;
        Barrier();
        finalized = true;
        native.End();
    }

    internal override void AllReduceCore(void* data, int count, Element e, ReduceOp op)
    {
        int req, mop = op switch { ReduceOp.Max => OpMax, ReduceOp.Min => OpMin, _ => OpSum };
        native!.Check(native.Iallreduce((void*)-1, data, count, TypeOf(e), mop, CommWorld, &req), "MPI_Iallreduce"); // MPI_IN_PLACE
        Wait(req, "all-reduce", (long)count * SizeOf(e));
    }

    internal override void AllGatherVCore(void* send, int sendCount, void* recv, int* counts, int* displs, Element e)
    {
        int req;
        native!.Check(native.Iallgatherv(send, sendCount, TypeOf(e), recv, counts, displs, TypeOf(e), CommWorld, &req), "MPI_Iallgatherv");
        Wait(req, "all-gather", (long)displs[size] * SizeOf(e));
    }

    internal override void AllToAllVCore(void* send, int* sendCounts, int* sendDispls, void* recv, int* recvCounts, int* recvDispls, Element e)
    {
        int req;
        native!.Check(native.Ialltoallv(send, sendCounts, sendDispls, TypeOf(e), recv, recvCounts, recvDispls, TypeOf(e), CommWorld, &req), "MPI_Ialltoallv");
        Wait(req, "all-to-all", (long)recvDispls[size] * SizeOf(e));
    }

    internal override void BroadcastCore(void* data, int count, Element e, int root)
    {
        int req;
        native!.Check(native.Ibcast(data, count, TypeOf(e), root, CommWorld, &req), "MPI_Ibcast");
        Wait(req, "broadcast", (long)count * SizeOf(e));
    }

    internal override void BarrierCore()
    {
        int req;
        native!.Check(native.Ibarrier(CommWorld, &req), "MPI_Ibarrier");
        Wait(req, "barrier", 0);
    }

    // Polls the request: spins briefly (collectives of a step mostly finish in microseconds), then sleeps a millisecond
    // between tests so that waiting ranks leave the cores to the ones still computing.
    void Wait(int request, string what, long bytes)
    {
        var clock = Stopwatch.StartNew();
        for (int polls = 0; ; polls++)
        {
            int done;
            native!.Check(native.Test(&request, &done, StatusIgnore), $"MPI_Test ({what})");
            if (done != 0) return;
            if (clock.Elapsed > Timeout)
                throw new CommunicationException($"{Who}: the {what} of {bytes:N0} bytes got no answer from the other ranks within {Timeout.TotalSeconds:G4} s: "
                    + "a rank has died, hung or fallen that far behind; stopping the run (raise the timeout if a rank legitimately needs longer)");
            if (polls < 2000) Thread.SpinWait(50);
            else Thread.Sleep(1);
        }
    }

    static int TypeOf(Element e) => e switch
    {
        Element.Float => Float, Element.Double => Double, Element.Int => Int, Element.Long => LongLong, _ => Byte,
    };

    static int SizeOf(Element e) => e switch { Element.Double or Element.Long => 8, Element.Byte => 1, _ => 4 };

    // The MPI entry points used, resolved once from the library.
    sealed class Native
    {
        public string Path = "", Version = "";
        public delegate* unmanaged<int*, int> Initialized;
        public delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
        public delegate* unmanaged<int> FinalizeFn;
        public delegate* unmanaged<int, int, int> CommSetErrhandler;
        public delegate* unmanaged<int, int*, int> CommRank, CommSize;
        public delegate* unmanaged<int, int, int, int, int*, int> CommSplitType;
        public delegate* unmanaged<int*, int> CommFree;
        public delegate* unmanaged<void*, void*, int, int, int, int, int*, int> Iallreduce;
        public delegate* unmanaged<void*, int, int, void*, int*, int*, int, int, int*, int> Iallgatherv;
        public delegate* unmanaged<void*, int*, int*, int, void*, int*, int*, int, int, int*, int> Ialltoallv;
        public delegate* unmanaged<void*, int, int, int, int, int*, int> Ibcast;
        public delegate* unmanaged<int, int*, int> Ibarrier;
        public delegate* unmanaged<int*, int*, nint, int> Test;
        public delegate* unmanaged<int, int, int> AbortFn;
        public delegate* unmanaged<int, byte*, int*, int> ErrorString;
        public delegate* unmanaged<byte*, int*, int> LibraryVersion;

        public static Native Load()
        {
            string? chosen = Environment.GetEnvironmentVariable("PEER_MPI_LIBRARY");
            var tried = chosen != null ? [chosen] : LibraryNames;
            nint lib = 0;
            string path = "";
            foreach (var name in tried)
                if (NativeLibrary.TryLoad(name, out lib))
                {
                    path = name;
                    break;
                }
            if (lib == 0)
                throw new CommunicationException($"MPI: could not load {string.Join(" or ", tried)}; install Debian's mpich package (apt-get install mpich) "
                    + "or set PEER_MPI_LIBRARY to an MPICH-ABI libmpi");
            var n = new Native { Path = path };
            nint F(string name) => NativeLibrary.TryGetExport(lib, name, out var f) ? f
                : throw new CommunicationException($"MPI: {path} has no {name}; Peer needs an MPI-3 library of the MPICH ABI (MPICH 3.1 or later)");
            n.Initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized");
            n.InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)F("MPI_Init_thread");
            n.FinalizeFn = (delegate* unmanaged<int>)F("MPI_Finalize");
            n.CommSetErrhandler = (delegate* unmanaged<int, int, int>)F("MPI_Comm_set_errhandler");
            n.CommRank = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_rank");
            n.CommSize = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_size");
            n.CommSplitType = (delegate* unmanaged<int, int, int, int, int*, int>)F("MPI_Comm_split_type");
            n.CommFree = (delegate* unmanaged<int*, int>)F("MPI_Comm_free");
            n.Iallreduce = (delegate* unmanaged<void*, void*, int, int, int, int, int*, int>)F("MPI_Iallreduce");
            n.Iallgatherv = (delegate* unmanaged<void*, int, int, void*, int*, int*, int, int, int*, int>)F("MPI_Iallgatherv");
            n.Ialltoallv = (delegate* unmanaged<void*, int*, int*, int, void*, int*, int*, int, int, int*, int>)F("MPI_Ialltoallv");
            n.Ibcast = (delegate* unmanaged<void*, int, int, int, int, int*, int>)F("MPI_Ibcast");
            n.Ibarrier = (delegate* unmanaged<int, int*, int>)F("MPI_Ibarrier");
            n.Test = (delegate* unmanaged<int*, int*, nint, int>)F("MPI_Test");
            n.AbortFn = (delegate* unmanaged<int, int, int>)F("MPI_Abort");
            n.ErrorString = (delegate* unmanaged<int, byte*, int*, int>)F("MPI_Error_string");
            n.LibraryVersion = (delegate* unmanaged<byte*, int*, int>)F("MPI_Get_library_version");
            var text = new byte[8192];
            int len;
            fixed (byte* p = text)
                if (n.LibraryVersion(p, &len) == 0) n.Version = string.Join(' ', Encoding.ASCII.GetString(text, 0, Math.Clamp(len, 0, text.Length)).Split('\n')[0]
                    .Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries));
            return n;
        }

        public void Check(int code, string call)
        {
            if (code == 0) return;
            var text = new byte[512];
            int len = 0;
            fixed (byte* p = text) ErrorString(code, p, &len);
            throw new CommunicationException($"MPI: {call} failed with error {code}: {Encoding.ASCII.GetString(text, 0, Math.Clamp(len, 0, text.Length)).Trim()}");
        }

        public void Abort(int comm, int code) => AbortFn(comm, code);

        public void End() => FinalizeFn();
    }
}
