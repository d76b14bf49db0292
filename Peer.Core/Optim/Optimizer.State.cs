// The optimizer's state dict (Optimizer.cs has the rest): named tensors {parameter}.{state} and {parameter}.step, and the
// checks that let a checkpoint restore an optimizer exactly or refuse with the name of what does not fit.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

public abstract partial class Optimizer
{
    /// <summary>
    /// The optimizer's state as named tensors: <c>{parameter}.{state}</c> for each state tensor of each parameter
    /// (shape of the parameter, or <c>[rows]</c> for a per-row state; see each optimizer) and, for optimizers that count steps,
    /// <c>{parameter}.step</c> (I32 <c>[1]</c>).
    /// The tensors belong to the optimizer: read or save them, do not dispose them. Allocates the state if no step ran yet.
    /// </summary>
    public IEnumerable<(string Name, Tensor T)> StateDict()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        EnsureState();
        var result = new List<(string, Tensor)>();
        foreach (var s in slots)
        {
            for (int k = 0; k < stateNames.Length; k++) result.Add(($"{s.Name}.{stateNames[k]}", s.State[k]));
            if (s.StepTensor is { } st)
            {
                Check.That(s.Steps <= int.MaxValue, s.Name, s.Steps, $"a step count of at most {int.MaxValue} to save as I32");
                st.IntView.SubView(0, 1).CopyFromCPU(new[] { (int)s.Steps });
                result.Add(($"{s.Name}.step", st));
            }
        }
        return result;
    }

    /// <summary>
    /// Restores state saved by <see cref="StateDict"/> (same names, shapes and types; tensors on this optimizer's device) by copying it.
    /// Every entry is checked before anything is copied.
    /// </summary>
    /// <exception cref="ArgumentException">An entry is missing, unexpected, repeated, of the wrong shape, type or device, or a step count is negative.</exception>
    public void LoadStateDict(IEnumerable<(string Name, Tensor T)> state)
    {
        var given = CollectState(state);
        var steps = CheckState(given, allowOthers: false);
        CopyState(given, steps);
    }

    /// <summary>The entries of a state dict by name, each checked to be given once and alive.</summary>
    internal static Dictionary<string, Tensor> CollectState(IEnumerable<(string Name, Tensor T)> state)
    {
        ArgumentNullException.ThrowIfNull(state);
        var given = new Dictionary<string, Tensor>();
        foreach (var (name, t) in state)
        {
            Check.That(given.TryAdd(name, t), nameof(state), name, "each name once");
            ArgumentNullException.ThrowIfNull(t, name);
            Check.Alive(t, name);
        }
        return given;
    }

    /// <summary>The checks of <see cref="LoadStateDict"/> (every entry of this optimizer present, of its shape, type and device;
    /// no other entry unless <paramref name="allowOthers"/>); returns the step counts to restore. Copies nothing.</summary>
    internal long[] CheckState(IReadOnlyDictionary<string, Tensor> given, bool allowOthers)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        EnsureState();
        var expected = StateDict().ToList();
        foreach (var (name, mine) in expected)
        {
            Check.That(given.TryGetValue(name, out var t), "state", name, "an entry of this name (the optimizer's state has it)");
            Check.DType(t!, mine.DType, name);
            Check.Shape(t!, name, mine.Shape);
            Check.SameDevice(mine, t!, name);
        }
        if (!allowOthers)
            foreach (var name in given.Keys)
                Check.That(expected.Any(e => e.Name == name), "state", name,
                    expected.Count == 0 ? "no entries (this optimizer keeps no state)" : $"one of the optimizer's state names (e.g. '{expected[0].Name}')");
        var steps = new long[slots.Length];
        for (int i = 0; i < slots.Length; i++)
        {
            if (slots[i].StepTensor is null) continue;
            string name = $"{slots[i].Name}.step";
            steps[i] = given[name].ToIntArray()[0];
            Check.That(steps[i] >= 0, name, steps[i], "a non-negative step count");
        }
        return steps;
    }

    /// <summary>The copies of <see cref="LoadStateDict"/>, after <see cref="CheckState"/> passed.</summary>
    internal void CopyState(IReadOnlyDictionary<string, Tensor> given, long[] steps)
    {
        foreach (var (name, mine) in StateDict())
            if (mine.Length > 0)
            {
                if (mine.DType == DType.F32) mine.View.CopyFrom(given[name].View);
                else mine.IntView.CopyFrom(given[name].IntView);
            }
        for (int i = 0; i < slots.Length; i++) slots[i].Steps = steps[i];
    }
}
