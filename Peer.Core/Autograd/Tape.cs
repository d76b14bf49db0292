// Reverse-mode autograd. Every differentiable op that sees an input requiring gradient appends an
// entry (output, inputs, backward closure, tensors it saved) to its device's tape; Backward() walks
// the tape in reverse. Gradient rule, stated once: each backward closure receives the gradient of
// its output and hands gradients for its inputs to Tape.Accumulate, which adds (+=) into Grad.
// Intermediate gradients and saved tensors are freed as soon as the walk has used them.
namespace Peer;

/// <summary>The record of differentiable operations on one device, walked in reverse by <see cref="Backward(Tensor)"/>.</summary>
/// <remarks>A tape is used from one thread at a time.</remarks>
public sealed class Tape
{
    sealed record Entry(Tensor Output, Tensor[] Inputs, Action<Tensor> Backward, Tensor[] Saved);

    readonly List<Entry> entries = new();
    readonly Device device;
    int noGrad;

    internal Tape(Device device) => this.device = device;

    /// <summary>Whether ops are currently recorded (false inside <see cref="NoGrad"/>).</summary>
    public bool IsRecording => noGrad == 0;

    /// <summary>Entries currently recorded.</summary>
    public int Count => entries.Count;

    /// <summary>Stops recording until the returned object is disposed (nestable).</summary>
    public IDisposable NoGrad()
    {
        noGrad++;
        return new Restore(this);
    }

    sealed class Restore(Tape tape) : IDisposable
    {
        bool done;
        public void Dispose() { if (!done) { done = true; tape.noGrad--; } }
    }

    /// <summary>True when an op on these inputs must be recorded: recording is on and some input requires gradient.</summary>
    public bool Needs(params Tensor[] inputs)
    {
        if (noGrad != 0) return false;
        foreach (var t in inputs) if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>
    /// Records <paramref name="output"/> as computed from <paramref name="inputs"/>; <paramref name="backward"/> receives
    /// the output's gradient and must pass input gradients to <see cref="Accumulate"/>. <paramref name="saved"/> are
    /// tensors the closure owns; they are disposed once the entry is used or dropped.
    /// </summary>
    public void Record(Tensor output, Tensor[] inputs, Action<Tensor> backward, params Tensor[] saved)
    {
        output.RequiresGrad = true;
        output.IsLeaf = false;
        foreach (var s in saved) Scope.Unscope(s);
        Scope.Current?.MarkTape(this, entries.Count);
        entries.Add(new Entry(output, inputs, backward, saved));
    }

    /// <summary>
    /// Adds <paramref name="grad"/> into <paramref name="target"/>'s gradient and takes ownership of <paramref name="grad"/>
    /// (it is adopted as the gradient or disposed). Does nothing for tensors that do not require gradient.
    /// </summary>
    /// <exception cref="InvalidOperationException"><paramref name="target"/> requires gradient but was disposed.</exception>
    public static void Accumulate(Tensor target, Tensor grad)
    {
        if (!Receives(target, grad))
        {
            grad.Dispose();
            return;
        }
        if (!grad.Shape.AsSpan().SequenceEqual(target.Shape))
            throw new InvalidOperationException($"Gradient of shape {Tensor.FormatShape(grad.Shape)} for a tensor of shape {Tensor.FormatShape(target.Shape)}: an op's backward is wrong.");
        Scope.Unscope(grad);
        if (target.Grad is null)
        {
            target.Grad = target.FirstGradient(grad); // grad itself, or for a parameter in an optimizer's arena a copy in its slot
            return;
        }
        Ops.AddInPlace(target.Grad, grad);
        grad.Dispose();
    }

    /// <summary>Whether <paramref name="target"/> takes a gradient (it requires one); throws, disposing <paramref name="owned"/>,
    /// when it was disposed, because dropping the gradient would silently cut every path through it.</summary>
    internal static bool Receives(Tensor target, IDisposable owned)
    {
        if (!target.RequiresGrad) return false;
        if (!target.IsDisposed) return true;
        owned.Dispose();
        throw new InvalidOperationException($"Backward: a gradient flows to {target} ({(target.IsLeaf ? "a leaf: a parameter or input" : "an op's output")}), " +
            "but that tensor was disposed, so the gradients of everything it was computed from would be lost. Keep every tensor between " +
            "the parameters and the loss alive until Backward has run (dispose them after it, or let the step's Scope do it).");
    }

    /// <summary>
    /// Computes gradients of the scalar <paramref name="loss"/> with respect to every tensor that requires gradient,
    /// accumulating (+=) into leaf tensors' <see cref="Tensor.Grad"/> (or <see cref="Tensor.SparseGrad"/>), then clears the tape.
    /// </summary>
    /// <exception cref="ArgumentException">The loss is not a one-element tensor, or nothing it depends on requires gradient.</exception>
    public void Backward(Tensor loss)
    {
        Check.That(loss.Length == 1, nameof(loss), loss.Shape, "a one-element tensor (a scalar loss)");
        Backward(loss, Tensor.Full(device, 1f, loss.Shape));
    }

    /// <summary>
    /// Vector-Jacobian product: back-propagates <paramref name="gradOutput"/> (the gradient of some scalar with respect to
    /// <paramref name="output"/>) to every tensor that requires gradient, accumulating into leaf gradients, then clears the tape.
    /// Takes ownership of <paramref name="gradOutput"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A gradient flows to a tensor that was disposed; the tape is cleared, and leaf
    /// gradients may hold part of this call's contribution.</exception>
    public void Backward(Tensor output, Tensor gradOutput)
    {
        Check.Alive(output, nameof(output));
        Check.That(output.RequiresGrad && !output.IsLeaf, nameof(output), output, "a tensor computed on the tape from something that requires gradient");
        Check.Shape(gradOutput, nameof(gradOutput), output.Shape);
        Check.DType(gradOutput, DType.F32, nameof(gradOutput));
        using var phase = device.Profiler?.Enter(ProfilePhase.Backward);
        using (NoGrad())
        {
            output.Grad?.Dispose();
            output.Grad = Scope.Unscope(gradOutput);
            try
            {
                for (int i = entries.Count - 1; i >= 0; i--)
                {
                    var e = entries[i];
                    if (e.Output.Grad is { } g)
                    {
                        e.Output.Grad = null;
                        using (g) e.Backward(g);
                    }
                    foreach (var s in e.Saved) s.Dispose();
                }
            }
            finally
            {
                Truncate(0);
            }
        }
    }

    /// <summary>Drops entries recorded after the first <paramref name="count"/> (used when a scope ends without backward).</summary>
    internal void Truncate(int count)
    {
        for (int i = entries.Count - 1; i >= count; i--)
        {
            foreach (var s in entries[i].Saved) s.Dispose();
            if (!entries[i].Output.IsLeaf) { entries[i].Output.Grad?.Dispose(); entries[i].Output.Grad = null; }
            entries.RemoveAt(i);
        }
    }

    /// <summary>Drops every entry without computing gradients.</summary>
    public void Clear() => Truncate(0);
}
