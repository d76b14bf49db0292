// The Module base: explicit registration of parameters, buffers and child modules under dotted
// PyTorch-style names ("blocks.3.attn.qkv.weight"), train/eval mode, and deterministic disposal. A component is
// a child whose names join its owner's unprefixed, in registration order (a shared part, such as the product-key
// retrieval of PEER and PKM, that holds some of its owner's interop names).
namespace Peer.Nn;

/// <summary>A layer or model: owns parameters (tensors that require gradient), buffers and child modules.</summary>
public abstract class Module : IDisposable
{
    readonly List<(string Name, Tensor Tensor)> parameters = new();
    readonly List<(string Name, Tensor Tensor)> buffers = new();
    readonly List<(string Name, Module Module)> children = new();
    readonly List<(int Parameters, int Buffers, Module Module)> components = new(); // with the counts of own entries before it

    /// <summary>The device holding this module's tensors.</summary>
    public Device Device { get; }

    /// <summary>True in training mode (the default), false in evaluation mode.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>Creates a module on <paramref name="device"/>.</summary>
    protected Module(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
    }

    /// <summary>Registers a parameter: it requires gradient, is owned by this module and is not owned by any scope.</summary>
    /// <param name="name">Its name within this module.</param>
    /// <param name="t">The tensor.</param>
    /// <param name="rowSparse">True for a table whose gradient this module's ops deliver as a <see cref="RowSparseGrad"/> (sets <see cref="Tensor.RowSparse"/>).</param>
    protected Tensor Parameter(string name, Tensor t, bool rowSparse = false)
    {
        CheckName(name);
        Scope.Unscope(t);
        t.RequiresGrad = true;
        t.RowSparse = rowSparse;
        t.Name = name;
        parameters.Add((name, t));
        return t;
    }

    /// <summary>Registers a buffer: state saved with the module that receives no gradient (e.g. BatchNorm running statistics).</summary>
    protected Tensor Buffer(string name, Tensor t)
    {
        CheckName(name);
        Scope.Unscope(t);
        t.Name = name;
        buffers.Add((name, t));
        return t;
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected T Child<T>(string name, T module) where T : Module
    {
        CheckName(name);
        children.Add((name, module));
        return module;
    }

    /// <summary>
    /// Registers a component: a child module whose parameters and buffers are listed as this module's own, under their own
    /// names without a prefix, at this point of the registration order (so a state dict reads as if this module had
    /// registered them itself). Its mode follows this module's and it is disposed with it.
    /// </summary>
    protected T Component<T>(T module) where T : Module
    {
        ArgumentNullException.ThrowIfNull(module);
        foreach (var (name, _) in module.StateDict()) CheckName(name);
        components.Add((parameters.Count, buffers.Count, module));
        return module;
    }

    void CheckName(string name)
    {
        Check.That(!string.IsNullOrEmpty(name) && !name.Contains(' '), nameof(name), name, "a non-empty name without spaces");
        Check.That(parameters.All(p => p.Name != name) && buffers.All(p => p.Name != name) && children.All(c => c.Name != name)
            && components.All(c => c.Module.StateDict().All(s => s.Name != name)),
            nameof(name), name, "a name not already registered in this module");
    }

    /// <summary>Every parameter of this module and its descendants, with dotted names, in registration order.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedParameters(string prefix = "")
    {
        for (int i = 0, c = 0; i <= parameters.Count; i++)
        {
            for (; c < components.Count && components[c].Parameters == i; c++)
                foreach (var p in components[c].Module.NamedParameters(prefix)) yield return p;
            if (i < parameters.Count) yield return (prefix + parameters[i].Name, parameters[i].Tensor);
        }
        foreach (var (n, m) in children)
            foreach (var p in m.NamedParameters(prefix + n + ".")) yield return p;
    }

    /// <summary>Every buffer of this module and its descendants, with dotted names.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedBuffers(string prefix = "")
    {
        for (int i = 0, c = 0; i <= buffers.Count; i++)
        {
            for (; c < components.Count && components[c].Buffers == i; c++)
                foreach (var b in components[c].Module.NamedBuffers(prefix)) yield return b;
            if (i < buffers.Count) yield return (prefix + buffers[i].Name, buffers[i].Tensor);
        }
        foreach (var (n, m) in children)
            foreach (var p in m.NamedBuffers(prefix + n + ".")) yield return p;
    }

    /// <summary>Parameters and buffers together: everything a checkpoint of the module holds.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateDict() => NamedParameters().Concat(NamedBuffers());

    /// <summary>The direct children with their names.</summary>
    public IEnumerable<(string Name, Module Module)> Children => children;

    /// <summary>Every parameter tensor.</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Tensor);

    /// <summary>Sets training mode on this module and its descendants.</summary>
    public void Train(bool training = true)
    {
        IsTraining = training;
        foreach (var (_, _, m) in components) m.Train(training);
        foreach (var (_, m) in children) m.Train(training);
    }

    /// <summary>Sets evaluation mode (same as <c>Train(false)</c>).</summary>
    public void Eval() => Train(false);

    /// <summary>Clears the gradients of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters())
        {
            p.Grad?.Dispose();
            p.Grad = null;
            p.SparseGrad?.Dispose();
            p.SparseGrad = null;
        }
    }

    /// <summary>Total number of parameter elements.</summary>
    public long ParameterCount => Parameters().Sum(p => (long)p.Length);

    /// <summary>Disposes parameters, buffers and children.</summary>
    public virtual void Dispose()
    {
        foreach (var (_, t) in parameters) t.Dispose();
        foreach (var (_, t) in buffers) t.Dispose();
        foreach (var (_, _, m) in components) m.Dispose();
        foreach (var (_, m) in children) m.Dispose();
        GC.SuppressFinalize(this);
    }
}
