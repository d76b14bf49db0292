// One PEER layer and its optimizer, stepped on random tokens: forward, backward and optimizer step timed apart (each
// ends with a device synchronisation) and the step's peak device memory: params, optimizer state, gradients and
// activations. Other objects may live on the device meanwhile (the other design, the reference N), so the step's
// peak is taken as the rise of device.PeakTensorBytes over what tensors held when the step began (the two random
// inputs included), plus the layer's own persistent bytes: parameters, buffers and optimizer state. Idle buffers of
// the device's pool (at most DeviceOptions.BufferPoolBytes, shared by everything on the device) are not in these
// figures. The optimizer is AdamW for the query projection and norm, and the chosen one (as the trainer's
// train.sparse_optimizer) for the row-sparse expert tables and sub-keys.
using Peer.Training;

namespace Peer.Bench;

internal sealed class PeerStepRunner : IDisposable
{
    readonly Device device;
    readonly int tokens;
    readonly bool naive;
    public PeerLayer Layer { get; }
    public CombinedOptimizer Optimizer { get; }
    /// <summary>The tables' optimizer: one of <see cref="TrainConfig.SparseOptimizers"/>.</summary>
    public string SparseOptimizer { get; }
    public List<double> Forward { get; } = new();
    public List<double> Backward { get; } = new();
    public List<double> Step { get; } = new();
    public List<double> Total { get; } = new();
    /// <summary>Highest peak over the recorded steps: persistent bytes plus the step's transient bytes.</summary>
    public long PeakBytes { get; private set; }
    /// <summary>Parameters, buffers and optimizer state, in bytes (known after the first step).</summary>
    public long PersistentBytes { get; private set; }
    /// <summary>Highest rise over the recorded steps of the device's live bytes above the persistent ones: gradients, activations, inputs, scratch.</summary>
    public long TransientBytes { get; private set; }
    int seed;

    /// <param name="naive">True: the public implementations' design (<see cref="NaivePeer"/>: gathered rows, dense gradients, dense AdamW);
    /// false: PeerLayer's fused kernels, row-sparse gradients and the lazy sparse step of the tables' optimizer.</param>
    /// <param name="sparseOptimizer">The optimizer of the expert tables and sub-keys: adamw, rowwise-adamw or rowwise-adagrad.</param>
    public PeerStepRunner(Device device, int dim, PeerOptions options, int tokens, bool naive, string sparseOptimizer = "adamw")
    {
        Check.That(TrainConfig.SparseOptimizers.Contains(sparseOptimizer), nameof(sparseOptimizer), sparseOptimizer, $"one of {string.Join(", ", TrainConfig.SparseOptimizers)}");
        this.device = device;
        this.tokens = tokens;
        this.naive = naive;
        SparseOptimizer = sparseOptimizer;
        Layer = new PeerLayer(device, dim, options);
        var tables = Layer.NamedParameters().Where(p => p.Tensor.RowSparse).ToList();
        Optimizer = new CombinedOptimizer(
        [
            ("dense", new AdamW(Layer.NamedParameters().Where(p => !p.Tensor.RowSparse))),
            ("sparse", sparseOptimizer switch
            {
                "rowwise-adagrad" => new RowWiseAdagrad(tables),
                "rowwise-adamw" => new RowWiseAdamW(tables),
                _ => new AdamW(tables),
            }),
        ]);
    }

    /// <summary>One training step; its times are kept when <paramref name="record"/>.</summary>
    public void Run(bool record = true)
    {
        using var scope = Scope.Begin();
        ulong s = (ulong)(1000 + 2 * seed++);
        var x = Ops.Normal(device, s, 0f, 1f, tokens, Layer.Dim);
        var gy = Ops.Normal(device, s + 1, 0f, 1f, tokens, Layer.Dim);
        device.Synchronize();
        long before = device.TensorBytes - 4L * (x.Length + gy.Length);
        device.ResetPeak();
        Tensor? y = null;
        double f = Timing.Seconds(() => { y = naive ? NaivePeer.Forward(Layer, x) : Layer.Forward(x); device.Synchronize(); });
        double b = Timing.Seconds(() => { device.Tape.Backward(y!, gy); device.Synchronize(); });
        double o = Timing.Seconds(() => { Optimizer.Step(); device.Synchronize(); });
        long peak = device.PeakTensorBytes;
        Optimizer.ZeroGrad();
        device.Profiler?.MarkStep();
        // Warm-up steps are left out of the memory figures too: the first one allocates the optimizer state, counted as persistent.
        if (!record) return;
        PersistentBytes = 4L * (Layer.StateDict().Sum(t => (long)t.Tensor.Length) + Optimizer.StateDict().Sum(t => (long)t.T.Length));
        TransientBytes = Math.Max(TransientBytes, peak - before);
        PeakBytes = PersistentBytes + TransientBytes;
        Forward.Add(f);
        Backward.Add(b);
        Step.Add(o);
        Total.Add(f + b + o);
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Layer.Dispose();
    }
}
