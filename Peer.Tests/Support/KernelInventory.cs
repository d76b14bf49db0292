// The kernels Peer can run on each kind of device, found two independent ways so that a kernel cannot slip past the
// kernel gate (Runtime/KernelGateTests.cs): (1) every launcher (a class named XKernels with a constructor taking the
// Device) built on a kernel-inventory device, which records the kernels its launchers choose for that kind of device
// (Runtime/DeviceKernels.cs); (2) a reflection scan of Peer.Core and Peer.Training for kernel-shaped methods: static
// void methods whose first parameter is an ILGPU index (implicitly grouped kernels) or whose IL reads Grid or Group
// (explicitly grouped ones). Every kernel-shaped method must be chosen by some device, or be a CPU body's kernel (its IL
// calls an [External] method, which only the CPU accelerator can run).
using System.Reflection;
using System.Reflection.Emit;
using ILGPU;
using ILGPU.Frontend;

namespace Peer.Tests;

internal static class KernelInventory
{
    static readonly Assembly[] Libraries = [typeof(Device).Assembly, typeof(Peer.Training.Trainer).Assembly];
    const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    /// <summary>The launcher classes of the library: named XKernels, with a constructor taking the Device.</summary>
    public static IReadOnlyList<Type> Launchers() =>
        Libraries.SelectMany(a => a.GetTypes())
            .Where(t => t.IsClass && !t.IsAbstract && t.Name.EndsWith("Kernels", StringComparison.Ordinal)
                && t.GetConstructor(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance, [typeof(Device)]) is not null)
            .OrderBy(t => t.FullName, StringComparer.Ordinal)
            .ToArray();

    /// <summary>The distinct kernels every launcher chooses on a device of <paramref name="shape"/>.</summary>
    public static IReadOnlyList<LoadedKernel> For(InventoryShape shape)
    {
        using var d = Device.ForInventory(shape);
        return BuildAll(d);
    }

    /// <summary>Builds every launcher on <paramref name="d"/> (loading its kernels there) and returns what the device recorded, once each.</summary>
    public static IReadOnlyList<LoadedKernel> BuildAll(Device d)
    {
        foreach (var type in Launchers())
        {
            try
            {
                Activator.CreateInstance(type, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance, null, [d], null);
            }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                throw new InvalidOperationException($"building launcher {type.Name} on '{d.Name}' failed: {e.InnerException.Message}", e.InnerException);
            }
        }
        return d.Loaded.Distinct().ToArray();
    }

    /// <summary>A kernel's name for messages: Type.Method with its type arguments.</summary>
    public static string Name(MethodInfo m) =>
        $"{m.DeclaringType?.Name}.{m.Name}{(m.IsGenericMethod ? "<" + string.Join(", ", m.GetGenericArguments().Select(a => a.Name)) + ">" : "")}";

    /// <summary>The generic definition of a generic kernel, else the kernel itself (what the scan finds).</summary>
    public static MethodInfo Definition(MethodInfo m) => m.IsGenericMethod ? m.GetGenericMethodDefinition() : m;

    /// <summary>
    /// Kernel-shaped methods of Peer.Core and Peer.Training, with whether each is a CPU body's kernel. A kernel is an entry point:
    /// methods that other methods call (device functions such as a group reduction, which may use Group) are not kernels.
    /// </summary>
    public static IReadOnlyList<(MethodInfo Method, bool CpuBody)> KernelShaped()
    {
        var methods = Libraries.SelectMany(a => a.GetTypes()).SelectMany(t => t.GetMethods(All)).ToArray();
        var references = methods.ToDictionary(m => m, Calls);
        var called = references.Values.SelectMany(r => r).Where(r => r.Op == OpCodes.Call || r.Op == OpCodes.Callvirt)
            .Select(r => r.Target is MethodInfo { IsGenericMethod: true } g ? g.GetGenericMethodDefinition() : r.Target).ToHashSet();
        var found = new List<(MethodInfo, bool)>();
        foreach (var m in methods)
        {
            if (!m.IsStatic || m.ReturnType != typeof(void) || m.IsDefined(typeof(ExternalAttribute)) || called.Contains(m)) continue;
            var targets = references[m].Select(r => r.Target).ToArray();
            var first = m.GetParameters().FirstOrDefault()?.ParameterType;
            bool implicitKernel = first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D);
            bool explicitKernel = targets.Any(c => c.DeclaringType == typeof(Grid) || c.DeclaringType == typeof(Group));
            if (implicitKernel || explicitKernel) found.Add((m, targets.Any(c => c.IsDefined(typeof(ExternalAttribute)))));
        }
        return found;
    }

    // Methods whose tokens the IL of m references (call, callvirt, newobj, ldftn, ...), with the opcode: a small IL walk.
    static List<(OpCode Op, MethodBase Target)> Calls(MethodInfo m)
    {
        var result = new List<(OpCode, MethodBase)>();
        var il = m.GetMethodBody()?.GetILAsByteArray();
        if (il is null) return result;
        var typeArgs = m.DeclaringType?.IsGenericType == true ? m.DeclaringType.GetGenericArguments() : null;
        var methodArgs = m.IsGenericMethod ? m.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            OpCode op = il[i] == 0xFE ? TwoByte[il[i + 1]] : OneByte[il[i]];
            i += op.Size;
            if (op.OperandType == OperandType.InlineMethod)
            {
                int token = BitConverter.ToInt32(il, i);
                try
                {
                    if (m.Module.ResolveMethod(token, typeArgs, methodArgs) is { } target) result.Add((op, target));
                }
                catch (ArgumentException) { } // a token of another generic context: not one of ILGPU's Grid/Group members
            }
            i += OperandSize(op, il, i);
        }
        return result;
    }

    static readonly OpCode[] OneByte = new OpCode[256], TwoByte = new OpCode[256];

    static KernelInventory()
    {
        foreach (var f in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var op = (OpCode)f.GetValue(null)!;
            ushort v = (ushort)op.Value;
            if (op.Size == 1) OneByte[v] = op;
            else TwoByte[v & 0xFF] = op;
        }
    }

    static int OperandSize(OpCode op, byte[] il, int at) => op.OperandType switch
    {
        OperandType.InlineNone => 0,
        OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
        OperandType.InlineVar => 2,
        OperandType.InlineI8 or OperandType.InlineR => 8,
        OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, at),
        _ => 4,
    };
}
