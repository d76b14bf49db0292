// What the CPU bodies (Ops/Cpu/*Cpu.cs) share: a plain reference to a view's memory. A body reads its operands through
// such references (Unsafe.Add, Vector256.LoadUnsafe) instead of the ArrayView indexer, whose bounds check and buffer
// check on every access are what makes the portable kernels slow on the CPU accelerator.
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
}
