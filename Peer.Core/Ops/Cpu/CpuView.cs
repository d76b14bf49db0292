// What the CPU bodies (Ops/Cpu/*Cpu.cs) share: a plain reference to a view's memory. A body reads its operands through
// such references (Unsafe.Add, Vector256.LoadUnsafe) instead of the ArrayView indexer, whose bounds check and buffer
// check on every access are what makes the portable kernels slow on the CPU accelerator; and the block copy and fill
// several bodies use.
using System.Runtime.CompilerServices;
using ILGPU;

namespace Peer;

internal static class CpuView
{
    /// <summary>
    /// A reference to element 0 of <paramref name="v"/>, or a null reference when v is empty. An op may hand a body an
    /// empty operand that the body then never reads (a Dh = 0 attention, a bias gradient over zero rows); <c>v[0]</c> would
    /// fail the view's bounds check, which ends the process on the CPU accelerator.
    /// </summary>
    public static ref T First<T>(ArrayView<T> v) where T : unmanaged
    {
        if (v.Length == 0) return ref Unsafe.NullRef<T>();
        return ref v[0];
    }

    /// <summary><c>to[0, n) = from[0, n)</c>, one block copy (the runs do not overlap).</summary>
    public static void Copy(ref float from, ref float to, int n) =>
        Unsafe.CopyBlockUnaligned(ref Unsafe.As<float, byte>(ref to), ref Unsafe.As<float, byte>(ref from), (uint)n * sizeof(float));

    /// <summary><c>to[0, n) = value</c>.</summary>
    public static void Fill(ref float to, float value, int n)
    {
        for (int c = 0; c < n; c++) Unsafe.Add(ref to, c) = value;
    }
}
