// How a run trains: data, schedule, optimizer settings, evaluation and checkpoint cadence, seed and device.
// Together with ModelConfig it is saved in every checkpoint; a resumed run must agree with it.
using System.Text.Json;

namespace Peer.Training;

/// <summary>Settings of a training run.</summary>
public sealed record TrainConfig
{
    /// <summary>Corpus path, or null for the built-in corpus.</summary>
    public string? Corpus { get; init; }
    /// <summary>Tokenizer name: <c>byte</c> or <c>gpt2</c>.</summary>
    public string Tokenizer { get; init; } = "byte";
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 600;
    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches whose gradients are summed (and averaged) per step.</summary>
    public int Accumulation { get; init; } = 1;
    /// <summary>Peak learning rate.</summary>
    public float LearningRate { get; init; } = 5e-3f;
    /// <summary>Final learning rate as a fraction of the peak.</summary>
    public float MinLearningRateFraction { get; init; } = 0.1f;
    /// <summary>Linear warmup steps.</summary>
    public int WarmupSteps { get; init; } = 30;
    /// <summary>Decoupled weight decay, of every parameter group (multiplied by the group's learning rate).</summary>
    public float WeightDecay { get; init; } = 0.01f;
    /// <summary>
    /// Optimizer of the row-sparse tables (the expert tables and sub-keys of PEER layers, the value tables and sub-keys of PKM
    /// layers); every other parameter is stepped by AdamW. <c>adamw</c> (the default): AdamW's lazy step over the retrieved rows,
    /// two floats of state per element; <c>rowwise-adamw</c>: AdamW with the second moment per row (Peer.Optim.RowWiseAdamW),
    /// d + 1 floats per row of d; <c>rowwise-adagrad</c>: row-wise AdaGrad (Peer.Optim.RowWiseAdagrad), one float per row.
    /// </summary>
    public string SparseOptimizer { get; init; } = "adamw";
    /// <summary>Peak learning rate of the row-sparse tables, on the same warmup and cosine schedule as <see cref="LearningRate"/>;
    /// null takes <see cref="LearningRate"/>. Row-wise AdaGrad wants a larger one than AdamW (its steps shrink as G accumulates).</summary>
    public float? SparseLearningRate { get; init; }

    /// <summary>Values accepted by <see cref="SparseOptimizer"/>.</summary>
    public static readonly string[] SparseOptimizers = ["adamw", "rowwise-adamw", "rowwise-adagrad"];
    /// <summary>Global gradient-norm clip; 0 disables it (the norm is then still computed, one read of the gradients, so that a
    /// non-finite gradient stops the run before it reaches the parameters).</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>Evaluate every this many steps (and at the end); 0 only at the end.</summary>
    public int EvalEvery { get; init; } = 100;
    /// <summary>Validation windows per interim evaluation (the final evaluation of <c>peer train</c> and <c>peer eval</c> cover the whole split).</summary>
    public int EvalWindows { get; init; } = 32;
    /// <summary>Write a checkpoint every this many steps (and at the end); 0 only at the end.</summary>
    public int CheckpointEvery { get; init; } = 200;
    /// <summary>Seed of initialisation and batch sampling.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Device name: cpu, cuda, opencl or auto.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Checks ranges.</summary>
    /// <exception cref="ConfigException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        ModelConfig.Require(Peer.Training.Tokenizers.Names.Contains(Tokenizer), $"train.tokenizer = '{Tokenizer}': expected one of {string.Join(", ", Peer.Training.Tokenizers.Names)}");
        ModelConfig.Require(Steps >= 1, $"train.steps = {Steps}: expected at least 1");
        ModelConfig.Require(BatchSize >= 1, $"train.batch_size = {BatchSize}: expected at least 1");
        ModelConfig.Require(Accumulation >= 1, $"train.accumulation = {Accumulation}: expected at least 1");
        ModelConfig.Require(LearningRate > 0 && float.IsFinite(LearningRate), $"train.learning_rate = {LearningRate}: expected a positive number");
        ModelConfig.Require(MinLearningRateFraction is >= 0 and <= 1, $"train.min_learning_rate_fraction = {MinLearningRateFraction}: expected 0..1");
        ModelConfig.Require(WarmupSteps >= 0 && WarmupSteps <= Steps, $"train.warmup_steps = {WarmupSteps}: expected 0..train.steps ({Steps})");
        ModelConfig.Require(WeightDecay >= 0, $"train.weight_decay = {WeightDecay}: expected 0 or more");
        ModelConfig.Require(SparseOptimizers.Contains(SparseOptimizer), $"train.sparse_optimizer = '{SparseOptimizer}': expected one of {string.Join(", ", SparseOptimizers)}");
        ModelConfig.Require(SparseLearningRate is null || (SparseLearningRate > 0 && float.IsFinite(SparseLearningRate.Value)),
            $"train.sparse_learning_rate = {SparseLearningRate}: expected a positive number, or null for learning_rate");
        ModelConfig.Require(ClipNorm >= 0, $"train.clip_norm = {ClipNorm}: expected 0 (off) or a positive norm");
        ModelConfig.Require(EvalEvery >= 0, $"train.eval_every = {EvalEvery}: expected 0 or more");
        ModelConfig.Require(EvalWindows >= 1, $"train.eval_windows = {EvalWindows}: expected at least 1");
        ModelConfig.Require(CheckpointEvery >= 0, $"train.checkpoint_every = {CheckpointEvery}: expected 0 or more");
        ModelConfig.Require(Device is "cpu" or "cuda" or "opencl" or "auto", $"train.device = '{Device}': expected one of cpu, cuda, opencl, auto");
    }

    /// <summary>The training settings of a preset (see <see cref="ModelConfig.Preset"/>).</summary>
    public static TrainConfig Preset(string name) => name switch
    {
        "tiny" => new TrainConfig { Steps = 600, BatchSize = 8, LearningRate = 1e-3f, WarmupSteps = 30 },
        "small" => new TrainConfig { Steps = 2000, BatchSize = 16, LearningRate = 1e-3f, WarmupSteps = 100, EvalEvery = 250, CheckpointEvery = 500 },
        "paper" => new TrainConfig { Steps = 20000, BatchSize = 32, Accumulation = 4, LearningRate = 6e-4f, WarmupSteps = 1000, EvalEvery = 500, CheckpointEvery = 1000, Tokenizer = "gpt2" },
        _ => throw new ConfigException($"config: preset '{name}' is unknown; expected one of {string.Join(", ", ModelConfig.PresetNames)}"),
    };

    /// <summary>The JSON form.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ModelConfig.Json);

    /// <summary>Reads the JSON form and validates it.</summary>
    /// <exception cref="ConfigException">Malformed JSON or invalid settings.</exception>
    public static TrainConfig FromJson(string json) => ConfigJson.Parse<TrainConfig>(json, "train config", c => c.Validate());
}

/// <summary>A run's whole configuration: the file <c>--config</c> reads and checkpoints store.</summary>
public sealed record RunConfig
{
    /// <summary>The model.</summary>
    public ModelConfig Model { get; init; } = new();
    /// <summary>The training run.</summary>
    public TrainConfig Train { get; init; } = new();

    /// <summary>Validates both parts and their agreement.</summary>
    /// <exception cref="ConfigException">Invalid settings.</exception>
    public void Validate()
    {
        Model.Validate();
        Train.Validate();
    }

    /// <summary>The JSON form.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ModelConfig.Json);

    /// <summary>Reads the JSON form and validates it.</summary>
    /// <exception cref="ConfigException">Malformed JSON or invalid settings.</exception>
    public static RunConfig FromJson(string json) => ConfigJson.Parse<RunConfig>(json, "run config", c => c.Validate());

    /// <summary>A preset's model and training settings.</summary>
    public static RunConfig Preset(string name) => new() { Model = ModelConfig.Preset(name), Train = TrainConfig.Preset(name) };
}
