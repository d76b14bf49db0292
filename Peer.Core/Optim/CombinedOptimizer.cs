// Several optimizers over disjoint sets of parameters, stepped, saved and restored as one (TorchRec's
// CombinedOptimizer): e.g. row-wise AdaGrad for the expert tables and AdamW for everything else. Every group's
// gradients are validated before any group updates, and a state dict is checked whole before any group copies it.
// State names are each optimizer's own, unprefixed: a name is parameter.state and parameter names are distinct
// across the groups, so a model saved with one group per optimizer keeps the names it had under a single optimizer.
namespace Peer.Optim;

/// <summary>Named groups of parameters, each with its own <see cref="Optimizer"/>, used as one optimizer.</summary>
/// <example><code>
/// var tables = peer.NamedParameters().Where(p => p.Tensor.RowSparse);
/// var rest = peer.NamedParameters().Where(p => !p.Tensor.RowSparse);
/// using var opt = new CombinedOptimizer([("sparse", new RowWiseAdagrad(tables, lr: 0.05f)), ("dense", new AdamW(rest, lr: 1e-3f))]);
/// </code></example>
public sealed class CombinedOptimizer : IDisposable
{
    readonly (string Name, Optimizer Optimizer)[] groups;
    bool disposed;

    /// <summary>The groups, in the order given (and stepped).</summary>
    public IReadOnlyList<(string Name, Optimizer Optimizer)> Groups => groups;

    /// <summary>The device holding every parameter.</summary>
    public Device Device { get; }

    /// <summary>Combines <paramref name="groups"/>; the combined optimizer owns them and disposes them.</summary>
    /// <exception cref="ArgumentException">No groups, an empty or repeated group name, an optimizer given twice, a parameter (by name or
    /// tensor) in two groups, or groups on different devices.</exception>
    public CombinedOptimizer(IEnumerable<(string Name, Optimizer Optimizer)> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        this.groups = groups.ToArray();
        Check.That(this.groups.Length > 0, nameof(groups), "an empty list", "at least one group");
        var names = new HashSet<string>();
        var optimizers = new HashSet<Optimizer>(ReferenceEqualityComparer.Instance);
        var parameterNames = new Dictionary<string, string>();
        var tensors = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        foreach (var (name, opt) in this.groups)
        {
            Check.That(!string.IsNullOrEmpty(name), nameof(groups), name, "non-empty group names");
            Check.That(names.Add(name), nameof(groups), name, "distinct group names");
            ArgumentNullException.ThrowIfNull(opt, name);
            Check.That(optimizers.Add(opt), nameof(groups), name, "each optimizer in one group only");
            Check.That(ReferenceEquals(opt.Device, this.groups[0].Optimizer.Device), nameof(groups), name,
                $"every group on one device ('{this.groups[0].Optimizer.Device.Name}'), not '{opt.Device.Name}'");
            var tensorList = opt.ParameterTensors.ToArray();
            var nameList = opt.ParameterNames;
            for (int i = 0; i < nameList.Count; i++)
            {
                Check.That(parameterNames.TryAdd(nameList[i], name), nameof(groups), nameList[i],
                    $"each parameter in one group (it is in '{parameterNames.GetValueOrDefault(nameList[i])}' and '{name}')");
                Check.That(tensors.TryAdd(tensorList[i], name), nameof(groups), nameList[i],
                    $"each tensor in one group (it is in '{tensors.GetValueOrDefault(tensorList[i])}' and '{name}')");
            }
        }
        Device = this.groups[0].Optimizer.Device;
    }

    /// <summary>The <see cref="Optimizer.SkipFlag"/> of every group: setting it sets each group's (null: none); reading it gives the first group's.</summary>
    /// <exception cref="ArgumentException">Not a live I32 tensor with at least one element on <see cref="Device"/>.</exception>
    public Tensor? SkipFlag
    {
        get => groups[0].Optimizer.SkipFlag;
        set
        {
            foreach (var (_, opt) in groups) opt.SkipFlag = value;
        }
    }

    /// <summary>The optimizer of the group named <paramref name="group"/>.</summary>
    /// <exception cref="KeyNotFoundException">No group of that name.</exception>
    public Optimizer this[string group] =>
        groups.FirstOrDefault(g => g.Name == group).Optimizer
        ?? throw new KeyNotFoundException($"No optimizer group '{group}': the groups are {string.Join(", ", groups.Select(g => $"'{g.Name}'"))}.");

    /// <summary>
    /// One step of every group (see <see cref="Optimizer.Step"/>): every group's gradients are validated first, so a bad gradient
    /// anywhere leaves every parameter unchanged. Each group steps at its own <see cref="Optimizer.LearningRate"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A gradient is malformed (see <see cref="Optimizer.Step"/>). Nothing was updated.</exception>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        foreach (var (_, opt) in groups) opt.PrepareStep();
        foreach (var (_, opt) in groups) opt.ApplyStep();
    }

    /// <summary>Disposes and clears the gradients of every group's parameters.</summary>
    public void ZeroGrad()
    {
        foreach (var (_, opt) in groups) opt.ZeroGrad();
    }

    /// <summary>Every group's <see cref="Optimizer.StateDict"/>, in group order, under the groups' own names.</summary>
    public IEnumerable<(string Name, Tensor T)> StateDict()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return groups.SelectMany(g => g.Optimizer.StateDict()).ToList();
    }

    /// <summary>Restores state saved by <see cref="StateDict"/>: each group takes its own entries. Every entry is checked (each
    /// group's present, of its shape, type and device; none belonging to no group) before any group copies anything.</summary>
    /// <exception cref="ArgumentException">An entry is missing, unexpected, repeated, of the wrong shape, type or device, or a step count is negative.</exception>
    public void LoadStateDict(IEnumerable<(string Name, Tensor T)> state)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var given = Optimizer.CollectState(state);
        var owned = new HashSet<string>();
        foreach (var (_, opt) in groups)
            foreach (var (name, _) in opt.StateDict()) owned.Add(name);
        foreach (var name in given.Keys)
            Check.That(owned.Contains(name), nameof(state), name,
                owned.Count == 0 ? "no entries (no group keeps state)" : $"one of the optimizers' state names (e.g. '{owned.First()}')");
        var steps = groups.Select(g => g.Optimizer.CheckState(given, allowOthers: true)).ToArray();
        for (int i = 0; i < groups.Length; i++) groups[i].Optimizer.CopyState(given, steps[i]);
    }

    /// <summary>Disposes every group's optimizer (not the parameters).</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var (_, opt) in groups) opt.Dispose();
    }
}
