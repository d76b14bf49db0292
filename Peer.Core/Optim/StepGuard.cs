// A device-side record of the first training step whose loss or gradient norm was not finite, as fused optimizers keep
// a found_inf flag: a one-thread kernel reads the step's two scalars on the device and, while the flag is clear and either
// is not finite, stores the step number, which value it was and its bits. The flag is sticky: the kernel never clears it,
// so the optimizers that read it (Optimizer.SkipFlag) skip that step and every later one until the host reads and clears
// it. Only Read waits for the device; a training loop calls it when it wants to know (a log line, a checkpoint, the end).
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>The first step a <see cref="StepGuard"/> saw with a non-finite loss or gradient norm.</summary>
/// <param name="Step">The step number <see cref="StepGuard.Observe"/> was given (1-based).</param>
/// <param name="IsLoss">True when the loss was not finite, false when the loss was finite and the gradient norm was not.</param>
/// <param name="Value">The non-finite value (NaN or an infinity).</param>
public readonly record struct StepFailure(int Step, bool IsLoss, float Value);

/// <summary>
/// A sticky device flag that a training step sets when its loss or gradient norm is not finite, for optimizers to skip on the
/// device (<see cref="Optimizer.SkipFlag"/> = <see cref="Flag"/>) without the host reading anything per step.
/// </summary>
/// <example><code>
/// using var guard = new StepGuard(device);
/// optimizer.SkipFlag = guard.Flag;
/// // each step: loss and norm are [1] tensors on the device
/// guard.Observe(loss, norm, step);
/// optimizer.Step();              // changes nothing once the flag is set
/// // now and then:
/// if (guard.Read() is { } bad) throw new Exception($"step {bad.Step} diverged");
/// </code></example>
public sealed class StepGuard : IDisposable
{
    readonly StepGuardKernels kernels;

    /// <summary>The device of the flag and of the values it observes.</summary>
    public Device Device { get; }

    /// <summary>The flag, I32 <c>[3]</c>: the first bad step (0 while none), 1 for the loss or 2 for the gradient norm, the bad
    /// value's float bits. Element 0 is what <see cref="Optimizer.SkipFlag"/> reads. It belongs to the guard: do not dispose it.</summary>
    public Tensor Flag { get; }

    /// <summary>Creates a clear guard on <paramref name="device"/>.</summary>
    public StepGuard(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
        kernels = device.Get(static d => new StepGuardKernels(d));
        Flag = Scope.Unscope(Tensor.ZerosInt(device, 3));
    }

    /// <summary>On the device, without waiting: sets the flag to <paramref name="step"/> if it is clear and <paramref name="loss"/>[0]
    /// or <paramref name="norm"/>[0] is not finite (the loss is looked at first). A set flag is left as it is.</summary>
    /// <exception cref="ArgumentException">A value that is not a live F32 tensor with an element on <see cref="Device"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="step"/> below 1.</exception>
    public void Observe(Tensor loss, Tensor norm, int step)
    {
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(norm);
        foreach (var (t, name) in new[] { (loss, nameof(loss)), (norm, nameof(norm)) })
        {
            Check.Alive(t, name);
            Check.DType(t, DType.F32, name);
            Check.That(t.Length >= 1, name, t.Shape, "at least one element (the value is the first)");
            Check.That(ReferenceEquals(t.Device, Device), name, t.Device.Name, $"a tensor on the guard's device '{Device.Name}'");
        }
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, $"step = {step}: expected a step number >= 1.");
        kernels.Observe(1, loss.View, norm.View, Flag.IntView, step);
    }

    /// <summary>Waits for the device and reads the flag: null while no observed step was bad, else the first bad one.</summary>
    public StepFailure? Read()
    {
        var f = Flag.ToIntArray();
        return f[0] == 0 ? null : new StepFailure(f[0], f[1] == 1, BitConverter.Int32BitsToSingle(f[2]));
    }

    /// <summary>Clears the flag (on the device's queue, after every launch before it), so that later steps apply again.</summary>
    public void Clear() => Flag.IntView.SubView(0, 3).MemSetToZero();

    /// <inheritdoc />
    public void Dispose() => Flag.Dispose();
}

/// <summary>The guard's kernel, loaded once per device.</summary>
internal sealed class StepGuardKernels
{
    public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> Observe;

    public StepGuardKernels(Device d) => Observe = d.LoadKernel(ObserveKernel);

    // One thread: flag = [step, 1 (loss) | 2 (norm), bits] for the first non-finite value while flag[0] is 0. Finiteness by the
    // exponent bits (all ones: an infinity or NaN), which no backend's float optimisations can fold away.
    static void ObserveKernel(Index1D i, ArrayView<float> loss, ArrayView<float> norm, ArrayView<int> flag, int step)
    {
        if (flag[0] != 0) return;
        uint l = Interop.FloatAsInt(loss[0]), n = Interop.FloatAsInt(norm[0]);
        const uint exponent = 0x7F800000;
        if ((l & exponent) == exponent)
        {
            flag[1] = 1;
            flag[2] = (int)l;
            flag[0] = step;
        }
        else if ((n & exponent) == exponent)
        {
            flag[1] = 2;
            flag[2] = (int)n;
            flag[0] = step;
        }
    }
}
