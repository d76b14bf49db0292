// Kernel calls that ILGPU 1.5.3 cannot translate to OpenCL C, given an OpenCL translation on the contexts
// Peer opens for OpenCL only; the CPU accelerator and CUDA contexts are untouched.
using System.Reflection;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Backends.OpenCL;
using ILGPU.Frontend;
using ILGPU.Frontend.Intrinsic;
using ILGPU.IR;
using ILGPU.IR.Intrinsics;
using ILGPU.IR.Values;

namespace Peer;

/// <summary>
/// <see cref="MathF.FusedMultiplyAdd"/> and <see cref="Math.FusedMultiplyAdd"/> on OpenCL. ILGPU 1.5.3 treats them as
/// external functions (they are runtime internal calls) and emits a call to an undeclared <c>FusedMultiplyAdd</c>, which
/// the OpenCL compiler rejects. Two public ILGPU hooks fix that: the frontend's remapping table sends the call, in a
/// context Peer opened for OpenCL, to <see cref="Fma(float, float, float)"/> (an ILGPU intrinsic), and each such context's
/// intrinsic manager generates OpenCL's <c>fma</c> for it, which rounds once, as .NET does. (A plain <c>x * y + z</c>
/// was not contracted to an fma by PoCL: tested.)
/// </summary>
internal static class OpenClIntrinsics
{
    static readonly ConditionalWeakTable<Context, object> openClContexts = new();
    static readonly object gate = new();
    static bool remapped;

    /// <summary>Adds the OpenCL code generators to a context builder (before <see cref="Context.Create(Action{Context.Builder})"/>).</summary>
    internal static Context.Builder Register(Context.Builder builder)
    {
        EnsureRemapped();
        var manager = builder.GetIntrinsicManager();
        foreach (var fma in new[] { Target(typeof(float)), Target(typeof(double)) })
            manager.RegisterMethod(fma, new CLIntrinsic(typeof(OpenClIntrinsics), nameof(GenerateFma), IntrinsicImplementationMode.GenerateCode));
        return builder;
    }

    /// <summary>Marks a context built with <see cref="Register"/>: the frontend remaps calls only in such contexts.</summary>
    internal static void Track(Context context) => openClContexts.AddOrUpdate(context, gate);

    static MethodInfo Target(Type t) =>
        typeof(OpenClIntrinsics).GetMethod(nameof(Fma), BindingFlags.NonPublic | BindingFlags.Static, [t, t, t])!;

    // The remapping table is process-wide and, per ILGPU, not thread safe: filled once, under a lock, before the
    // first OpenCL context exists (compiles that read it before then find nothing to remap).
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
                    if (openClContexts.TryGetValue(c.Context.Context, out _)) c.Method = target;
                });
            }
            remapped = true;
        }
    }

    // Bodies never run: only OpenCL contexts call these, and there the generator below replaces them.
    [IntrinsicImplementation]
    static float Fma(float x, float y, float z) => MathF.FusedMultiplyAdd(x, y, z);

    [IntrinsicImplementation]
    static double Fma(double x, double y, double z) => Math.FusedMultiplyAdd(x, y, z);

    // target = fma(x, y, z)
    static void GenerateFma(CLBackend backend, CLCodeGenerator codeGenerator, Value value)
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
}
