// Tensor storage: a reference-counted device buffer, and the device's pool of idle buffers. When the last tensor
// viewing a buffer is disposed, the buffer goes back to its device's pool (up to DeviceOptions.BufferPoolBytes) and
// the next tensor of the same element count and type takes it, so that a training step, which makes the same
// tensors every time, stops paying allocation and first-touch page faults. Pooled buffers are device memory held:
// they count in Device.LiveBytes (and so in the peak), and Device.PooledBytes says how much of it is idle;
// Device.TrimPool frees them.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>A device buffer shared by tensors that view it (reshape, parameter arenas); pooled or freed when the last one is disposed.</summary>
internal sealed class Storage
{
    public readonly Device Device;
    public readonly MemoryBuffer1D<float, Stride1D.Dense>? F;
    public readonly MemoryBuffer1D<int, Stride1D.Dense>? I;
    /// <summary>Elements in the buffer (at least 1: ILGPU refuses empty buffers, so an empty tensor keeps one unused element).</summary>
    public readonly long Length;
    public readonly long Bytes;
    int refs = 1;

    public Storage(Device device, DType dtype, long length)
    {
        Device = device;
        Length = Math.Max(1, length);
        Bytes = Length * 4;
        device.TrackTensors(Bytes);
        var p = device.Profiler;
        long t0 = p?.Begin() ?? 0;
        if (device.Pool.Take(dtype, Length) is { } idle)
        {
            (F, I) = idle;
            p?.End(device.ReuseOp, t0);
            return; // its bytes were counted when it was first allocated
        }
        if (dtype == DType.F32) F = device.Accelerator.Allocate1D<float>(Length);
        else I = device.Accelerator.Allocate1D<int>(Length);
        p?.End(device.AllocateOp, t0);
        device.Track(Bytes);
    }

    public void AddRef() => Interlocked.Increment(ref refs);

    public void Release()
    {
        if (Interlocked.Decrement(ref refs) != 0) return;
        Device.TrackTensors(-Bytes);
        if (Device.Pool.Give(F, I, Length)) return;
        var p = Device.Profiler;
        long t0 = p?.Begin() ?? 0;
        F?.Dispose();
        I?.Dispose();
        p?.End(Device.FreeOp, t0);
        Device.Track(-Bytes);
    }
}

/// <summary>
/// Idle buffers of one device by element type and count, at most <see cref="Limit"/> bytes in all. Thread-safe. A buffer that
/// does not fit is freed by its storage instead.
/// </summary>
internal sealed class BufferPool(Device device, long limit)
{
    readonly Dictionary<long, Stack<MemoryBuffer1D<float, Stride1D.Dense>>> floats = new();
    readonly Dictionary<long, Stack<MemoryBuffer1D<int, Stride1D.Dense>>> ints = new();
    long bytes;
    bool closed;

    /// <summary>Most bytes the pool keeps idle (0: none, the pool is off).</summary>
    public long Limit { get; } = limit;

    /// <summary>Bytes idle in the pool now.</summary>
    public long Bytes => Interlocked.Read(ref bytes);

    /// <summary>An idle buffer of <paramref name="length"/> elements of <paramref name="dtype"/>, or null.</summary>
    public (MemoryBuffer1D<float, Stride1D.Dense>?, MemoryBuffer1D<int, Stride1D.Dense>?)? Take(DType dtype, long length)
    {
        if (Limit == 0) return null;
        lock (floats)
        {
            if (dtype == DType.F32)
            {
                if (!floats.TryGetValue(length, out var f) || f.Count == 0) return null;
                bytes -= 4 * length;
                return (f.Pop(), null);
            }
            if (!ints.TryGetValue(length, out var i) || i.Count == 0) return null;
            bytes -= 4 * length;
            return (null, i.Pop());
        }
    }

    /// <summary>Keeps a buffer its last tensor let go of; false when it does not fit (then the caller frees it).</summary>
    public bool Give(MemoryBuffer1D<float, Stride1D.Dense>? f, MemoryBuffer1D<int, Stride1D.Dense>? i, long length)
    {
        if (Limit == 0) return false;
        lock (floats)
        {
            if (closed || bytes + 4 * length > Limit) return false;
            bytes += 4 * length;
            if (f is not null)
            {
                if (!floats.TryGetValue(length, out var s)) floats[length] = s = new();
                s.Push(f);
            }
            else
            {
                if (!ints.TryGetValue(length, out var s)) ints[length] = s = new();
                s.Push(i!);
            }
            return true;
        }
    }

    /// <summary>Frees every idle buffer (and, with <paramref name="close"/>, keeps none from now on); returns the bytes freed.</summary>
    public long Trim(bool close = false)
    {
        long freed;
        lock (floats)
        {
            closed |= close;
            foreach (var s in floats.Values) while (s.Count > 0) s.Pop().Dispose();
            foreach (var s in ints.Values) while (s.Count > 0) s.Pop().Dispose();
            floats.Clear();
            ints.Clear();
            freed = bytes;
            bytes = 0;
        }
        device.Track(-freed);
        return freed;
    }
}
