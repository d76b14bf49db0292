// Scopes give device tensors deterministic lifetimes: every tensor created while a scope is the
// innermost one on this thread is disposed when the scope ends, unless it was unscoped. A training step
// runs inside one scope, so its activations, saved tensors and tape entries go away with it.
namespace Peer;

/// <summary>Disposes the tensors created inside it when it ends (like TorchSharp's dispose scopes).</summary>
/// <example><code>
/// using (var step = Scope.Begin())
/// {
///     var loss = model.Loss(x, y);
///     loss.Backward();
///     optimizer.Step();
///     lossValue = loss.Item();
/// }   // every tensor made in the step is freed here
/// </code></example>
public sealed class Scope : IDisposable
{
    [ThreadStatic] static Scope? current;
    readonly Scope? parent;
    readonly HashSet<Tensor> owned = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<Tape, int> tapeMarks = new();
    bool disposed;

    Scope(Scope? parent) => this.parent = parent;

    /// <summary>Starts a scope nested in the current one.</summary>
    public static Scope Begin() => current = new Scope(current);

    /// <summary>The innermost scope of this thread, or null.</summary>
    public static Scope? Current => current;

    internal static void Register(Tensor t)
    {
        if (current is { } s) s.owned.Add(t);
    }

    /// <summary>Removes a tensor from whatever scope owns it on this thread, so that the caller owns it.</summary>
    public static Tensor Unscope(Tensor t)
    {
        for (var s = current; s != null; s = s.parent)
            if (s.owned.Remove(t)) break;
        return t;
    }

    internal void MarkTape(Tape tape, int countBefore)
    {
        if (!tapeMarks.ContainsKey(tape)) tapeMarks[tape] = countBefore;
    }

    /// <summary>Disposes every tensor still owned and drops tape entries recorded inside this scope.</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        // Only the outermost scope drops tape entries: an inner scope (a module's forward, say) may have unscoped
        // tensors whose entries the outer step still needs. Entries whose outputs were disposed get no gradient (Backward fails, naming the tensor, if one flows to them).
        if (parent == null)
            foreach (var (tape, mark) in tapeMarks) tape.Truncate(mark);
        foreach (var t in owned) t.Dispose();
        owned.Clear();
        if (ReferenceEquals(current, this)) current = parent;
        else throw new InvalidOperationException("Scopes must end in the reverse order of their creation (dispose the innermost scope first).");
        if (parent != null)
            foreach (var (tape, mark) in tapeMarks) parent.MarkTape(tape, mark);
    }
}
