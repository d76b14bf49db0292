// Kernel calls that ILGPU 1.5.3 cannot translate for the GPU backends, given a translation on the contexts Peer opens
// for OpenCL and CUDA only; the CPU accelerator's contexts are untouched (it runs the .NET methods themselves).
using System.Reflection;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Backends.OpenCL;
using ILGPU.Backends.PTX;
using ILGPU.Frontend;
using ILGPU.Frontend.Intrinsic;
using ILGPU.IR;
using ILGPU.IR.Intrinsics;
using ILGPU.IR.Types;
using ILGPU.IR.Values;

namespace Peer;

/// <summary>
/// <see cref="MathF.FusedMultiplyAdd"/> and <see cref="Math.FusedMultiplyAdd"/> on OpenCL and CUDA. ILGPU 1.5.3 treats them
/// as external functions (they are runtime internal calls): the OpenCL C it emits calls an undeclared <c>FusedMultiplyAdd</c>,
/// which the OpenCL compiler rejects, and the PTX declares <c>.extern .func FusedMultiplyAdd</c>, a symbol nothing defines,
/// so the module fails to load on a GPU. Two public ILGPU hooks fix both: the frontend's remapping table sends the call, in a
/// context Peer opened for a GPU backend, to <see cref="Fma(float, float, float)"/> (an ILGPU intrinsic), and each such
/// context's intrinsic manager generates OpenCL's <c>fma</c> or PTX's <c>fma.rn.f32</c> / <c>fma.rn.f64</c> for it, which
/// round once (to nearest even), as .NET does: the same bits as the CPU accelerator. (A plain <c>x * y + z</c> was not
/// contracted to an fma by PoCL: tested.)
/// </summary>
internal static class GpuIntrinsics
{
    static readonly ConditionalWeakTable<Context, object> gpuContexts = new();
    static readonly object gate = new();
    static bool remapped;

    /// <summary>Adds the OpenCL and PTX code generators to a context builder (before <see cref="Context.Create(Action{Context.Builder})"/>).</summary>
    internal static Context.Builder Register(Context.Builder builder)
    {
        EnsureRemapped();
        var manager = builder.GetIntrinsicManager();
        foreach (var fma in new[] { Target(typeof(float)), Target(typeof(double)) })
        {
            manager.RegisterMethod(fma, new CLIntrinsic(typeof(GpuIntrinsics), nameof(GenerateOpenClFma), IntrinsicImplementationMode.GenerateCode));
            manager.RegisterMethod(fma, new PTXIntrinsic(typeof(GpuIntrinsics), nameof(GeneratePtxFma), IntrinsicImplementationMode.GenerateCode));
        }
        return builder;
    }

    /// <summary>Marks a context built with <see cref="Register"/>: the frontend remaps calls only in such contexts.</summary>
    internal static void Track(Context context) => gpuContexts.AddOrUpdate(context, gate);

    static MethodInfo Target(Type t) =>
        typeof(GpuIntrinsics).GetMethod(nameof(Fma), BindingFlags.NonPublic | BindingFlags.Static, [t, t, t])!;

    // The remapping table is process-wide and, per ILGPU, not thread safe: filled once, under a lock, before the
    // first GPU context exists (compiles that read it before then find nothing to remap).
    static void EnsureRemapped()
    {
        lock (gate)
        {
            if (remapped) return;
            foreach (var (math, t) in new[] { (typeof(MathF), typeof(float)), (typeof(Math), typeof(double)) })
            {
                var source = math.GetMethod(nameof(MathF.FusedMultiplyAdd), BindingFlags.Public | BindingFlags.Static, [t, t, t])!;
                var target = Target(t);
                RemappedIntrinsics.AddRemapping(source, (ref InvocationContext c) =>
                {
                    if (gpuContexts.TryGetValue(c.Context.Context, out _)) c.Method = target;
                });
            }
            remapped = true;
        }
    }

    // Bodies never run: only GPU contexts call these, and there the generators below replace them.
    [IntrinsicImplementation]
    static float Fma(float x, float y, float z) => MathF.FusedMultiplyAdd(x, y, z);

    [IntrinsicImplementation]
    static double Fma(double x, double y, double z) => Math.FusedMultiplyAdd(x, y, z);

    // target = fma(x, y, z)
    static void GenerateOpenClFma(CLBackend backend, CLCodeGenerator codeGenerator, Value value)
    {
        var call = (MethodCall)value;
        var target = codeGenerator.Allocate(call);
        // A mutable struct (argument state): a local, not a using variable, whose copies would lose that state.
        var statement = codeGenerator.BeginStatement(target);
        statement.AppendCommand("fma");
        statement.BeginArguments();
        foreach (var argument in call)
            statement.AppendArgument(codeGenerator.Load(argument));
        statement.EndArguments();
        statement.Finish();
    }

    // fma.rn.f32 (or .f64) target, x, y, z: rounds the exact x * y + z once, to nearest even
    static void GeneratePtxFma(PTXBackend backend, PTXCodeGenerator codeGenerator, Value value)
    {
        var call = (MethodCall)value;
        var x = codeGenerator.LoadPrimitive(call[0]);
        var y = codeGenerator.LoadPrimitive(call[1]);
        var z = codeGenerator.LoadPrimitive(call[2]);
        var target = codeGenerator.AllocateHardware(call);
        bool single = call.Type is PrimitiveType { BasicValueType: BasicValueType.Float32 };
        using var command = codeGenerator.BeginCommand(single ? "fma.rn.f32" : "fma.rn.f64");
        command.AppendArgument(target);
        command.AppendArgument(x);
        command.AppendArgument(y);
        command.AppendArgument(z);
    }
}
