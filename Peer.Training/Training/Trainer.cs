// The training loop's step and evaluation, as a library object: one optimizer step draws Accumulation
// micro-batches from the seeded sampler, back-propagates each inside its own Scope (so every activation
// is freed when the micro-batch ends), clips the global gradient norm, and steps the optimizer groups (AdamW for
// dense parameters; the row-sparse tables of PEER and PKM layers with train.sparse_optimizer) at the warmup + cosine
// learning rate of that step, each group at its own peak.
// Gradient rule: each micro-batch's loss is scaled by 1/Accumulation, so the step sees the mean gradient.
using System.Diagnostics;
using ILGPU.Runtime;
using Peer.Distributed;
using Peer.Nn;
using Peer.Optim;

namespace Peer.Training;

/// <summary>Expert usage of one PEER layer over an evaluation (the paper's measures, see <see cref="ExpertUsage"/>).</summary>
/// <param name="Layer">The layer's dotted name.</param>
/// <param name="WeightSums">The router-weight sum <c>z'_i</c> of each expert over the validation tokens.</param>
/// <param name="Usage">Fraction of experts with <c>z'_i != 0</c>.</param>
/// <param name="Unevenness"><c>log N + sum_i z_i log z_i</c>, <c>z = z' / |z'|_1</c>.</param>
public sealed record LayerUsage(string Layer, float[] WeightSums, double Usage, double Unevenness);

/// <summary>Which validation windows an evaluation scores.</summary>
public enum EvalCoverage
{
    /// <summary>Up to <see cref="TrainConfig.EvalWindows"/> windows of context + 1 tokens spread over the split: the quick interim check.</summary>
    Sample,
    /// <summary>Every token of the split after its first, once (<see cref="BatchSampler.Tile"/>): the final figure.</summary>
    Whole,
}

/// <summary>An evaluation on the validation windows.</summary>
/// <param name="Loss">Mean validation cross-entropy in nats per token.</param>
/// <param name="Experts">Expert usage of each PEER layer.</param>
public sealed record EvalResult(double Loss, IReadOnlyList<LayerUsage> Experts)
{
    /// <summary>The windows scored.</summary>
    public int Windows { get; init; }
    /// <summary>The tokens scored (each window's tokens after its first).</summary>
    public long Tokens { get; init; }
    /// <summary>The Kneser–Ney trigram and 5-gram losses on the same windows with the same context limit.</summary>
    public required BaselineLosses Baselines { get; init; }
    /// <summary>Validation perplexity <c>exp(Loss)</c>.</summary>
    public double Perplexity => Math.Exp(Loss);
    /// <summary>Mean over PEER layers of the fraction of experts used; null without PEER layers.</summary>
    public double? Usage => Experts.Count == 0 ? null : Experts.Average(l => l.Usage);
    /// <summary>Mean over PEER layers of the unevenness; null without PEER layers.</summary>
    public double? Unevenness => Experts.Count == 0 ? null : Experts.Average(l => l.Unevenness);
}

/// <summary>Trains a <see cref="LanguageModel"/> on a <see cref="Dataset"/>.</summary>
/// <example><code>
/// using var device = Device.Open("cpu");
/// var data = Dataset.Create(Corpus.Load(null), new ByteTokenizer(), context: 64);
/// using var trainer = new Trainer(device, RunConfig.Preset("tiny"), data);
/// for (int i = 0; i &lt; 100; i++) Console.WriteLine(trainer.Step().Loss);
/// </code></example>
public sealed partial class Trainer : IDisposable
{
    /// <summary>The run's configuration.</summary>
    public RunConfig Config { get; }
    /// <summary>The model being trained.</summary>
    public LanguageModel Model { get; }
    /// <summary>The optimizer: group <c>dense</c>, AdamW over every parameter that is not a row-sparse table, and, when the model
    /// has row-sparse tables (<see cref="Tensor.RowSparse"/>: PEER and PKM layers), group <c>sparse</c> with
    /// <see cref="TrainConfig.SparseOptimizer"/>. State names are the parameters' (<c>{parameter}.{state}</c>) whatever the grouping.</summary>
    public CombinedOptimizer Optimizer { get; }
    /// <summary>The data.</summary>
    public Dataset Data { get; }
    /// <summary>The training batch sampler; its state is part of a checkpoint.</summary>
    public BatchSampler Sampler { get; }
    /// <summary>The device.</summary>
    public Device Device { get; }
    readonly Tensor lossTotal, gradNorm; // [1] each: the step's summed micro-batch losses and its gradient norm, on the device
    readonly Tensor readback; // [2]: both, copied together so that a distributed step reads the device once
    readonly float[] host = new float[2];
    readonly StepGuard guard;  // the device's record of the first step with a non-finite loss or norm; the optimizer skips from it on
    readonly Tensor losses;    // [MaxUnreadSteps]: the summed loss of step s at (s - 1) % MaxUnreadSteps, until read
    readonly List<StepResult> unread = [];
    TrainingDivergedException? diverged;
    bool disposed;

    /// <summary>The most steps <see cref="Step"/> takes without reading the device: when this many results are unread, it reads them
    /// (<see cref="ReadBack"/>), so that a diverged run is noticed within this many steps even if nobody asks.</summary>
    public const int MaxUnreadSteps = 256;

    /// <summary>Reads of the device this trainer made for its own bookkeeping (losses, gradient norms, the divergence flag): what a test counts.</summary>
    internal int HostReads { get; private set; }

    /// <summary>Optimizer steps taken so far.</summary>
    public int StepCount { get; internal set; }
    /// <summary>The ranks this trainer runs with and what they split (one process: a <see cref="SingleProcess"/> group).</summary>
    public Distribution Distribution { get; }

    readonly GradientReducer reducer;
    readonly (string Name, Tensor Param)[] replicated; // the same on every rank after the gradient reduction
    readonly Tensor[] sharded;                         // this rank's columns of the expert tables

    /// <summary>Builds the model and optimizer of <paramref name="config"/> on <paramref name="device"/>.</summary>
    /// <exception cref="ConfigException">The configuration is invalid or does not fit the data (vocabulary, tokenizer).</exception>
    public Trainer(Device device, RunConfig config, Dataset data) : this(device, config, data, null) { }

    /// <summary>Builds this rank's model and optimizer for a distributed run (see <see cref="Distribution"/>; null: one process). Every
    /// rank of the group must build its trainer and then call <see cref="Step"/> and <see cref="Evaluate"/> together.</summary>
    /// <exception cref="ConfigException">The configuration is invalid, does not fit the data, or cannot be split between the ranks.</exception>
    public Trainer(Device device, RunConfig config, Dataset data, Distribution? distribution)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(data);
        config.Validate();
        ModelConfig.Require(config.Model.VocabSize == data.Tokenizer.VocabSize,
            $"vocab_size = {config.Model.VocabSize} but the {data.Tokenizer.Name} tokenizer has {data.Tokenizer.VocabSize} ids");
        ModelConfig.Require(config.Train.Tokenizer == data.Tokenizer.Name,
            $"tokenizer = '{config.Train.Tokenizer}' but the data was tokenized with '{data.Tokenizer.Name}'");
        Distribution = distribution ?? new Distribution(new SingleProcess(), ParallelMode.Data);
        Distribution.Validate(config);
        Device = device;
        Config = config;
        Data = data;
        Model = new LanguageModel(device, config.Model, config.Train.Seed, Distribution);
        Optimizer = CreateOptimizer(Model, config.Train);
        Sampler = new BatchSampler(data.Train, config.Model.Context, config.Train.Seed);
        reducer = new GradientReducer(Distribution.Group);
        var shardNames = Model.ShardedParameters();
        replicated = Model.NamedParameters().Where(p => !shardNames.ContainsKey(p.Name)).ToArray();
        sharded = Model.NamedParameters().Where(p => shardNames.ContainsKey(p.Name)).Select(p => p.Tensor).ToArray();
        lossTotal = Scope.Unscope(Tensor.Zeros(device, 1));
        gradNorm = Scope.Unscope(Tensor.Zeros(device, 1));
        readback = Scope.Unscope(Tensor.Zeros(device, 2));
        losses = Scope.Unscope(Tensor.Zeros(device, MaxUnreadSteps));
        guard = new StepGuard(device);
        Optimizer.SkipFlag = guard.Flag;
    }

    /// <summary>The optimizer groups of <see cref="Optimizer"/> for <paramref name="model"/>, at the peak learning rates of <paramref name="t"/>.</summary>
    static CombinedOptimizer CreateOptimizer(LanguageModel model, TrainConfig t)
    {
        var tables = model.NamedParameters().Where(p => p.Tensor.RowSparse).ToList();
        var rest = model.NamedParameters().Where(p => !p.Tensor.RowSparse).ToList();
        float lr = t.SparseLearningRate ?? t.LearningRate;
        var groups = new List<(string, Optimizer)>();
        try
        {
            if (rest.Count > 0) groups.Add(("dense", new AdamW(rest, t.LearningRate, weightDecay: t.WeightDecay)));
            if (tables.Count > 0)
                groups.Add(("sparse", t.SparseOptimizer switch
                {
                    "rowwise-adagrad" => new RowWiseAdagrad(tables, lr, weightDecay: t.WeightDecay),
                    "rowwise-adamw" => new RowWiseAdamW(tables, lr, weightDecay: t.WeightDecay),
                    _ => new AdamW(tables, lr, weightDecay: t.WeightDecay),
                }));
            return new CombinedOptimizer(groups);
        }
        catch
        {
            foreach (var (_, o) in groups) o.Dispose();
            throw;
        }
    }

    /// <summary>The learning rate of step <paramref name="step"/> (1-based): linear warmup to the peak, then cosine decay to the minimum.
    /// A group with another peak (<see cref="TrainConfig.SparseLearningRate"/>) follows the same curve scaled to its peak.</summary>
    public double LearningRateAt(int step)
    {
        var t = Config.Train;
        double peak = t.LearningRate, min = peak * t.MinLearningRateFraction;
        if (step <= t.WarmupSteps) return peak * step / Math.Max(1, t.WarmupSteps);
        double progress = (step - t.WarmupSteps) / (double)Math.Max(1, t.Steps - t.WarmupSteps);
        return min + 0.5 * (peak - min) * (1 + Math.Cos(Math.PI * Math.Min(1, progress)));
    }

    /// <summary>
    /// Takes one optimizer step (and marks it on the device's profiler, when one is attached: <see cref="Device.Profile"/>). In one process
    /// nothing in the step waits for the device: the loss and gradient norm stay there, a kernel sets the device's divergence flag when
    /// either is not finite, and every optimizer kernel skips its update while the flag is set. The host learns of it at the next read:
    /// <see cref="StepResult.Loss"/>, <see cref="ReadBack"/>, <see cref="Evaluate"/>, <c>Checkpoint.Save</c>, or after
    /// <see cref="MaxUnreadSteps"/> unread steps. In a distributed run (more than one rank) every step reads the loss and the norm,
    /// since the ranks add their losses on the host, and a bad step throws here.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A step's loss or gradient was not finite (this step's in a distributed run, else one
    /// found by a read this call made): that step and every later one were not applied, see <see cref="ReadBack"/>.</exception>
    public StepResult Step()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (diverged is { } stopped) throw new TrainingDivergedException(stopped.Message, stopped.Step);
        var t = Config.Train;
        var clock = Stopwatch.StartNew();
        var group = Distribution.Group;
        long bytesBefore = group.BytesReceived;
        int step = StepCount + 1;
        double lr = LearningRateAt(step);
        Model.Train();
        // Every rank draws the whole global batch (the samplers stay in step) and trains on its share, its mean loss weighted by the
        // share's fraction of the batch, so that the gradients summed over ranks are those of the whole batch's mean loss.
        var (first, count) = Distribution.Share(t.BatchSize);
        int w = Config.Model.Context + 1;
        float share = (float)count / t.BatchSize, weight = share / t.Accumulation;
        // The micro-batches' losses add up on the device; nothing in a one-process step waits for the device (on a GPU, each read
        // would stall the launch queue).
        Ops.Fill(lossTotal, 0f);
        for (int micro = 0; micro < t.Accumulation; micro++)
        {
            int[] windows = Sampler.NextBatch(t.BatchSize);
            if (count < t.BatchSize) windows = windows[(first * w)..((first + count) * w)];
            using (Scope.Begin())
            {
                var loss = Model.Loss(windows, count);
                (weight != 1f ? Ops.Scale(loss, weight) : loss).Backward();
                Ops.AddInPlace(lossTotal, count == t.BatchSize ? loss : Ops.Scale(loss, share));
            }
        }
        reducer.AllReduce(replicated);
        double tokens = (double)t.BatchSize * t.Accumulation * Config.Model.Context;
        StepResult result;
        using (Device.Profiler?.Enter(ProfilePhase.Optimizer))
        {
            if (group.Size > 1 || sharded.Length > 0)
            {
                double meanLoss = DistributedCheck(step) / t.Accumulation;
                ApplyStep(lr);
                result = new StepResult(step, meanLoss, lr, tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds)) { BytesReceived = group.BytesReceived - bytesBefore };
            }
            else
            {
                // The norm the clipping computes (with clipping off, the same reduction without the scaling), checked on the device
                // with the loss before the optimizer, which skips the step if the guard's flag is set.
                if (t.ClipNorm > 0) GradClip.ClipGlobalNorm(Model.Parameters(), t.ClipNorm, gradNorm);
                else GradClip.GlobalNorm(Model.Parameters(), gradNorm);
                guard.Observe(lossTotal, gradNorm, step);
                losses.View.SubView((step - 1) % MaxUnreadSteps, 1).CopyFrom(lossTotal.View.SubView(0, 1));
                ApplyStep(lr);
                result = new StepResult(step, this, lr, tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds)) { BytesReceived = group.BytesReceived - bytesBefore };
                unread.Add(result);
            }
        }
        Device.Profiler?.MarkStep();
        StepCount = step;
        if (unread.Count >= MaxUnreadSteps) ReadBack();
        return result;
    }

    /// <summary>Sets each group's learning rate for a step at <paramref name="lr"/>, steps the optimizer and clears the gradients.</summary>
    void ApplyStep(double lr)
    {
        var t = Config.Train;
        foreach (var (name, g) in Optimizer.Groups)
            g.LearningRate = (float)(name == "sparse" && t.SparseLearningRate is { } peak ? lr * peak / t.LearningRate : lr);
        Optimizer.Step();
        Model.ZeroGrad();
    }


    /// <summary>Mean loss over the validation windows <paramref name="coverage"/> selects, the n-gram baselines on the same windows,
    /// and PEER expert usage, in evaluation mode without gradients. Every module is left in the mode (training or evaluation) it was in before.</summary>
    /// <param name="coverage">A spread sample of <see cref="TrainConfig.EvalWindows"/> windows, or the whole split.</param>
    /// <param name="progress">Called after each batch with the windows done and the total.</param>
    /// <exception cref="TrainingDivergedException">A step since the last read diverged (<see cref="ReadBack"/>, which this calls first).</exception>
    public EvalResult Evaluate(EvalCoverage coverage = EvalCoverage.Sample, Action<int, int>? progress = null)
    {
        ReadBack();
        int context = Config.Model.Context, batch = Config.Train.BatchSize;
        int[][] windows = coverage == EvalCoverage.Whole ? BatchSampler.Tile(Data.Validation, context)
            : BatchSampler.Windows(Data.Validation, context, Config.Train.EvalWindows, out _).Chunk(context + 1).ToArray();
        var peers = Model.PeerLayers().ToArray();
        var usage = peers.Select(p => new ExpertUsage(Device, p.Layer.Options.Experts)).ToArray();
        double lossSum = 0;
        long tokens = 0;
        using var mode = new EvalMode(Model);
        try
        {
            for (int i = 0; i < peers.Length; i++) peers[i].Layer.Usage = usage[i];
            using var noGrad = Device.Tape.NoGrad();
            for (int first = 0; first < windows.Length;)
            {
                // A batch of windows of one length (the tail window of the whole split is shorter), split between the ranks as training
                // batches are. A rank whose share is empty runs the batch's first window unscored (and uncounted in expert usage), so
                // that with expert parallelism every rank still takes part in every forward's collectives.
                int w = windows[first].Length, n = 1;
                while (n < batch && first + n < windows.Length && windows[first + n].Length == w) n++;
                var (mine, count) = Distribution.Share(n);
                bool scored = count > 0;
                int[] rows = scored ? windows[(first + mine)..(first + mine + count)].SelectMany(r => r).ToArray() : windows[first];
                if (!scored) foreach (var (_, layer) in peers) layer.Usage = null;
                using (Scope.Begin())
                {
                    float loss = Model.Loss(rows, Math.Max(1, count)).Item();
                    if (scored) lossSum += loss * count * (w - 1);
                }
                if (!scored) for (int i = 0; i < peers.Length; i++) peers[i].Layer.Usage = usage[i];
                tokens += count * (w - 1);
                first += n;
                progress?.Invoke(first, windows.Length);
            }
            var group = Distribution.Group;
            if (group.Size > 1)
            {
                var sums = new[] { lossSum, tokens };
                group.AllReduce(sums.AsSpan());
                (lossSum, tokens) = (sums[0], (long)sums[1]);
                foreach (var u in usage)
                {
                    var z = u.Accumulated.ToArray();
                    group.AllReduce(z.AsSpan());
                    u.Accumulated.View.SubView(0, z.Length).CopyFromCPU(z);
                }
            }
            var layers = peers.Select((p, i) =>
            {
                var stats = usage[i].Compute();
                return new LayerUsage(p.Name, usage[i].Accumulated.ToArray(), stats.Usage, stats.Unevenness);
            }).ToArray();
            return new EvalResult(lossSum / tokens, layers) { Windows = windows.Length, Tokens = tokens, Baselines = Data.Baselines.Score(windows) };
        }
        finally
        {
            foreach (var (_, layer) in peers) layer.Usage = null;
            foreach (var u in usage) u.Dispose();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        Optimizer.Dispose();
        guard.Dispose();
        losses.Dispose();
        Model.Dispose();
        lossTotal.Dispose();
        gradNorm.Dispose();
        readback.Dispose();
    }
}
