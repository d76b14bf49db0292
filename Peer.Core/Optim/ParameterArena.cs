// Dense parameters packed side by side, as llm.c keeps them: the parameters, their gradients and each optimizer state in one
// buffer apiece, laid out alike in the optimizer's parameter order. Then a dense step updates a run of neighbouring
// parameters (all of them, when each has its gradient in place and the same step count) with one launch, gradient clipping
// reads the run's gradients as one tensor (GradClip), and a backward allocates no gradient for them: the tape copies each
// parameter's first gradient into its slot (Tape.Accumulate), so nothing needs zeroing between steps. Packed once, at the
// optimizer's first step, from the parameters that had a dense gradient then; those with row-sparse gradients (PEER experts,
// sub-keys) stay apart. The parameter tensors keep their identity: their data moves into the arena (Tensor.MoveTo).
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>The packed dense parameters of one optimizer: which slots, where, and the buffers (see the file's header).</summary>
internal sealed class ParameterArena
{
    /// <summary>The optimizer's slot indices packed, in arena order (ascending).</summary>
    public int[] Slots { get; }
    /// <summary>Each packed slot's first element in the buffers, in arena order.</summary>
    public long[] Offsets { get; }
    public Storage Params { get; }
    public Storage Grads { get; }
    public Storage[] States { get; }

    ParameterArena(int[] slots, long[] offsets, Storage parameters, Storage grads, Storage[] states)
    {
        (Slots, Offsets, Params, Grads, States) = (slots, offsets, parameters, grads, states);
    }

    /// <summary>
    /// Packs the parameters <paramref name="slots"/> names (each F32, non-empty, with a dense gradient and elementwise state of its
    /// shape): moves each parameter's data, gradient and state into new buffers and points the parameter's gradient slot there.
    /// The buffers live as long as some tensor views them. Null when there is nothing to pack.
    /// </summary>
    public static ParameterArena? Pack(Device device, IReadOnlyList<(Tensor Param, Tensor[] State)> all, IEnumerable<int> slots)
    {
        int[] which = slots.ToArray();
        if (which.Length == 0) return null;
        var offsets = new long[which.Length];
        long total = 0;
        for (int i = 0; i < which.Length; i++)
        {
            offsets[i] = total;
            total += all[which[i]].Param.Length;
        }
        int states = all[which[0]].State.Length;
        var parameters = new Storage(device, DType.F32, total);
        var grads = new Storage(device, DType.F32, total);
        var stateBuffers = Enumerable.Range(0, states).Select(_ => new Storage(device, DType.F32, total)).ToArray();
        for (int i = 0; i < which.Length; i++)
        {
            var (p, state) = all[which[i]];
            long at = offsets[i];
            p.MoveTo(parameters, at);
            p.SetGradSlot(grads, at);
            var g = Scope.Unscope(p.GradSlotView()!);
            g.View.CopyFrom(p.Grad!.View);
            p.Grad!.Dispose();
            p.Grad = g;
            for (int k = 0; k < states; k++)
            {
                var v = Scope.Unscope(Tensor.ViewOf(stateBuffers[k], at, p.Shape, DType.F32));
                v.View.CopyFrom(state[k].View);
                state[k].Dispose();
                state[k] = v;
            }
        }
        // The tensors viewing them own the buffers from now on.
        parameters.Release();
        grads.Release();
        foreach (var b in stateBuffers) b.Release();
        return new ParameterArena(which, offsets, parameters, grads, stateBuffers);
    }

    /// <summary>Whether packed slot <paramref name="i"/> (arena order) still has its parameter, gradient and state in the arena.</summary>
    public bool InPlace(int i, Tensor param, Tensor[] state)
    {
        long at = Offsets[i];
        if (param.Place != (Params, at) || param.Grad is not { } g || g.Place != (Grads, at) || state.Length != States.Length) return false;
        for (int k = 0; k < States.Length; k++)
            if (state[k].Place != (States[k], at)) return false;
        return true;
    }

    /// <summary>Views of a run of <paramref name="length"/> elements from <paramref name="at"/>: parameters, gradients, each state.
    /// Owned by the caller and by no scope.</summary>
    public (Tensor Param, Tensor Grad, Tensor[] State) Run(long at, long length)
    {
        int[] shape = [checked((int)length)];
        var p = Scope.Unscope(Tensor.ViewOf(Params, at, shape, DType.F32));
        var g = Scope.Unscope(Tensor.ViewOf(Grads, at, shape, DType.F32));
        var s = States.Select(b => Scope.Unscope(Tensor.ViewOf(b, at, shape, DType.F32))).ToArray();
        return (p, g, s);
    }
}
