// The optimizer base: named parameters, their per-parameter state (allocated on the first step or load, then
// reused: Step() allocates nothing), gradient validation before any update, and a state dict of named tensors
// so a checkpoint restores the optimizer exactly. A parameter steps with its dense Grad or, for tables looked
// up by row, its RowSparseGrad (a lazy step over the touched rows only); a parameter with neither is skipped.
// Optimizers whose state is elementwise pack the parameters that have dense gradients at the first step into an arena
// (ParameterArena.cs) and step neighbouring ones together, one launch per run instead of one per parameter.
// A state tensor has the parameter's shape, or one element per row for the row-wise optimizers (rows are the first
// dimension), so that state is addressed by row index whichever rows a process holds.
using ILGPU;
using ILGPU.Runtime;

namespace Peer.Optim;

/// <summary>Updates parameters from their gradients. Concrete optimizers: <see cref="Sgd"/>, <see cref="AdamW"/>, and for tables
/// looked up by row <see cref="RowWiseAdagrad"/> and <see cref="RowWiseAdamW"/>; <see cref="CombinedOptimizer"/> steps several as one.</summary>
public abstract partial class Optimizer : IDisposable
{
    private protected sealed class Slot(string name, Tensor param)
    {
        public readonly string Name = name;
        public readonly Tensor Param = param;
        public Tensor[] State = [];
        public Tensor? StepTensor;
        public long Steps;
        public bool Sparse;
    }

    readonly Slot[] slots;
    readonly string[] stateNames;
    readonly bool countsSteps;
    int[] rowsHost = new int[16];
    float learningRate;
    bool allocated, disposed, packed;
    ParameterArena? arena;
    Tensor? skipFlag, noSkip;

    /// <summary>The device holding every parameter.</summary>
    public Device Device { get; }

    /// <summary>Learning rate used by the next <see cref="Step"/>; set it from a schedule before each step.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative or not finite.</exception>
    public float LearningRate
    {
        get => learningRate;
        set
        {
            if (!(value >= 0 && float.IsFinite(value)))
                throw new ArgumentOutOfRangeException(nameof(LearningRate), value, $"LearningRate = {value}: expected a finite value >= 0.");
            learningRate = value;
        }
    }

    /// <summary>
    /// A device flag that makes <see cref="Step"/> change nothing: null (the default) or an I32 tensor on this optimizer's device whose
    /// element 0 every update kernel reads on the device, skipping the update (no parameter, no moment or other state changes) when it is
    /// not 0. The host never reads it here, so a training loop can decide on the device whether a step applies (as
    /// <c>Peer.Training.Trainer</c> does for a non-finite loss or gradient, see <see cref="StepGuard"/>) without waiting for the device.
    /// The host-side step counts (<see cref="StepCalls"/> and the per-parameter counts that <see cref="StateDict"/> writes) still
    /// advance on a skipped step: a caller that skips a step must not save this optimizer's state afterwards, or must restore it.
    /// </summary>
    /// <exception cref="ArgumentException">Not a live I32 tensor with at least one element on <see cref="Device"/>.</exception>
    public Tensor? SkipFlag
    {
        get => skipFlag;
        set
        {
            if (value is not null)
            {
                Check.Alive(value, nameof(SkipFlag));
                Check.DType(value, DType.I32, nameof(SkipFlag));
                Check.That(value.Length >= 1, nameof(SkipFlag), value.Shape, "at least one element (the flag is the first)");
                Check.That(ReferenceEquals(value.Device, Device), nameof(SkipFlag), value.Device.Name, $"a tensor on the optimizer's device '{Device.Name}'");
            }
            skipFlag = value;
        }
    }

    /// <summary>The flag the update kernels read: <see cref="SkipFlag"/>, or a zero of this optimizer's when none is set.</summary>
    private protected ArrayView<int> Skip => (skipFlag ?? noSkip!).IntView;

    /// <summary>Names of the optimized parameters, in order.</summary>
    public IReadOnlyList<string> ParameterNames => slots.Select(s => s.Name).ToArray();

    /// <summary>The optimized parameters, in the order of <see cref="ParameterNames"/>.</summary>
    internal IEnumerable<Tensor> ParameterTensors => slots.Select(s => s.Param);

    /// <summary>Number of <see cref="Step"/> calls on this object (not part of the state dict; the per-parameter step counts are).</summary>
    public long StepCalls { get; private set; }

    private protected Optimizer(IEnumerable<(string Name, Tensor Param)> parameters, float learningRate, string[] stateNames, bool countsSteps)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var list = parameters.ToList();
        Check.That(list.Count > 0, nameof(parameters), "an empty list", "at least one parameter");
        var names = new HashSet<string>();
        var tensors = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (name, p) in list)
        {
            Check.That(!string.IsNullOrEmpty(name), nameof(parameters), name, "non-empty parameter names");
            Check.That(names.Add(name), nameof(parameters), name, "distinct parameter names");
            ArgumentNullException.ThrowIfNull(p, name);
            Check.That(tensors.Add(p), nameof(parameters), name, "each tensor once (a tied parameter must appear under one name only)");
            Check.Alive(p, name);
            Check.DType(p, DType.F32, name);
            Check.SameDevice(list[0].Param, p, name);
        }
        Device = list[0].Param.Device;
        slots = list.Select(e => new Slot(e.Name, e.Param)).ToArray();
        this.stateNames = stateNames;
        this.countsSteps = countsSteps;
        LearningRate = learningRate;
    }

    /// <summary>
    /// Applies one update to every parameter that has a gradient (<see cref="Tensor.Grad"/> or <see cref="Tensor.SparseGrad"/>).
    /// Every gradient is validated before any parameter changes. State is allocated on the first call; later calls allocate nothing on the device.
    /// </summary>
    /// <remarks>Where the device checks indices (the CPU accelerator always, other backends with <see cref="DeviceOptions.CheckIndices"/>)
    /// the rows of each sparse gradient are copied to the host and checked (O(R) per sparse parameter), because a kernel cannot report
    /// an out-of-range row and the CPU accelerator ends the process on one. Elsewhere nothing waits for the device: a row outside its
    /// parameter is skipped, and repeated rows (which Peer's ops never produce) would update concurrently.</remarks>
    /// <exception cref="InvalidOperationException">A parameter has both kinds of gradient, a gradient of the wrong shape, type or device,
    /// or (where checked) sparse rows that are out of range or not strictly increasing. Nothing was updated.</exception>
    public void Step()
    {
        PrepareStep();
        ApplyStep();
    }

    /// <summary>The checks of <see cref="Step"/>: allocates the state if needed and validates every gradient; changes no parameter.</summary>
    internal void PrepareStep()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var phase = Device.Profiler?.Enter(ProfilePhase.Optimizer);
        EnsureState();
        for (int i = 0; i < slots.Length; i++) Validate(slots[i]);
    }

    /// <summary>The updates of <see cref="Step"/>, after <see cref="PrepareStep"/> passed.</summary>
    internal void ApplyStep()
    {
        using var phase = Device.Profiler?.Enter(ProfilePhase.Optimizer);
        if (!packed && PacksDenseParameters)
        {
            arena = ParameterArena.Pack(Device, slots.Select(s => (s.Param, s.State)).ToArray(),
                Enumerable.Range(0, slots.Length).Where(i => slots[i].Param.Grad is not null && slots[i].Param.Length > 0));
            packed = true;
        }
        var inRun = StepArenaRuns();
        for (int i = 0; i < slots.Length; i++)
        {
            var s = slots[i];
            if (inRun[i]) continue;
            if (s.Param.Grad is { } g)
            {
                s.Steps++;
                UpdateDense(s.Param, g, s.State, s.Steps);
            }
            else if (s.Param.SparseGrad is { } sg)
            {
                s.Steps++;
                if (sg.Values.Length > 0) UpdateSparse(s.Param, sg, sg.Values.Shape[1], s.State, s.Steps);
            }
        }
        StepCalls++;
    }

    /// <summary>Disposes and clears every parameter's dense and sparse gradient.</summary>
    public void ZeroGrad()
    {
        using var phase = Device.Profiler?.Enter(ProfilePhase.Optimizer);
        foreach (var s in slots)
        {
            s.Param.Grad?.Dispose();
            s.Param.Grad = null;
            s.Param.SparseGrad?.Dispose();
            s.Param.SparseGrad = null;
        }
    }

    /// <summary>Frees the optimizer's state tensors (not the parameters).</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var s in slots)
        {
            foreach (var t in s.State) t.Dispose();
            s.StepTensor?.Dispose();
        }
        noSkip?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Whether this optimizer's state is elementwise (each state tensor of a parameter's shape, element i updated from element i of
    /// the parameter and gradient alone), so that its dense parameters can be packed into an arena and stepped a run at a time.
    /// </summary>
    private protected virtual bool PacksDenseParameters => false;

    /// <summary>Steps the arena's runs: neighbouring packed parameters with their gradients in place and equal step counts, each run
    /// with one <see cref="UpdateDense"/>; returns which slots were stepped.</summary>
    bool[] StepArenaRuns()
    {
        var done = new bool[slots.Length];
        if (arena is null) return done;
        int n = arena.Slots.Length;
        for (int i = 0; i < n;)
        {
            var first = slots[arena.Slots[i]];
            if (!arena.InPlace(i, first.Param, first.State))
            {
                i++;
                continue;
            }
            long steps = first.Steps + 1, from = arena.Offsets[i], length = first.Param.Length;
            int j = i + 1;
            for (; j < n; j++)
            {
                var s = slots[arena.Slots[j]];
                if (s.Steps + 1 != steps || arena.Offsets[j] != from + length || length + s.Param.Length > int.MaxValue || !arena.InPlace(j, s.Param, s.State)) break;
                length += s.Param.Length;
            }
            var (p, g, state) = arena.Run(from, length);
            try
            {
                UpdateDense(p, g, state, steps);
            }
            finally
            {
                p.Dispose();
                g.Dispose();
                foreach (var t in state) t.Dispose();
            }
            for (int k = i; k < j; k++)
            {
                slots[arena.Slots[k]].Steps = steps;
                done[arena.Slots[k]] = true;
            }
            i = j;
        }
        return done;
    }

    /// <summary>One dense update of <paramref name="p"/> from <paramref name="grad"/> (same shape); <paramref name="step"/> counts from 1.</summary>
    private protected abstract void UpdateDense(Tensor p, Tensor grad, Tensor[] state, long step);

    /// <summary>One lazy update of the rows of <paramref name="p"/> (viewed as <c>[Length / cols, cols]</c>) listed in <paramref name="grad"/>.</summary>
    private protected abstract void UpdateSparse(Tensor p, RowSparseGrad grad, int cols, Tensor[] state, long step);

    /// <summary>The shape of state tensor <paramref name="k"/> of parameter <paramref name="p"/>: the parameter's, unless an optimizer keeps it per row.</summary>
    private protected virtual int[] StateShape(int k, Tensor p) => p.Shape;

    /// <summary>True for optimizers whose state is per row of a parameter: a sparse gradient's rows must then be the parameter's rows
    /// (values of the parameter's row width), not rows of some other width dividing its length.</summary>
    private protected virtual bool RowWise => false;

    /// <summary>Rows of <paramref name="p"/> as the row-wise optimizers see it: its first dimension (1 for a scalar).</summary>
    internal static int Rows(Tensor p) => p.Rank == 0 ? 1 : p.Shape[0];

    /// <summary>Elements per row of <paramref name="p"/>: its length over <see cref="Rows"/> (0 for an empty parameter).</summary>
    internal static int RowWidth(Tensor p) => Rows(p) == 0 ? 0 : p.Length / Rows(p);

    void EnsureState()
    {
        if (allocated) return;
        foreach (var s in slots)
        {
            s.State = new Tensor[stateNames.Length];
            for (int k = 0; k < stateNames.Length; k++) s.State[k] = Scope.Unscope(Tensor.Zeros(Device, StateShape(k, s.Param)));
            if (countsSteps) s.StepTensor = Scope.Unscope(Tensor.ZerosInt(Device, 1));
        }
        noSkip = Scope.Unscope(Tensor.ZerosInt(Device, 1));
        allocated = true;
    }

    void Validate(Slot s)
    {
        var p = s.Param;
        if (p.IsDisposed) throw Bad(s, "was disposed");
        if (p.Grad is { } g)
        {
            if (p.SparseGrad is not null) throw Bad(s, "has both a dense Grad and a SparseGrad: expected one kind of gradient");
            if (g.IsDisposed || g.DType != DType.F32 || !ReferenceEquals(g.Device, Device) || !g.Shape.AsSpan().SequenceEqual(p.Shape))
                throw Bad(s, $"has Grad {g} on '{g.Device.Name}': expected a live F32 tensor of shape {Tensor.FormatShape(p.Shape)} on '{Device.Name}'");
            return;
        }
        if (p.SparseGrad is not { } sg) return;
        var rows = sg.Rows;
        var values = sg.Values;
        if (rows.IsDisposed || values.IsDisposed) throw Bad(s, "has a disposed SparseGrad");
        if (!ReferenceEquals(rows.Device, Device) || !ReferenceEquals(values.Device, Device))
            throw Bad(s, $"has a SparseGrad on another device: expected '{Device.Name}'");
        int r = rows.Length, cols = values.Shape[1];
        if (values.Length == 0) return;
        if (p.Length % cols != 0)
            throw Bad(s, $"has SparseGrad values of shape {Tensor.FormatShape(values.Shape)}: expected rows of a width dividing the parameter's {p.Length} elements (shape {Tensor.FormatShape(p.Shape)})");
        if (RowWise && cols != RowWidth(p))
            throw Bad(s, $"has SparseGrad values of shape {Tensor.FormatShape(values.Shape)}: expected rows of the parameter's row width {RowWidth(p)} (shape {Tensor.FormatShape(p.Shape)}; a row-wise optimizer keeps its state per row of the first dimension)");
        // The rows are read back only where that stalls nothing (DeviceOptions.CheckIndices): the sort-and-segment that builds
        // sparse gradients gives distinct, increasing rows inside the table then padding (RowSparseGrad.NoRow), and the sparse
        // kernels skip a row outside it.
        if (!Device.ChecksIndices) return;
        int total = p.Length / cols;
        if (rowsHost.Length < r) rowsHost = new int[Math.Max(r, 2 * rowsHost.Length)];
        rows.IntView.SubView(0, r).CopyToCPU(rowsHost.AsSpan(0, r)); // pinned by the span overload (the ref overload is not)
        int previous = -1;
        for (int i = 0; i < r; i++)
        {
            int row = rowsHost[i];
            if (row == RowSparseGrad.NoRow)
            {
                for (int j = i + 1; j < r; j++)
                    if (rowsHost[j] != RowSparseGrad.NoRow)
                        throw Bad(s, $"has SparseGrad row {rowsHost[j]} at position {j} after padding (RowSparseGrad.NoRow) at position {i}: expected padding only at the end");
                break;
            }
            if (row < 0 || row >= total) throw Bad(s, $"has SparseGrad row {row} at position {i}: expected rows in [0, {total}), or RowSparseGrad.NoRow as trailing padding");
            if (row <= previous) throw Bad(s, $"has SparseGrad rows {previous}, {row} at positions {i - 1}, {i}: expected distinct rows in increasing order");
            previous = row;
        }
    }

    static InvalidOperationException Bad(Slot s, string what) => new($"Parameter '{s.Name}' {what}.");
}
