// Group-wide reduce, scan and broadcast for OpenCL devices without OpenCL 2.0's work-group collective functions
// (PoCL 3.1). ILGPU.Algorithms compiles GroupExtensions.Reduce/Scan (used by its RadixSort, Scan, Reduce)
// to work_group_reduce_add and friends on OpenCL, which such a device rejects. On contexts Peer opens for
// such a device these methods replace them: shared memory and barriers, no atomics, and the first work
// item combines the values in index order, so results are deterministic. On PoCL a work group runs on one
// core anyway, so a sequential combine costs no more than a tree.
using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Backends.OpenCL;
using ILGPU.IR;
using ILGPU.IR.Intrinsics;
using ILGPU.IR.Values;

namespace Peer;

/// <summary>Portable replacements for ILGPU.Algorithms' group collectives on OpenCL devices that lack them.</summary>
internal static class OpenClGroupCollectives
{
    /// <summary>Largest group the replacements serve (their shared-memory slots); devices with larger groups keep ILGPU's versions.</summary>
    internal const int MaxGroupSize = 4096;

    /// <summary>
    /// Registers the replacements on a context builder. Must run after <c>EnableAlgorithms()</c>: ILGPU uses the
    /// implementation registered last for a method.
    /// </summary>
    internal static Context.Builder Register(Context.Builder builder)
    {
        var manager = builder.GetIntrinsicManager();
        foreach (var name in new[] { nameof(Reduce), nameof(AllReduce), nameof(ExclusiveScan), nameof(InclusiveScan),
                     nameof(ExclusiveScanWithBoundaries), nameof(InclusiveScanWithBoundaries), nameof(ExclusiveScanNextIteration), nameof(InclusiveScanNextIteration) })
        {
            var source = typeof(GroupExtensions).GetMethod(name, BindingFlags.Public | BindingFlags.Static)
                ?? throw new NotSupportedException($"ILGPU.Algorithms {typeof(GroupExtensions).Assembly.GetName().Version} has no GroupExtensions.{name}; Peer's OpenCL group replacements (OpenClGroupCollectives.cs) need re-checking");
            manager.RegisterMethod(source, new CLIntrinsic(typeof(OpenClGroupCollectives), name, IntrinsicImplementationMode.Redirect));
        }
        // ILGPU's own Group.Broadcast becomes work_group_broadcast on OpenCL (its RadixSort uses it too).
        manager.RegisterBroadcast(BroadcastKind.GroupLevel, new CLIntrinsic(typeof(OpenClGroupCollectives), nameof(FromItem), IntrinsicImplementationMode.Redirect));
        return builder;
    }

    // value of every work item -> the combination of all, in index order (every item receives it)
    static T Reduce<T, TReduction>(T value) where T : unmanaged where TReduction : struct, IScanReduceOperation<T> =>
        AllReduce<T, TReduction>(value);

    static T AllReduce<T, TReduction>(T value) where T : unmanaged where TReduction : struct, IScanReduceOperation<T>
    {
        var slots = SharedMemory.Allocate<T>(MaxGroupSize);
        var total = SharedMemory.Allocate<T>(1);
        int me = Group.LinearIndex;
        slots[me] = value;
        Group.Barrier();
        if (me == 0)
        {
            var op = default(TReduction);
            T acc = op.Identity;
            for (int i = 0, n = Group.Dimension.Size; i < n; i++) acc = op.Apply(acc, slots[i]);
            total[0] = acc;
        }
        Group.Barrier();
        T result = total[0];
        Group.Barrier();
        return result;
    }

    // value of every work item -> combination of the values up to it (inclusive) or before it (exclusive)
    static T InclusiveScan<T, TScan>(T value) where T : unmanaged where TScan : struct, IScanReduceOperation<T>
    {
        var slots = SharedMemory.Allocate<T>(MaxGroupSize);
        int me = Group.LinearIndex;
        slots[me] = value;
        Group.Barrier();
        if (me == 0)
        {
            var op = default(TScan);
            T acc = op.Identity;
            for (int i = 0, n = Group.Dimension.Size; i < n; i++)
            {
                acc = op.Apply(acc, slots[i]);
                slots[i] = acc;
            }
        }
        Group.Barrier();
        T result = slots[me];
        Group.Barrier();
        return result;
    }

    static T ExclusiveScan<T, TScan>(T value) where T : unmanaged where TScan : struct, IScanReduceOperation<T>
    {
        var slots = SharedMemory.Allocate<T>(MaxGroupSize + 1);
        int me = Group.LinearIndex;
        slots[me + 1] = value;
        Group.Barrier();
        if (me == 0)
        {
            var op = default(TScan);
            T acc = op.Identity;
            slots[0] = acc;
            for (int i = 1, n = Group.Dimension.Size; i <= n; i++)
            {
                acc = op.Apply(acc, slots[i]);
                slots[i] = acc;
            }
        }
        Group.Barrier();
        T result = slots[me];
        Group.Barrier();
        return result;
    }

    static T ExclusiveScanWithBoundaries<T, TScan>(T value, out ScanBoundaries<T> boundaries) where T : unmanaged where TScan : struct, IScanReduceOperation<T>
    {
        T scanned = ExclusiveScan<T, TScan>(value);
        boundaries = new ScanBoundaries<T>(FromItem(scanned, 0), FromItem(scanned, Group.Dimension.Size - 1));
        return scanned;
    }

    static T InclusiveScanWithBoundaries<T, TScan>(T value, out ScanBoundaries<T> boundaries) where T : unmanaged where TScan : struct, IScanReduceOperation<T>
    {
        T scanned = InclusiveScan<T, TScan>(value);
        boundaries = new ScanBoundaries<T>(FromItem(scanned, 0), FromItem(scanned, Group.Dimension.Size - 1));
        return scanned;
    }

    // Start value of the next round of a multi-round scan: left + right boundary, plus (exclusive) the last item's value.
    static T ExclusiveScanNextIteration<T, TScan>(T leftBoundary, T rightBoundary, T currentValue) where T : unmanaged where TScan : struct, IScanReduceOperation<T>
    {
        var op = default(TScan);
        return op.Apply(op.Apply(leftBoundary, rightBoundary), FromItem(currentValue, Group.Dimension.Size - 1));
    }

    static T InclusiveScanNextIteration<T, TScan>(T leftBoundary, T rightBoundary, T currentValue) where T : unmanaged where TScan : struct, IScanReduceOperation<T> =>
        default(TScan).Apply(leftBoundary, rightBoundary);

    // The value work item `from` holds, for every work item: Group.Broadcast without OpenCL 2.0's work_group_broadcast.
    static T FromItem<T>(T value, int from) where T : unmanaged
    {
        var slot = SharedMemory.Allocate<T>(1);
        if (Group.LinearIndex == from) slot[0] = value;
        Group.Barrier();
        T result = slot[0];
        Group.Barrier();
        return result;
    }
}
