// Evaluation and generation switch a model to evaluation mode and must hand it back as they found it,
// module by module: a model may mix modes (a BatchNorm held in evaluation mode while the rest trains).
using Peer.Nn;

namespace Peer.Training;

/// <summary>Puts a module tree in evaluation mode until disposed, then restores each module's own mode.</summary>
internal sealed class EvalMode : IDisposable
{
    readonly (Module Module, bool Training)[] found;

    public EvalMode(Module root)
    {
        found = Modes(root).ToArray();
        root.Eval();
    }

    // Parents before children: Train(bool) recurses, so restoring in this order leaves each module in its own mode.
    static IEnumerable<(Module, bool)> Modes(Module m) => m.Children.SelectMany(c => Modes(c.Module)).Prepend((m, m.IsTraining));

    public void Dispose()
    {
        foreach (var (module, training) in found) module.Train(training);
    }
}
