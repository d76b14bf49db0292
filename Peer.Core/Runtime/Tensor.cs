// Device tensors: a shape over a flat, row-major, reference-counted buffer of float32 or int32 (Storage.cs),
// from an offset into it (0 but for the optimizers' parameter arenas). Reshape shares the buffer. Tensors created
// inside a Scope are disposed when it ends; gradients belong to their tensor. Ops live in Peer.Core/Ops as partial
// methods of the static class Ops.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Element type of a tensor.</summary>
public enum DType
{
    /// <summary>32-bit float.</summary>
    F32,
    /// <summary>32-bit signed integer.</summary>
    I32,
}

/// <summary>Row-sparse gradient of a table parameter: the rows that received gradient and their values.</summary>
/// <remarks>Rows are distinct and sorted ascending, and may be followed by padding: entries equal to <see cref="NoRow"/>
/// whose values are zero. The layers' gradients (PEER experts, product keys, PKM values, sparse embeddings) are padded to a
/// size known on the host without reading the device, <c>min(pairs, table rows)</c>, so that building one never waits for
/// the device; the number of real rows stays on the device (<see cref="CountRows"/> reads it). Consumers skip padding: the
/// optimizers' sparse step, densifying, merging. Consumed by the optimizers' sparse step.</remarks>
public sealed class RowSparseGrad : IDisposable
{
    /// <summary>The row index of padding entries (<see cref="int.MaxValue"/>): outside every table, so it names no row, and
    /// larger than every real row, so the rows stay ascending.</summary>
    public const int NoRow = int.MaxValue;

    /// <summary>Row indices, I32 <c>[B]</c>: the R real rows, then B - R entries <see cref="NoRow"/>.</summary>
    public Tensor Rows { get; }
    /// <summary>Gradient rows, F32 <c>[B, cols]</c> (zero for padding).</summary>
    public Tensor Values { get; }

    /// <summary>The number of real rows R (those before the padding). Reads the rows back to the host: a synchronisation on an
    /// asynchronous device, for host-facing uses (tests, the distributed merge, reports), never inside a training step.</summary>
    public int CountRows()
    {
        var rows = Rows.ToIntArray();
        int r = Array.IndexOf(rows, NoRow);
        return r < 0 ? rows.Length : r;
    }

    /// <summary>Wraps rows and values; takes ownership of both.</summary>
    public RowSparseGrad(Tensor rows, Tensor values)
    {
        Check.DType(rows, DType.I32, nameof(rows));
        Check.DType(values, DType.F32, nameof(values));
        Check.That(values.Rank == 2 && values.Shape[0] == rows.Length, nameof(values), values.Shape, $"[{rows.Length}, cols] (one row per index)");
        Rows = rows;
        Values = values;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Rows.Dispose();
        Values.Dispose();
    }
}

/// <summary>An n-dimensional float32 or int32 array on a <see cref="Device"/>.</summary>
public sealed class Tensor : IDisposable
{
    Storage storage;
    long offset;
    // Where the gradient of a parameter packed into an optimizer's arena lives (Optim/ParameterArena.cs), or null.
    Storage? gradStorage;
    long gradOffset;

    /// <summary>The device holding the data.</summary>
    public Device Device => storage.Device;
    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }
    /// <summary>Element type.</summary>
    public DType DType { get; }
    /// <summary>Number of elements.</summary>
    public int Length { get; }
    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Length;
    /// <summary>Whether <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Whether gradients flow to this tensor. Parameters set it; op outputs inherit it from their inputs.</summary>
    public bool RequiresGrad { get; set; }
    /// <summary>Accumulated dense gradient, same shape, or null.</summary>
    public Tensor? Grad { get; set; }
    /// <summary>Accumulated row-sparse gradient (for table parameters looked up by row), or null.</summary>
    public RowSparseGrad? SparseGrad { get; set; }
    /// <summary>True for a parameter whose gradient arrives as a <see cref="RowSparseGrad"/>: a table looked up by row (PEER expert
    /// tables and sub-keys, PKM values, a sparse <see cref="Nn.Embedding"/>). Set by the module that registers it; used to give such
    /// tables their own optimizer (e.g. <see cref="Optim.RowWiseAdagrad"/> in a <see cref="Optim.CombinedOptimizer"/>).</summary>
    public bool RowSparse { get; internal set; }
    /// <summary>True for tensors created by users or modules rather than by an op on the tape.</summary>
    public bool IsLeaf { get; internal set; } = true;
    /// <summary>A name for messages and state dicts (set by modules).</summary>
    public string? Name { get; set; }

    internal Tensor(Storage storage, int[] shape, DType dtype, long offset = 0)
    {
        this.storage = storage;
        this.offset = offset;
        Shape = shape;
        DType = dtype;
        Length = checked((int)Numel(shape));
        Scope.Register(this);
    }

    /// <summary>Allocates an uninitialised tensor (contents unspecified). Most code wants <see cref="Zeros"/>.</summary>
    public static Tensor Empty(Device device, DType dtype, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(device);
        ValidateShape(shape, nameof(shape));
        return new Tensor(new Storage(device, dtype, Numel(shape)), (int[])shape.Clone(), dtype);
    }

    /// <summary>A float32 tensor of zeros.</summary>
    public static Tensor Zeros(Device device, params int[] shape)
    {
        var t = Empty(device, DType.F32, shape);
        var p = device.Profiler;
        long t0 = p?.Begin() ?? 0;
        t.storage.F!.MemSetToZero();
        p?.End(device.ZeroOp, t0);
        return t;
    }

    /// <summary>An int32 tensor of zeros.</summary>
    public static Tensor ZerosInt(Device device, params int[] shape)
    {
        var t = Empty(device, DType.I32, shape);
        var p = device.Profiler;
        long t0 = p?.Begin() ?? 0;
        t.storage.I!.MemSetToZero();
        p?.End(device.ZeroOp, t0);
        return t;
    }

    /// <summary>A float32 tensor with every element <paramref name="value"/>.</summary>
    public static Tensor Full(Device device, float value, params int[] shape)
    {
        var t = Empty(device, DType.F32, shape);
        Ops.Fill(t, value);
        return t;
    }

    /// <summary>Copies a host array into a new float32 tensor of the given shape.</summary>
    /// <exception cref="ArgumentException">The array length does not match the shape.</exception>
    public static Tensor FromArray(Device device, float[] data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (shape.Length == 0) shape = [data.Length];
        ValidateShape(shape, nameof(shape));
        Check.That(data.Length == Numel(shape), nameof(data), $"{data.Length} elements", $"{Numel(shape)} elements for shape {FormatShape(shape)}");
        var t = Empty(device, DType.F32, shape);
        var p = device.Profiler;
        long t0 = p?.Begin() ?? 0;
        if (data.Length > 0) t.View.SubView(0, data.Length).CopyFromCPU(data);
        p?.End(device.FromHostOp, t0);
        return t;
    }

    /// <summary>Copies a host array into a new int32 tensor of the given shape.</summary>
    public static Tensor FromArray(Device device, int[] data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (shape.Length == 0) shape = [data.Length];
        ValidateShape(shape, nameof(shape));
        Check.That(data.Length == Numel(shape), nameof(data), $"{data.Length} elements", $"{Numel(shape)} elements for shape {FormatShape(shape)}");
        var t = Empty(device, DType.I32, shape);
        var p = device.Profiler;
        long t0 = p?.Begin() ?? 0;
        if (data.Length > 0) t.IntView.SubView(0, data.Length).CopyFromCPU(data);
        p?.End(device.FromHostOp, t0);
        return t;
    }

    /// <summary>The float32 data as an ILGPU view of exactly <see cref="Length"/> elements.</summary>
    public ArrayView<float> View
    {
        get
        {
            if (DType != DType.F32) throw new InvalidOperationException($"Tensor {Name ?? ""} has dtype {DType}: expected F32 for a float view.");
            Check.Alive(this, Name ?? "tensor");
            return storage.F!.View.SubView(offset, Math.Max(1, Length)).AsContiguous();
        }
    }

    /// <summary>The int32 data as an ILGPU view of exactly <see cref="Length"/> elements.</summary>
    public ArrayView<int> IntView
    {
        get
        {
            if (DType != DType.I32) throw new InvalidOperationException($"Tensor {Name ?? ""} has dtype {DType}: expected I32 for an int view.");
            Check.Alive(this, Name ?? "tensor");
            return storage.I!.View.SubView(offset, Math.Max(1, Length)).AsContiguous();
        }
    }

    /// <summary>Copies the float32 data to a new host array.</summary>
    public float[] ToArray()
    {
        var result = new float[Length];
        var p = Device.Profiler;
        long t0 = p?.Begin() ?? 0;
        if (Length > 0) View.SubView(0, Length).CopyToCPU(result);
        p?.End(Device.ToHostOp, t0);
        return result;
    }

    /// <summary>Copies the int32 data to a new host array.</summary>
    public int[] ToIntArray()
    {
        var result = new int[Length];
        var p = Device.Profiler;
        long t0 = p?.Begin() ?? 0;
        if (Length > 0) IntView.SubView(0, Length).CopyToCPU(result);
        p?.End(Device.ToHostOp, t0);
        return result;
    }

    /// <summary>The single value of a one-element float tensor.</summary>
    public float Item()
    {
        Check.That(Length == 1, "tensor", Shape, "exactly one element for Item()");
        return ToArray()[0];
    }

    /// <summary>A tensor sharing this one's data with another shape of the same element count (one dimension may be -1).
    /// Differentiable.</summary>
    public Tensor Reshape(params int[] shape)
    {
        shape = (int[])shape.Clone();
        int infer = Array.IndexOf(shape, -1);
        if (infer >= 0)
        {
            long rest = 1;
            for (int i = 0; i < shape.Length; i++) if (i != infer) rest *= shape[i];
            Check.That(rest > 0 && Length % rest == 0, nameof(shape), shape, $"a shape whose known dimensions divide {Length}");
            shape[infer] = (int)(Length / rest);
        }
        ValidateShape(shape, nameof(shape));
        Check.That(Numel(shape) == Length, nameof(shape), shape, $"{Length} elements in all (the shape of the tensor is {FormatShape(Shape)})");
        storage.AddRef();
        var result = new Tensor(storage, shape, DType, offset) { RequiresGrad = RequiresGrad && Device.Tape.IsRecording };
        if (result.RequiresGrad)
        {
            result.IsLeaf = false;
            var self = this;
            Device.Tape.Record(result, [this], g => Tape.Accumulate(self, g.Reshape(self.Shape)));
        }
        return result;
    }

    /// <summary>A tensor sharing this one's data that is not recorded on the tape and requires no gradient.</summary>
    public Tensor Detach()
    {
        storage.AddRef();
        return new Tensor(storage, (int[])Shape.Clone(), DType, offset);
    }

    /// <summary>The buffer this tensor views, and where in it (elements): tensors of one parameter arena share a buffer.</summary>
    internal (Storage Storage, long Offset) Place => (storage, offset);

    /// <summary>A tensor of <paramref name="shape"/> viewing <paramref name="buffer"/> from <paramref name="at"/> (one more reference to it).</summary>
    internal static Tensor ViewOf(Storage buffer, long at, int[] shape, DType dtype)
    {
        buffer.AddRef();
        return new Tensor(buffer, (int[])shape.Clone(), dtype, at);
    }

    /// <summary>Moves this tensor's data to <paramref name="buffer"/> at <paramref name="at"/> (copying it) and views it there from now on;
    /// tensors that shared the old buffer (reshapes) keep the old data.</summary>
    internal void MoveTo(Storage buffer, long at)
    {
        Check.Alive(this, Name ?? "tensor");
        buffer.AddRef();
        var (old, oldAt) = (storage, offset);
        (storage, offset) = (buffer, at);
        if (Length > 0)
        {
            if (DType == DType.F32) View.CopyFrom(old.F!.View.SubView(oldAt, Length).AsContiguous());
            else IntView.CopyFrom(old.I!.View.SubView(oldAt, Length).AsContiguous());
        }
        old.Release();
    }

    /// <summary>Gives this tensor (a parameter) a fixed place for its dense gradient: <see cref="Tape.Accumulate"/> then copies the
    /// first gradient of a backward there instead of adopting it, so that the gradients of an arena's parameters lie side by side.</summary>
    internal void SetGradSlot(Storage buffer, long at)
    {
        buffer.AddRef();
        gradStorage?.Release();
        (gradStorage, gradOffset) = (buffer, at);
    }

    /// <summary>A view of the gradient slot set by <see cref="SetGradSlot"/>, or null without one.</summary>
    internal Tensor? GradSlotView() => gradStorage is null ? null : ViewOf(gradStorage, gradOffset, Shape, DType);

    /// <summary>The tensor to keep as this tensor's gradient when <paramref name="grad"/> is its first (unscoped, owned by the
    /// caller): <paramref name="grad"/> itself, or, for a parameter with a gradient slot, the slot holding a copy of it
    /// (<paramref name="grad"/> disposed), so that the gradients of an arena's parameters lie side by side.</summary>
    internal Tensor FirstGradient(Tensor grad)
    {
        if (GradSlotView() is not { } slot) return grad;
        var p = Device.Profiler;
        long t0 = p?.Begin() ?? 0;
        slot.View.CopyFrom(grad.View);
        p?.End(Device.CopyOp, t0);
        grad.Dispose();
        return Scope.Unscope(slot);
    }

    /// <summary>Runs reverse-mode differentiation from this scalar (see <see cref="Tape.Backward(Tensor)"/>).</summary>
    public void Backward() => Device.Tape.Backward(this);

    /// <summary>Frees the tensor's reference to its data and its gradients. Safe to call twice.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        storage.Release();
        gradStorage?.Release();
        gradStorage = null;
        Grad?.Dispose();
        Grad = null;
        SparseGrad?.Dispose();
        SparseGrad = null;
    }

    /// <summary>Formats a shape as <c>[2, 3]</c>.</summary>
    public static string FormatShape(int[] shape) => "[" + string.Join(", ", shape) + "]";

    /// <inheritdoc />
    public override string ToString() => $"Tensor{FormatShape(Shape)} {DType}{(Name is null ? "" : " " + Name)}";

    internal static long Numel(int[] shape)
    {
        long n = 1;
        foreach (int s in shape) n *= s;
        return n;
    }

    static void ValidateShape(int[] shape, string argument)
    {
        ArgumentNullException.ThrowIfNull(shape, argument);
        foreach (int s in shape)
            Check.That(s >= 0, argument, shape, "non-negative dimensions");
        Check.That(Numel(shape) <= int.MaxValue, argument, shape, $"at most {int.MaxValue} elements");
    }
}
