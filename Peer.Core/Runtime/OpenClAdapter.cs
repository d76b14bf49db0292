// The one place where Peer makes ILGPU 1.5.3 accept an OpenCL device it would otherwise refuse,
// such as PoCL (Debian's pocl-opencl-icd, OpenCL on the CPU). Two things stand in the way:
//  1. Library name. ILGPU imports "OpenCL"; the runtime probes libOpenCL.so, which only the -dev
//     package provides; the ICD loader itself ships libOpenCL.so.1. We answer the runtime's
//     ResolvingUnmanagedDll event (raised only after its own probing failed) rather than calling
//     NativeLibrary.SetDllImportResolver on ILGPU's assembly: ILGPU calls SetDllImportResolver on
//     itself for CUDA under WSL, and only one resolver per assembly is allowed, so taking that slot
//     would make ILGPU's Cuda() throw there.
//  2. Generic address space. ILGPU's default device filter (CLContextExtensions.OpenCL()) and the
//     CLAccelerator constructor both refuse a device whose CLCapabilityContext.GenericAddressSpace
//     is false; PoCL 3.1 reports OpenCL 3.0 without CL_DEVICE_GENERIC_ADDRESS_SPACE_SUPPORT. We pass
//     our own filter (public API) and set that flag (internal setter, by reflection) on the device
//     we open. Why that is safe: in 1.5.3 the flag is read by those two checks only, never by the
//     OpenCL code generator, so the generated code is the same; Peer's kernels take ArrayViews,
//     which ILGPU emits as __global pointers, and use no atomics, the one place where ILGPU emits a
//     generic-pointer cast. A kernel that does need the generic address space fails to build on
//     such a device, at load time, with the OpenCL build log in the exception -- it cannot run
//     wrongly (seen: at ILGPU's O1, which leaves __generic pointers, PoCL refused every kernel). The bypass is checked against the ILGPU version and the shape of what it
//     touches, and refuses with a clear error when either differs.
using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using ILGPU;
using ILGPU.Backends.OpenCL;
using ILGPU.Runtime.OpenCL;

namespace Peer;

/// <summary>One OpenCL device as the adapter sees it.</summary>
/// <param name="Name">Device name as the driver reports it.</param>
/// <param name="Platform">Platform name (e.g. "Portable Computing Language").</param>
/// <param name="IsGpu">Whether the driver reports a GPU.</param>
/// <param name="Accepted">Whether Peer can open it.</param>
/// <param name="Note">Why it is refused, or which ILGPU check is bypassed for it; null when nothing applies.</param>
internal sealed record OpenClDeviceInfo(string Name, string Platform, bool IsGpu, bool Accepted, string? Note);

/// <summary>What the adapter found: library, platforms and devices, or why there are none.</summary>
/// <param name="Devices">Every OpenCL device of every platform, accepted or not, in ILGPU's order.</param>
/// <param name="Problem">Why no device is listed (library missing, no platform), or null.</param>
internal sealed record OpenClProbe(IReadOnlyList<OpenClDeviceInfo> Devices, string? Problem)
{
    /// <summary>The devices Peer can open, in the order <see cref="DeviceOptions.Index"/> counts them.</summary>
    public IEnumerable<OpenClDeviceInfo> Accepted => Devices.Where(d => d.Accepted);
}

/// <summary>
/// Makes ILGPU 1.5.3 load the OpenCL ICD loader by its versioned name and accept devices without generic
/// address-space support (PoCL). See the file header for what is bypassed and why it is safe.
/// </summary>
internal static class OpenClAdapter
{
    /// <summary>The ILGPU version whose internals the bypass was written and tested against.</summary>
    internal static readonly Version SupportedIlgpu = new(1, 5, 3, 0);

    static readonly string[] LinuxNames = ["libOpenCL.so.1", "libOpenCL.so"];
    static readonly object gate = new();
    static bool registered;

    /// <summary>
    /// Hooks library resolution once per process. Must run before anything touches ILGPU's <c>CLAPI</c>:
    /// its type initializer loads the library once and remembers a failure for the life of the process.
    /// </summary>
    internal static void EnsureResolver()
    {
        lock (gate)
        {
            if (registered) return;
            AssemblyLoadContext.Default.ResolvingUnmanagedDll += Resolve;
            registered = true;
        }
    }

    /// <summary>Maps ILGPU's import name "OpenCL" to the ICD loader's file; zero for every other request.</summary>
    internal static IntPtr Resolve(Assembly assembly, string name)
    {
        if (assembly != typeof(CLAPI).Assembly || !name.Equals(CLAPI.LibNameLinux, StringComparison.OrdinalIgnoreCase))
            return IntPtr.Zero;
        foreach (var candidate in CandidateNames())
            if (NativeLibrary.TryLoad(candidate, out var handle)) return handle;
        return IntPtr.Zero;
    }

    static string[] CandidateNames() =>
        OperatingSystem.IsLinux() ? LinuxNames
        : OperatingSystem.IsMacOS() ? ["/System/Library/Frameworks/OpenCL.framework/OpenCL"]
        : ["OpenCL.dll"];

    /// <summary>The ILGPU filter Peer uses: ILGPU's own minus the generic-address-space condition.</summary>
    internal static bool Openable(CLDevice d) => d.CLStdVersion >= CLBackend.MinimumVersion;

    /// <summary>Lists every OpenCL device with whether Peer can open it, or says why there is none.</summary>
    internal static OpenClProbe Probe() => Probe(CandidateNames());

    /// <summary><see cref="Probe()"/> looking for the OpenCL library under <paramref name="libraryNames"/> (tests pass absent names).</summary>
    internal static OpenClProbe Probe(string[] libraryNames)
    {
        EnsureResolver();
        if (!LibraryLoads(libraryNames, out string tried))
            return new([], $"OpenCL library not found (tried {tried}); install the ICD loader and a driver, e.g. apt-get install ocl-icd-libopencl1 pocl-opencl-icd");
        if (!CLAPI.CurrentAPI.IsSupported)
            return new([], "the OpenCL library loads but reports no platform; install a driver (ICD), e.g. apt-get install pocl-opencl-icd");
        using var context = Context.Create(b => b.OpenCL(static _ => true));
        var list = new List<OpenClDeviceInfo>();
        foreach (var d in context.GetCLDevices())
        {
            bool gpu = d.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_GPU);
            if (!Openable(d))
                list.Add(new(d.Name, d.PlatformName, gpu, false, $"refused: OpenCL C {d.CLStdVersion} is older than the {CLBackend.MinimumVersion} ILGPU's code generator emits"));
            else if (d.Capabilities.GenericAddressSpace)
                list.Add(new(d.Name, d.PlatformName, gpu, true, null));
            else if (ShapeProblem() is { } problem)
                list.Add(new(d.Name, d.PlatformName, gpu, false, $"refused: no generic address space, and {problem}"));
            else
                list.Add(new(d.Name, d.PlatformName, gpu, true, "no generic address space: ILGPU's check bypassed (Peer's kernels need none)"));
        }
        return new(list, list.Count == 0 ? "OpenCL platforms found, but no available device" : null);
    }

    static bool LibraryLoads(string[] names, out string tried)
    {
        tried = string.Join(", ", names);
        foreach (var n in names)
            if (NativeLibrary.TryLoad(n, out var h))
            {
                NativeLibrary.Free(h);
                return true;
            }
        return false;
    }

    /// <summary>
    /// Creates a context holding the OpenCL devices Peer accepts and returns it with the device at
    /// <paramref name="index"/>, its generic-address-space check bypassed when needed. The caller owns the context.
    /// </summary>
    /// <exception cref="ArgumentException">There is no accepted device at that index (the message lists what was found and why each was refused).</exception>
    internal static (Context Context, CLDevice Device) Select(int index, Func<Context.Builder, Context.Builder> configure)
    {
        EnsureResolver();
        var context = Context.Create(b =>
        {
            b.OpenCL(Accepts);
            configure(b);
            // After configure (EnableAlgorithms): ILGPU uses the implementation registered last.
            GpuIntrinsics.Register(b);
        });
        GpuIntrinsics.Track(context);
        try
        {
            var devices = context.GetCLDevices();
            if (index >= devices.Count)
                throw new ArgumentException($"device = 'opencl' (index {index}): no such OpenCL device that Peer can open. {Summary(Probe())}.", "name");
            var device = devices[index];
            if (!device.Capabilities.GenericAddressSpace) AllowWithoutGenericAddressSpace(device);
            return (context, device);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    static bool Accepts(CLDevice d) => Openable(d) && (d.Capabilities.GenericAddressSpace || ShapeProblem() is null);

    /// <summary>One line on what was found: the problem, or each device with its note.</summary>
    internal static string Summary(OpenClProbe probe) =>
        probe.Problem ?? "OpenCL devices: " + string.Join("; ", probe.Devices.Select(d => $"{d.Name} ({d.Platform}){(d.Note is null ? "" : ": " + d.Note)}"));

    /// <summary>Null when the bypass applies to the loaded ILGPU; otherwise what differs.</summary>
    internal static string? ShapeProblem() => ShapeProblem(typeof(Context).Assembly.GetName().Version);

    /// <summary><see cref="ShapeProblem()"/> as if ILGPU <paramref name="version"/> were loaded (the shape is always that of the loaded one).</summary>
    internal static string? ShapeProblem(Version? version)
    {
        if (version != SupportedIlgpu)
            return $"Peer's OpenCL adapter bypasses an ILGPU check written for ILGPU {SupportedIlgpu}, but ILGPU {version} is loaded; re-verify the bypass (Peer.Core/Runtime/OpenClAdapter.cs) for this version";
        var capabilities = typeof(CLDevice).GetProperty(nameof(CLDevice.Capabilities), BindingFlags.Public | BindingFlags.Instance, null, typeof(CLCapabilityContext), Type.EmptyTypes, null);
        var flag = GenericAddressSpaceFlag();
        if (capabilities is null || flag?.SetMethod is not { IsAssembly: true } || flag.PropertyType != typeof(bool))
            return $"ILGPU {version} no longer has CLDevice.Capabilities as a CLCapabilityContext with an internal bool GenericAddressSpace setter; the bypass in Peer.Core/Runtime/OpenClAdapter.cs no longer applies";
        return null;
    }

    static PropertyInfo? GenericAddressSpaceFlag() =>
        typeof(CLCapabilityContext).GetProperty(nameof(CLCapabilityContext.GenericAddressSpace), BindingFlags.Public | BindingFlags.Instance);

    /// <summary>Sets the device's GenericAddressSpace flag so that ILGPU's CLAccelerator constructor accepts it.</summary>
    /// <exception cref="NotSupportedException">The loaded ILGPU is not the one the bypass was made for (<see cref="Accepts"/> already keeps such devices out; this guards direct calls).</exception>
    internal static void AllowWithoutGenericAddressSpace(CLDevice device)
    {
        if (ShapeProblem() is { } problem)
            throw new NotSupportedException($"OpenCL device '{device.Name}' lacks generic address-space support and {problem}.");
        GenericAddressSpaceFlag()!.SetValue(device.Capabilities, true);
    }

    /// <summary>Whether the device offers OpenCL 2.0's work-group collective functions (work_group_reduce_add, ...).</summary>
    internal static bool HasWorkGroupCollectives(CLDevice d) =>
        d.DeviceVersion >= CLDeviceVersion.CL30
            ? d.GetDeviceInfo(CLDeviceInfoType.CL_DEVICE_WORK_GROUP_COLLECTIVE_FUNCTIONS_SUPPORT, out int supported) == CLError.CL_SUCCESS && supported != 0
            : d.DeviceVersion >= CLDeviceVersion.CL20;

    // What a build log's tell-tale identifiers mean, for the error message.
    static string Hint(CLDevice device, string log) =>
        log.Contains("work_group_") && !HasWorkGroupCollectives(device) ? " This device has no work-group collective functions (OpenCL 2.0's work_group_reduce/scan/broadcast, which ILGPU's group Reduce, Scan and Broadcast compile to on OpenCL); reduce through shared memory and Group.Barrier instead."
        : log.Contains("sub_group_") ? " This device has no sub-group functions; ILGPU's warp intrinsics (Warp.Shuffle, warp Reduce) use them on OpenCL."
        : log.Contains("__generic") ? " The kernel needs the generic address space, which this device lacks."
        : log.Contains("atomic") ? " Atomics did not compile on this device (Peer's kernels must not use atomics: reduce deterministically instead)."
        : "";

    /// <summary>
    /// Runs <paramref name="create"/> (which loads kernels on an OpenCL device). ILGPU reports a kernel the OpenCL
    /// compiler rejects as a bare <see cref="CLException"/> and writes the compiler's build log only to
    /// <see cref="Trace"/>; this captures that log and throws it with the launcher's name instead.
    /// </summary>
    /// <exception cref="NotSupportedException">The OpenCL compiler rejected a kernel; the message holds its build log.</exception>
    internal static T LoadExplained<T>(Device device, Func<Device, T> create)
    {
        var log = new BuildLogListener();
        lock (Trace.Listeners) Trace.Listeners.Add(log);
        try
        {
            return create(device);
        }
        catch (CLException e) when (e.Error is CLError.CL_BUILD_PROGRAM_FAILURE or CLError.CL_COMPILE_PROGRAM_FAILURE or CLError.CL_INVALID_PROGRAM_EXECUTABLE)
        {
            string text = log.Text;
            throw new NotSupportedException($"{device.Name} could not build a kernel of {typeof(T).Name} ({e.Error}).{Hint(((CLAccelerator)device.Accelerator).Device, text)} OpenCL build log: {Shorten(text)}", e);
        }
        finally
        {
            lock (Trace.Listeners) Trace.Listeners.Remove(log);
        }
    }

    // The first lines of a build log (a rejected construct often repeats once per use).
    static string Shorten(string log)
    {
        var lines = log.Split('\n');
        return lines.Length <= 12 ? log : string.Join('\n', lines.Take(12)) + $"\n... ({lines.Length - 12} more lines)";
    }

    // Collects what ILGPU traces while kernels load (its CLKernel writes "Kernel loading failed:" and the log).
    // Trace is process-wide: a load on another device at the same moment may add its lines too.
    sealed class BuildLogListener : TraceListener
    {
        readonly StringBuilder text = new();

        public string Text
        {
            get
            {
                lock (text) return text.Length == 0 ? "(none traced)" : text.ToString().Trim();
            }
        }

        public override void Write(string? message)
        {
            lock (text) text.Append(message);
        }

        public override void WriteLine(string? message)
        {
            lock (text) text.AppendLine(message);
        }
    }
}
