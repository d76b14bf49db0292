// Kernel loading for every launcher: Device.Load wraps ILGPU's stream-kernel loaders so that each launch reports to the
// device's profiler when one is attached (Device.Profile) and costs one null check when none is. The op's name comes from
// one place: the launcher class Device.Get is building and the portable kernel's method (Device.RegisterOp). Launchers
// call d.Load(portable) or d.Load(portable, cpuBody, bits) (the CPU body where Device.Choose picks it), never the
// accelerator's loaders. The wrappers below are generated, one per kernel arity; Load picks one by reflection, once per
// kernel when its launcher is built.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

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
    internal int RegisterOp(System.Reflection.MethodInfo kernel)
    {
        string owner = (building ?? kernel.DeclaringType)?.Name ?? "Kernel";
        if (owner.EndsWith("Kernels", StringComparison.Ordinal) && owner.Length > 7) owner = owner[..^7];
        string name = kernel.Name.EndsWith("Kernel", StringComparison.Ordinal) && kernel.Name.Length > 6 ? kernel.Name[..^6] : kernel.Name;
        if (kernel.IsGenericMethod)
            name += "<" + string.Join(", ", kernel.GetGenericArguments().Select(a => a.Name.EndsWith("Op", StringComparison.Ordinal) && a.Name.Length > 2 ? a.Name[..^2] : a.Name)) + ">";
        return RegisterOp(owner + "." + name);
    }

    /// <summary>
    /// Loads the implicitly grouped <paramref name="kernel"/> (an op's portable kernel), or <paramref name="cpuBody"/> where
    /// <see cref="Choose"/> picks it, as a launch delegate of the same type that reports each launch to the attached profiler
    /// under the portable kernel's name. (Explicitly grouped kernels: <c>LoadExplicit</c>.)
    /// </summary>
    internal TKernel Load<TKernel>(TKernel kernel, TKernel? cpuBody = null, int bits = 0) where TKernel : Delegate
    {
        var chosen = cpuBody is null ? kernel : Choose(kernel, cpuBody, bits);
        var args = typeof(TKernel).GetGenericArguments();
        var wrap = Wrappers.Single(m => m.GetGenericArguments().Length == args.Length);
        return (TKernel)wrap.MakeGenericMethod(args).Invoke(this, [chosen, RegisterOp(kernel.Method)])!;
    }

    static readonly System.Reflection.MethodInfo[] Wrappers = typeof(Device)
        .GetMethods(System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance).Where(m => m.Name == nameof(Wrap)).ToArray();

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

    internal Action<KernelConfig, T1> LoadExplicit<T1>(Action<T1> kernel) where T1 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1); p.End(op, t0); } else launch(c, a1); };
    }

    internal Action<KernelConfig, T1, T2> LoadExplicit<T1, T2>(Action<T1, T2> kernel) where T1 : struct where T2 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2); p.End(op, t0); } else launch(c, a1, a2); };
    }

    internal Action<KernelConfig, T1, T2, T3> LoadExplicit<T1, T2, T3>(Action<T1, T2, T3> kernel) where T1 : struct where T2 : struct where T3 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3); p.End(op, t0); } else launch(c, a1, a2, a3); };
    }

    internal Action<KernelConfig, T1, T2, T3, T4> LoadExplicit<T1, T2, T3, T4>(Action<T1, T2, T3, T4> kernel) where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3, a4) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4); p.End(op, t0); } else launch(c, a1, a2, a3, a4); };
    }

    internal Action<KernelConfig, T1, T2, T3, T4, T5> LoadExplicit<T1, T2, T3, T4, T5>(Action<T1, T2, T3, T4, T5> kernel) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3, a4, a5) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5); };
    }

    internal Action<KernelConfig, T1, T2, T3, T4, T5, T6> LoadExplicit<T1, T2, T3, T4, T5, T6>(Action<T1, T2, T3, T4, T5, T6> kernel) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3, a4, a5, a6) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6); };
    }

    internal Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7> LoadExplicit<T1, T2, T3, T4, T5, T6, T7>(Action<T1, T2, T3, T4, T5, T6, T7> kernel) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3, a4, a5, a6, a7) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7); };
    }

    internal Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8> LoadExplicit<T1, T2, T3, T4, T5, T6, T7, T8>(Action<T1, T2, T3, T4, T5, T6, T7, T8> kernel) where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct
    {
        var launch = Accelerator.LoadStreamKernel(kernel);
        int op = RegisterOp(kernel.Method);
        return (c, a1, a2, a3, a4, a5, a6, a7, a8) => { if (profiler is { } p) { long t0 = p.Begin(); launch(c, a1, a2, a3, a4, a5, a6, a7, a8); p.End(op, t0); } else launch(c, a1, a2, a3, a4, a5, a6, a7, a8); };
    }
}
