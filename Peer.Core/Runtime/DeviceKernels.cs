// How launchers load kernels, and the record of what each device loaded. A launcher is a class named XKernels whose
// constructor takes the Device and loads its kernels once (Device.Get caches it); every load goes through LoadKernel
// (implicitly grouped: one index per item, ILGPU picks the group size) or LoadGroupedKernel (explicitly grouped: shared
// memory and barriers), never through the accelerator directly, so that the device knows every kernel it loaded and
// the profiler sees every launch. A device opened by ForInventory loads nothing: its launchers choose their kernels as
// they would on the backend it stands for (a CUDA GPU, say, on a machine without one), and its record is then the list
// of kernels that backend would run, which the test suite compiles for CUDA (PTX) and OpenCL (docs/ilgpu.md, "The
// kernel gate"). Each loaded kernel is wrapped so that a launch reports to the device's profiler when one is attached
// (Device.Profile) and costs one null check when none is; the op's name is the launcher class being built and the
// portable kernel's method (RegisterOp). The wrappers are generated, one per kernel arity, picked by reflection once
// per kernel when its launcher is built.
using System.Linq.Expressions;
using System.Reflection;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace Peer;

/// <summary>One kernel method a device loaded, and whether it is explicitly grouped (launched with a group size).</summary>
internal readonly record struct LoadedKernel(MethodInfo Method, bool ExplicitlyGrouped);

/// <summary>What a device opened by <see cref="Device.ForInventory"/> stands for.</summary>
/// <param name="Backend">The backend whose kernel choices the launchers make.</param>
/// <param name="ChunksWork">Whether that device runs kernels over CPU cores (<see cref="Device.ChunksWork"/>: PoCL), not a GPU.</param>
/// <param name="MaxGroupSize">Its largest group, in threads.</param>
/// <param name="Workers">Its <see cref="Device.Workers"/>.</param>
internal sealed record InventoryShape(Backend Backend, bool ChunksWork, int MaxGroupSize, int Workers)
{
    /// <summary>A CUDA GPU (1024 threads per group; the workers of 80 multiprocessors of 2048 threads, twice over).</summary>
    public static readonly InventoryShape CudaGpu = new(Backend.Cuda, false, 1024, 80 * 2048 * 2);
    /// <summary>An OpenCL device on the host's CPU cores, such as PoCL.</summary>
    public static readonly InventoryShape OpenClOnCpu = new(Backend.OpenCL, true, 4096, 2);
}

public sealed partial class Device
{
    /// <summary>The profiler attached by <see cref="Profile"/>, or null (then launches record nothing).</summary>
    public Profiler? Profiler => profiler;

    /// <summary>
    /// Attaches a profiler that records, from now until it is disposed, the time and count of every kernel launch and tensor
    /// allocation on this device, by op and phase (see <see cref="Peer.Profiler"/>). One at a time per device.
    /// </summary>
    /// <example><code>
    /// using (var profile = device.Profile())
    /// {
    ///     for (int i = 0; i &lt; 10; i++) trainer.Step();
    ///     Console.WriteLine(profile.Report());
    /// }
    /// </code></example>
    /// <exception cref="InvalidOperationException">A profiler is already attached to this device.</exception>
    public Profiler Profile()
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (profiler != null)
                throw new InvalidOperationException($"A profiler is already attached to device '{Name}': dispose it before starting another.");
            profiler = new Profiler(this);
            return profiler;
        }
    }

    /// <summary>Detaches <paramref name="p"/> if it is the attached profiler (pausing or disposing it).</summary>
    internal void Detach(Profiler p) => Interlocked.CompareExchange(ref profiler, null, p);

    /// <summary>Attaches <paramref name="p"/> again after a pause; false when another profiler took its place.</summary>
    internal bool Attach(Profiler p) => Interlocked.CompareExchange(ref profiler, p, null) is null || ReferenceEquals(profiler, p);

    /// <summary>The profiler's name of an op, by id.</summary>
    internal string OpName(int id)
    {
        lock (opNames) return opNames[id];
    }

    /// <summary>Operations registered so far (ids 0 .. count-1).</summary>
    internal int OpCount
    {
        get { lock (opNames) return opNames.Count; }
    }

    /// <summary>The id of the op named <paramref name="name"/>, registered on first use.</summary>
    internal int RegisterOp(string name)
    {
        lock (opNames)
        {
            if (opIds.TryGetValue(name, out int id)) return id;
            opIds[name] = opNames.Count;
            opNames.Add(name);
            return opNames.Count - 1;
        }
    }

    /// <summary>
    /// The id of a kernel's op, named once for every backend: the launcher class being built (its name less a "Kernels"
    /// suffix; the kernel's declaring class outside <see cref="Get{T}"/>), a dot, and the portable kernel's method name less
    /// a "Kernel" suffix, with its generic arguments (less an "Op" suffix): <c>Elementwise.Binary&lt;Add&gt;</c>.
    /// </summary>
    internal int RegisterOp(MethodInfo kernel)
    {
        string owner = (building ?? kernel.DeclaringType)?.Name ?? "Kernel";
        if (owner.EndsWith("Kernels", StringComparison.Ordinal) && owner.Length > 7) owner = owner[..^7];
        string name = kernel.Name.EndsWith("Kernel", StringComparison.Ordinal) && kernel.Name.Length > 6 ? kernel.Name[..^6] : kernel.Name;
        if (kernel.IsGenericMethod)
            name += "<" + string.Join(", ", kernel.GetGenericArguments().Select(a => a.Name.EndsWith("Op", StringComparison.Ordinal) && a.Name.Length > 2 ? a.Name[..^2] : a.Name)) + ">";
        return RegisterOp(owner + "." + name);
    }

    static readonly MethodInfo[] implicitWrappers = Wrappers(nameof(Wrap)), explicitWrappers = Wrappers(nameof(WrapGrouped));
    readonly List<LoadedKernel> loaded = new();

    /// <summary>The largest group, in threads, that a kernel may be launched with here.</summary>
    internal int MaxGroupSize { get; private init; }

    /// <summary>Whether this device only lists the kernels its launchers choose (<see cref="ForInventory"/>): it loads and runs none.</summary>
    internal bool ListsOnly { get; private init; }

    /// <summary>The kernel methods loaded on this device so far (or, for <see cref="ListsOnly"/>, chosen), in order.</summary>
    internal IReadOnlyList<LoadedKernel> Loaded
    {
        get
        {
            lock (loaded) return loaded.ToArray();
        }
    }

    /// <summary>
    /// A device whose launchers choose their kernels as on a device of <paramref name="shape"/>, record them in
    /// <see cref="Loaded"/>, and load none (a launch fails). Tensors it allocates live in host memory.
    /// </summary>
    internal static Device ForInventory(InventoryShape shape)
    {
        var context = Context.Create(b => b.CPU(new CPUDevice(2, 1, 1)));
        var acc = context.GetCPUDevice(0).CreateCPUAccelerator(context);
        return new Device(context, acc, shape.Backend)
        {
            Name = $"{shape.Backend.ToString().ToLowerInvariant()} (kernel inventory{(shape.ChunksWork ? ", on CPU cores" : "")})",
            Workers = shape.Workers,
            ChunksWork = shape.ChunksWork,
            CpuBodyBits = -1,
            MaxGroupSize = shape.MaxGroupSize,
            ListsOnly = true,
        };
    }

    /// <summary>
    /// Loads an implicitly grouped kernel, a static method whose first parameter is its index: the launcher takes that
    /// index (how many items) and the kernel's other arguments, and runs on the accelerator's default stream. With
    /// <paramref name="cpuBody"/>, loads that instead where <see cref="Choose"/> picks it (vectors of at least
    /// <paramref name="bits"/>); the profiler names the launch after <paramref name="kernel"/>, the op's portable kernel.
    /// </summary>
    internal TKernel LoadKernel<TKernel>(TKernel kernel, TKernel? cpuBody = null, int bits = 0) where TKernel : Delegate
    {
        var chosen = cpuBody is null ? kernel : Choose(kernel, cpuBody, bits);
        Record(chosen.Method, false);
        if (ListsOnly) return Unlaunchable<TKernel>();
        var args = typeof(TKernel).GetGenericArguments();
        return (TKernel)implicitWrappers.Single(m => m.GetGenericArguments().Length == args.Length).MakeGenericMethod(args)
            .Invoke(this, BindingFlags.DoNotWrapExceptions, null, [chosen, RegisterOp(kernel.Method)], null)!;
    }

    /// <summary>
    /// Loads an explicitly grouped kernel (one that reads <c>Grid</c> and <c>Group</c>, shares memory, meets at barriers):
    /// the launcher <typeparamref name="TLauncher"/> is <c>Action&lt;KernelConfig, ...&gt;</c> over the kernel's parameters.
    /// </summary>
    internal TLauncher LoadGroupedKernel<TLauncher>(Delegate kernel) where TLauncher : Delegate
    {
        Record(kernel.Method, true);
        if (ListsOnly) return Unlaunchable<TLauncher>();
        var args = kernel.GetType().GetGenericArguments();
        return (TLauncher)explicitWrappers.Single(m => m.GetGenericArguments().Length == args.Length).MakeGenericMethod(args)
            .Invoke(this, BindingFlags.DoNotWrapExceptions, null, [kernel, RegisterOp(kernel.Method)], null)!;
    }

    void Record(MethodInfo method, bool explicitlyGrouped)
    {
        lock (loaded) loaded.Add(new LoadedKernel(method, explicitlyGrouped));
    }

    static MethodInfo[] Wrappers(string name) =>
        typeof(Device).GetMethods(BindingFlags.NonPublic | BindingFlags.Instance).Where(m => m.Name == name).ToArray();

    static TDelegate Unlaunchable<TDelegate>() where TDelegate : Delegate
    {
        var parameters = typeof(TDelegate).GetMethod("Invoke")!.GetParameters().Select(p => Expression.Parameter(p.ParameterType)).ToArray();
        var error = Expression.New(typeof(InvalidOperationException).GetConstructor([typeof(string)])!,
            Expression.Constant("a kernel-inventory device lists kernels and cannot launch them"));
        return Expression.Lambda<TDelegate>(Expression.Throw(error), parameters).Compile();
    }

    // The generated wrappers: ILGPU's loader for the kernel, and a launch that reports to the attached profiler.
    Action<TIndex, T1> Wrap<TIndex, T1>(Action<TIndex, T1> kernel, int op) where TIndex : struct, IIndex where T1 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1); p.End(op, t0); } else launch(i, a1); };
    }

    Action<TIndex, T1, T2> Wrap<TIndex, T1, T2>(Action<TIndex, T1, T2> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2); p.End(op, t0); } else launch(i, a1, a2); };
    }

    Action<TIndex, T1, T2, T3> Wrap<TIndex, T1, T2, T3>(Action<TIndex, T1, T2, T3> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3); p.End(op, t0); } else launch(i, a1, a2, a3); };
    }

    Action<TIndex, T1, T2, T3, T4> Wrap<TIndex, T1, T2, T3, T4>(Action<TIndex, T1, T2, T3, T4> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4); p.End(op, t0); } else launch(i, a1, a2, a3, a4); };
    }

    Action<TIndex, T1, T2, T3, T4, T5> Wrap<TIndex, T1, T2, T3, T4, T5>(Action<TIndex, T1, T2, T3, T4, T5> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6> Wrap<TIndex, T1, T2, T3, T4, T5, T6>(Action<TIndex, T1, T2, T3, T4, T5, T6> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct where T13 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13); };
    }

    Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14> Wrap<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14>(Action<TIndex, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14> kernel, int op) where TIndex : struct, IIndex where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct where T13 : struct where T14 : struct
    {
        var launch = Accelerator.LoadAutoGroupedStreamKernel(kernel);
        return (i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14) => { if (profiler is { } p) { long t0 = p.Begin(); launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14); p.End(op, t0); } else launch(i, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14); };
    }

    Action<KernelConfig, T1> WrapGrouped<T1>(Action<T1> kernel, int op) where T1 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1); p.End(op, t0); } else launch(c, a1); };
    }

    Action<KernelConfig, T1, T2> WrapGrouped<T1, T2>(Action<T1, T2> kernel, int op) where T1 : struct where T2 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2); p.End(op, t0); } else launch(c, a1, a2); };
    }

    Action<KernelConfig, T1, T2, T3> WrapGrouped<T1, T2, T3>(Action<T1, T2, T3> kernel, int op) where T1 : struct where T2 : struct where T3 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3); p.End(op, t0); } else launch(c, a1, a2, a3); };
    }

    Action<KernelConfig, T1, T2, T3, T4> WrapGrouped<T1, T2, T3, T4>(Action<T1, T2, T3, T4> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4); p.End(op, t0); } else launch(c, a1, a2, a3, a4); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5> WrapGrouped<T1, T2, T3, T4, T5>(Action<T1, T2, T3, T4, T5> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6> WrapGrouped<T1, T2, T3, T4, T5, T6>(Action<T1, T2, T3, T4, T5, T6> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7> WrapGrouped<T1, T2, T3, T4, T5, T6, T7>(Action<T1, T2, T3, T4, T5, T6, T7> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8>(Action<T1, T2, T3, T4, T5, T6, T7, T8> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8, a9) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12); };
    }

    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> WrapGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> kernel, int op) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct where T13 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13); };
    }
}
