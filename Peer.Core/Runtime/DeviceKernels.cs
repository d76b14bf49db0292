// How launchers load kernels, and the record of what each device loaded. A launcher is a class named XKernels whose
// constructor takes the Device and loads its kernels once (Device.Get caches it); every load goes through LoadKernel
// (implicitly grouped: one index per item, ILGPU picks the group size) or LoadGroupedKernel (explicitly grouped: shared
// memory and barriers), never through the accelerator directly, so that the device knows every kernel it loaded. A
// device opened by ForInventory loads nothing: its launchers choose their kernels as they would on the backend it stands
// for (a CUDA GPU, say, on a machine without one), and its record is then the list of kernels that backend would run,
// which the test suite compiles for CUDA (PTX) and OpenCL (docs/ilgpu.md, "The kernel gate").
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
    static readonly Lazy<Dictionary<int, MethodInfo>> implicitLoaders = new(() => Loaders(nameof(KernelLoaders.LoadAutoGroupedStreamKernel)));
    static readonly Lazy<Dictionary<int, MethodInfo>> explicitLoaders = new(() => Loaders(nameof(KernelLoaders.LoadStreamKernel)));
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
    /// index (how many items) and the kernel's other arguments, and runs on the accelerator's default stream.
    /// </summary>
    internal TKernel LoadKernel<TKernel>(TKernel kernel) where TKernel : Delegate
    {
        Record(kernel.Method, false);
        if (ListsOnly) return Unlaunchable<TKernel>();
        var args = typeof(TKernel).GetGenericArguments();
        return (TKernel)implicitLoaders.Value[args.Length].MakeGenericMethod(args)
            .Invoke(null, BindingFlags.DoNotWrapExceptions, null, [Accelerator, kernel], null)!;
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
        return (TLauncher)explicitLoaders.Value[args.Length].MakeGenericMethod(args)
            .Invoke(null, BindingFlags.DoNotWrapExceptions, null, [Accelerator, kernel], null)!;
    }

    void Record(MethodInfo method, bool explicitlyGrouped)
    {
        lock (loaded) loaded.Add(new LoadedKernel(method, explicitlyGrouped));
    }

    // ILGPU's stream-launcher loaders (extension methods of Accelerator), one per number of type arguments.
    static Dictionary<int, MethodInfo> Loaders(string name) =>
        typeof(KernelLoaders).GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Where(m => m.Name == name && m.GetParameters().Length == 2)
            .ToDictionary(m => m.GetGenericArguments().Length);

    static TDelegate Unlaunchable<TDelegate>() where TDelegate : Delegate
    {
        var parameters = typeof(TDelegate).GetMethod("Invoke")!.GetParameters().Select(p => Expression.Parameter(p.ParameterType)).ToArray();
        var error = Expression.New(typeof(InvalidOperationException).GetConstructor([typeof(string)])!,
            Expression.Constant("a kernel-inventory device lists kernels and cannot launch them"));
        return Expression.Lambda<TDelegate>(Expression.Throw(error), parameters).Compile();
    }
}
