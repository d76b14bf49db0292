// A Device owns one ILGPU context and accelerator, the kernels loaded on it, its memory accounting and
// its autograd tape. Open one by name ("cpu", "cuda", "opencl", "auto"); everything else in Peer
// (tensors, ops, modules) hangs off a Device.
// The one rule for CPU fast paths: an op's portable kernel (Ops/X.cs) is its definition, its CPU body (the [External]
// method and a kernel of the portable kernel's signature that calls it) goes beside its name in Ops/Cpu/XCpu.cs
// (Optim/Cpu/XCpu.cs for an optimizer), and the launcher's constructor loads d.LoadKernel(portable, cpuBody, bits),
// which loads the CPU body only on the CPU accelerator with DeviceOptions.PortableKernels off and vectors at least bits wide.
// Variants shaped for GPUs (groups and shared memory, Ops/Gpu/) are chosen in the same constructor by accelerator type
// (!ChunksWork and MaxGroupSize). Every kernel loads through LoadKernel or LoadGroupedKernel (DeviceKernels.cs), which
// record it, so that the test suite compiles all of them for CUDA and OpenCL, and wrap it, so that the profiler sees every launch.
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Peer;

/// <summary>The backends Peer can run on.</summary>
public enum Backend
{
    /// <summary>ILGPU's CPU accelerator: kernels run as .NET code on OS threads.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through CUDA.</summary>
    Cuda,
    /// <summary>An OpenCL device (a GPU, or PoCL on the CPU).</summary>
    OpenCL,
}

/// <summary>Settings for opening a <see cref="Device"/>.</summary>
public sealed record DeviceOptions
{
    /// <summary>Threads of the CPU accelerator's single warp; 0 means one per logical processor.
    /// The CPU accelerator runs fastest with one group of as many threads as cores, each taking a contiguous chunk.</summary>
    public int CpuThreads { get; init; }

    /// <summary>Index of the device among those of the chosen backend.</summary>
    public int Index { get; init; }

    /// <summary>
    /// Load every op's portable kernel even on the CPU accelerator, instead of its CPU body (the SIMD code some hot ops add
    /// there); for tests and comparisons. Other backends always run the portable kernels.
    /// </summary>
    public bool PortableKernels { get; init; }

    /// <summary>
    /// The widest SIMD vectors, in bits, that the CPU bodies may use: 0 (the default) for the widest this CPU accelerates,
    /// 256 to never use the 512-bit bodies (so that tests run the 256-bit paths on an AVX-512 machine), 512 as 0.
    /// A body that needs wider vectors than allowed is not loaded: its op runs the narrower body or the portable kernel.
    /// </summary>
    public int MaxCpuVectorBits { get; init; }

    /// <summary>
    /// Check the ids handed to <see cref="Ops.PeerExperts"/> and the rows of sparse gradients before an optimizer step on every
    /// backend, not only on the CPU accelerator. A check reads a count or the rows back to the host, which on a GPU stalls the
    /// launch queue: with this off, nothing inside a training step waits for a GPU. Ids that Peer's own ops produce are in range
    /// by construction (<see cref="Ops.ProductKeyTopK"/>, the sort-and-segment behind sparse gradients); on a GPU without the
    /// check, an id outside its table is never used to read (the expert kernels give that token NaN, as Ops.Embedding does for a
    /// bad token) and a sparse row outside its parameter is not updated.
    /// For debugging. The CPU accelerator always checks: its launches wait anyway, and an out-of-range access ends the process there.
    /// </summary>
    public bool CheckIndices { get; init; }

    /// <summary>The default <see cref="BufferPoolBytes"/>: 1 GiB.</summary>
    public const long DefaultBufferPoolBytes = 1L << 30;

    /// <summary>
    /// Most bytes of idle tensor buffers the device keeps for reuse (0 turns the pool off): a buffer whose last tensor is disposed
    /// waits there for the next tensor of its size instead of being freed. Pooled bytes count as live (<see cref="Device.LiveBytes"/>);
    /// <see cref="Device.TrimPool"/> frees them.
    /// </summary>
    public long BufferPoolBytes { get; init; } = DefaultBufferPoolBytes;
}

/// <summary>What <see cref="Device.List"/> reports for each backend.</summary>
/// <param name="Backend">The backend.</param>
/// <param name="Name">Device name, or null when none is available.</param>
/// <param name="Available">Whether a device of this backend can be opened.</param>
/// <param name="Reason">Why not, when it cannot.</param>
public sealed record DeviceInfo(Backend Backend, string? Name, bool Available, string? Reason);

/// <summary>One accelerator with its kernels, memory accounting and autograd tape.</summary>
public sealed partial class Device : IDisposable
{
    readonly Dictionary<Type, object> launchers = new();
    readonly object gate = new();
    readonly List<string> opNames = new();
    readonly Dictionary<string, int> opIds = new();
    Type? building;
    long liveBytes, peakBytes, tensorBytes, peakTensorBytes;
    bool disposed;
    // The attached profiler, read by every launch (Runtime/DeviceKernels.cs): null costs one check per launch.
    Profiler? profiler;

    /// <summary>The ILGPU context.</summary>
    public Context Context { get; }
    /// <summary>The ILGPU accelerator.</summary>
    public Accelerator Accelerator { get; }
    /// <summary>The backend.</summary>
    public Backend Backend { get; }
    /// <summary>Backend and device name, e.g. "cpu (CPUAccelerator, 2 threads)".</summary>
    public string Name { get; private init; }
    /// <summary>The autograd tape of this device.</summary>
    public Tape Tape { get; }
    /// <summary>Kernel indices launched for chunked kernels: the CPU thread count, or a GPU-filling number.</summary>
    public int Workers { get; private init; }

    Device(Context context, Accelerator accelerator, Backend backend, int cpuWorkers = 0, DeviceOptions? options = null)
    {
        Context = context;
        Accelerator = accelerator;
        Backend = backend;
        Workers = backend == Backend.Cpu
            ? cpuWorkers
            : Math.Max(1, accelerator.NumMultiprocessors * accelerator.MaxNumThreadsPerMultiprocessor * 2);
        Name = $"{backend.ToString().ToLowerInvariant()} ({accelerator.Name})";
        ChunksWork = backend == Backend.Cpu || OpenClBackend.RunsOnHostCpu(accelerator);
        CpuBodyBits = backend == Backend.Cpu && !(options?.PortableKernels ?? false) ? CpuVectorBits(options?.MaxCpuVectorBits ?? 0) : -1;
        MaxGroupSize = accelerator.MaxNumThreadsPerGroup;
        ChecksIndices = backend == Backend.Cpu || (options?.CheckIndices ?? false);
        Tape = new Tape(this);
        Pool = new BufferPool(this, options?.BufferPoolBytes ?? DeviceOptions.DefaultBufferPoolBytes);
        AllocateOp = RegisterOp("Tensor.Allocate");
        ReuseOp = RegisterOp("Tensor.Reuse");
        FreeOp = RegisterOp("Tensor.Free");
        CopyOp = RegisterOp("Tensor.Copy");
        ZeroOp = RegisterOp("Tensor.Zero");
        ToHostOp = RegisterOp("Tensor.ToHost");
        FromHostOp = RegisterOp("Tensor.FromHost");
    }

    /// <summary>Profiler ids of the tensor storage's own work (not kernels): allocation, reuse of a pooled buffer, freeing, a copy
    /// between tensors, zeroing and host copies.</summary>
    internal readonly int AllocateOp, ReuseOp, FreeOp, CopyOp, ZeroOp, ToHostOp, FromHostOp;

    /// <summary>The idle buffers kept for reuse (Runtime/Storage.cs).</summary>
    internal BufferPool Pool { get; }

    // The widest vectors this CPU accelerates (0 without SIMD), capped by the option.
    static int CpuVectorBits(int cap)
    {
        int bits = Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Vector128.IsHardwareAccelerated ? 128 : 0;
        return cap > 0 ? Math.Min(bits, cap) : bits;
    }

    /// <summary>
    /// The widest vectors, in bits, that CPU bodies may use on this device (0 when the CPU has no SIMD unit), or -1 where
    /// no CPU body is loaded: on other backends than the CPU accelerator, or with <see cref="DeviceOptions.PortableKernels"/>.
    /// </summary>
    internal int CpuBodyBits { get; private init; }

    /// <summary>
    /// The kernel method a launcher loads for one operation: <paramref name="cpuBody"/> (a kernel of the same signature that
    /// calls an op's CPU body, in Ops/Cpu/XCpu.cs) on the CPU accelerator when the body may run there, else
    /// <paramref name="portable"/> (the op's definition). <paramref name="bits"/> is the vector width the body needs
    /// (0 when it needs no SIMD unit, or adapts to what there is).
    /// </summary>
    internal TKernel Choose<TKernel>(TKernel portable, TKernel cpuBody, int bits) where TKernel : Delegate =>
        CpuBodyBits >= bits ? cpuBody : portable;

    /// <summary>
    /// Whether <see cref="Split"/> gives each index one contiguous chunk (the CPU accelerator, and OpenCL on the CPU
    /// such as PoCL, where a grid-stride loop over 4M floats ran 15-50x slower) rather than a grid-stride loop (GPUs).
    /// Kernels that build their own <see cref="Work"/> should follow it; <see cref="IsCpu"/> says only which accelerator runs.
    /// </summary>
    internal bool ChunksWork { get; private init; }

    /// <summary>Whether ops check ids and sparse rows on the host before launching (see <see cref="DeviceOptions.CheckIndices"/>).</summary>
    internal bool ChecksIndices { get; }

    /// <summary>True for ILGPU's CPU accelerator.</summary>
    public bool IsCpu => Backend == Backend.Cpu;

    /// <summary>Bytes of device memory held by tensors: those in use and the idle ones pooled for reuse (<see cref="PooledBytes"/>).</summary>
    public long LiveBytes => Interlocked.Read(ref liveBytes);
    /// <summary>Bytes of <see cref="LiveBytes"/> idle in the buffer pool (see <see cref="DeviceOptions.BufferPoolBytes"/>).</summary>
    public long PooledBytes => Pool.Bytes;
    /// <summary>Bytes of <see cref="LiveBytes"/> viewed by live tensors: <see cref="LiveBytes"/> less <see cref="PooledBytes"/>.</summary>
    public long TensorBytes => Interlocked.Read(ref tensorBytes);
    /// <summary>Largest <see cref="TensorBytes"/> seen since creation or the last <see cref="ResetPeak"/>: the memory the work needed,
    /// where <see cref="PeakBytes"/> also counts what the pool held idle.</summary>
    public long PeakTensorBytes => Interlocked.Read(ref peakTensorBytes);
    /// <summary>Frees every idle pooled buffer; returns the bytes freed (they leave <see cref="LiveBytes"/>).</summary>
    public long TrimPool() => Pool.Trim();
    /// <summary>Largest <see cref="LiveBytes"/> seen since creation or the last <see cref="ResetPeak"/>.</summary>
    public long PeakBytes => Interlocked.Read(ref peakBytes);
    /// <summary>Sets <see cref="PeakBytes"/> to the current <see cref="LiveBytes"/> and <see cref="PeakTensorBytes"/> to <see cref="TensorBytes"/>.</summary>
    public void ResetPeak()
    {
        Interlocked.Exchange(ref peakBytes, LiveBytes);
        Interlocked.Exchange(ref peakTensorBytes, TensorBytes);
    }

    // Device memory allocated (+) or freed (-).
    internal void Track(long bytes) => Raise(ref peakBytes, Interlocked.Add(ref liveBytes, bytes));

    // Bytes taken by (+) or given back from (-) tensor storage, pooled or not.
    internal void TrackTensors(long bytes) => Raise(ref peakTensorBytes, Interlocked.Add(ref tensorBytes, bytes));

    static void Raise(ref long peak, long now)
    {
        long seen;
        while (now > (seen = Interlocked.Read(ref peak)) && Interlocked.CompareExchange(ref peak, now, seen) != seen) { }
    }

    /// <summary>
    /// Opens a device by name: <c>cpu</c>, <c>cuda</c>, <c>opencl</c> or <c>auto</c> (CUDA, then an OpenCL GPU, then the CPU
    /// accelerator, which trains faster than OpenCL on the CPU as measured on a 2-core machine).
    /// </summary>
    /// <exception cref="ArgumentException">The name is unknown, or that backend has no device here (the message lists what is present).</exception>
    public static Device Open(string name = "auto", DeviceOptions? options = null)
    {
        options ??= new DeviceOptions();
        string key = (name ?? "").Trim().ToLowerInvariant();
        Check.That(key is "cpu" or "cuda" or "opencl" or "auto", nameof(name), name, "one of cpu, cuda, opencl, auto");
        Check.That(options.Index >= 0, nameof(options.Index), options.Index, "a non-negative device index");
        Check.That(options.CpuThreads >= 0, nameof(options.CpuThreads), options.CpuThreads, "0 (one per processor) or a positive thread count");
        Check.That(options.MaxCpuVectorBits is 0 or 256 or 512, nameof(options.MaxCpuVectorBits), options.MaxCpuVectorBits,
            "0 (the widest this CPU accelerates), 256 or 512");
        Check.That(options.BufferPoolBytes >= 0, nameof(options.BufferPoolBytes), options.BufferPoolBytes, "0 (no pool) or a positive byte count");
        if (key == "auto")
        {
            var present = List();
            if (present.Any(d => d.Backend == Backend.Cuda && d.Available)) key = "cuda";
            else if (OpenClBackend.FirstGpu() is int gpu) return OpenClBackend.Open(options with { Index = gpu });
            // Without a GPU: the CPU accelerator, not OpenCL on the CPU (PoCL), because it ran a training step faster here.
            // Measured 2026-11-28 (2-core shared machine, load 9-19, PoCL 3.1, after the row matmul kernel for PoCL):
            // `dotnet run -c Release --project Peer.Training -- train --steps 30 --device cpu|opencl`, median tokens/s of
            // steps 5-29, 10 interleaved pairs: cpu 1592-4241, opencl 1566-3105; cpu faster in 9 of 10 pairs (opencl/cpu
            // median 0.75); whole-run wall time median 27 s cpu vs 37.5 s opencl (PoCL also compiles its kernels at start).
            else key = "cpu";
        }
        return key switch
        {
            "cpu" => OpenCpu(options),
            "cuda" => OpenCuda(options),
            _ => OpenClBackend.Open(options),
        };
    }

    static Device OpenCpu(DeviceOptions options)
    {
        int threads = options.CpuThreads > 0 ? options.CpuThreads : Environment.ProcessorCount;
        // One multiprocessor whose single warp has a thread per core: groups run all cores at once, and each
        // launched index takes a contiguous chunk. ILGPU wants a power-of-two warp of at least 2 threads; surplus
        // threads of the warp get no index.
        int warp = Math.Max(2, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)threads));
        var cpu = new CPUDevice(warp, 1, 1);
        var context = Context.Create(b => b.CPU(cpu).EnableAlgorithms().Optimize(OptimizationLevel.O1).Math(MathMode.Default));
        var acc = context.GetCPUDevice(0).CreateCPUAccelerator(context, CPUAcceleratorMode.Parallel);
        return new Device(context, acc, Backend.Cpu, threads, options);
    }

    static Device OpenCuda(DeviceOptions options)
    {
        var context = CreateCudaContext(withDevices: true);
        var devices = context.GetCudaDevices();
        if (devices.Count <= options.Index)
        {
            context.Dispose();
            throw new ArgumentException($"device = 'cuda' (index {options.Index}): no such CUDA device here. Present: {Describe(List())}.", "name");
        }
        var acc = devices[options.Index].CreateAccelerator(context);
        return new Device(context, acc, Backend.Cuda, 0, options);
    }

    /// <summary>
    /// A context configured as Peer's CUDA devices are: ILGPU.Algorithms' math, O2, and the PTX code for the calls ILGPU cannot
    /// translate (GpuIntrinsics). Without <paramref name="withDevices"/> it has no device and serves to compile PTX on any
    /// machine (the kernel gate of the test suite).
    /// </summary>
    internal static Context CreateCudaContext(bool withDevices)
    {
        var context = Context.Create(b =>
        {
            if (withDevices) b.Cuda();
            b.EnableAlgorithms().Optimize(OptimizationLevel.O2).Math(MathMode.Default);
            GpuIntrinsics.Register(b); // after EnableAlgorithms: ILGPU uses the implementation registered last
        });
        GpuIntrinsics.Track(context);
        return context;
    }

    internal static Device FromOpenCl(Context context, Accelerator accelerator, DeviceOptions options) => new(context, accelerator, Backend.OpenCL, 0, options);

    /// <summary>Lists every backend with its device, or why it is unavailable.</summary>
    public static IReadOnlyList<DeviceInfo> List()
    {
        var result = new List<DeviceInfo> { new(Backend.Cpu, $"CPU accelerator, {Environment.ProcessorCount} threads", true, null) };
        try
        {
            using var context = Context.Create(b => b.Cuda());
            var cuda = context.GetCudaDevices();
            result.Add(cuda.Count > 0
                ? new DeviceInfo(Backend.Cuda, cuda[0].Name, true, null)
                : new DeviceInfo(Backend.Cuda, null, false, "no CUDA driver or no NVIDIA GPU found"));
        }
        catch (Exception e)
        {
            result.Add(new DeviceInfo(Backend.Cuda, null, false, $"CUDA unavailable: {e.Message}"));
        }
        result.Add(OpenClBackend.Describe());
        return result;
    }

    internal static string Describe(IReadOnlyList<DeviceInfo> list) =>
        string.Join("; ", list.Select(d => d.Available ? $"{d.Backend.ToString().ToLowerInvariant()}: {d.Name}" : $"{d.Backend.ToString().ToLowerInvariant()}: absent ({d.Reason})"));

    /// <summary>Splits <paramref name="n"/> items between this device's workers (see <see cref="Work"/>).</summary>
    public Work Split(int n)
    {
        if (n <= 0) return new Work(0, 1, 1);
        if (ChunksWork)
        {
            int w = Math.Min(Workers, n);
            return new Work(n, w, (n + w - 1) / w);
        }
        return new Work(n, Math.Min(Workers, n), 1);
    }

    /// <summary>
    /// The launcher object of type <typeparamref name="T"/> for this device, created once by <paramref name="create"/>
    /// (which loads its kernels) and cached. A failed kernel compile clears the context's cache so that later loads still work.
    /// </summary>
    public T Get<T>(Func<Device, T> create) where T : class
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (launchers.TryGetValue(typeof(T), out var found)) return (T)found;
            var outer = building;
            building = typeof(T); // names the ops of the kernels it loads (RegisterOp)
            try
            {
                // On OpenCL a rejected kernel comes back with the compiler's build log (OpenClAdapter).
                var made = Backend == Backend.OpenCL ? OpenClAdapter.LoadExplained(this, create) : create(this);
                launchers[typeof(T)] = made;
                return made;
            }
            catch
            {
                // One failed compile poisons every later load in the context (docs/ilgpu.md): recover it.
                Context.ClearCache(ClearCacheMode.Everything);
                throw;
            }
            finally
            {
                building = outer;
            }
        }
    }

    /// <summary>Waits for all launched work to finish.</summary>
    public void Synchronize() => Accelerator.Synchronize();

    /// <inheritdoc />
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        profiler = null;
        Pool.Trim(close: true);
        Accelerator.Dispose();
        Context.Dispose();
    }
}
