// Runs a sweep's variants one after another in an output folder. Each variant trains in variants/<name>/
// (config.json, checkpoints every checkpoint_every steps and on interruption); when it finishes, its result is
// written atomically to variants/<name>/result.json and its checkpoints are removed. A rerun skips variants
// with a result, resumes a variant with a checkpoint from it (Checkpoint.Load), and starts the others afresh.
// After every variant the reports (results.csv, results.md, PNG plots) are rewritten from all results so far.
using System.Diagnostics;
using System.Text.Json;

namespace Peer.Training;

/// <summary>The outcome of one trained variant (the row of results.csv).</summary>
public sealed record SweepResult
{
    /// <summary>Variant name.</summary>
    public string Name { get; init; } = "";
    /// <summary>Experiment.</summary>
    public string Experiment { get; init; } = "";
    /// <summary>Feed-forward kind of the middle block.</summary>
    public string Kind { get; init; } = "";
    /// <summary>Training FLOP budget.</summary>
    public double Budget { get; init; }
    /// <summary>Seed.</summary>
    public ulong Seed { get; init; }
    /// <summary>Model width.</summary>
    public int DModel { get; init; }
    /// <summary>Experts N of the PEER or PKM layer (MoE: E); 0 for dense.</summary>
    public int Experts { get; init; }
    /// <summary>Retrieval heads h (PEER, PKM); 0 otherwise.</summary>
    public int Heads { get; init; }
    /// <summary>Kept per head k (PEER, PKM); 0 otherwise.</summary>
    public int TopK { get; init; }
    /// <summary>Query normalisation (PEER, PKM); empty otherwise.</summary>
    public string QueryNorm { get; init; } = "";
    /// <summary>Forward multiply-adds per token A.</summary>
    public long MacsPerToken { get; init; }
    /// <summary>All parameters.</summary>
    public long Parameters { get; init; }
    /// <summary>Optimizer steps trained.</summary>
    public int Steps { get; init; }
    /// <summary>Training tokens seen (steps x tokens per step).</summary>
    public long Tokens { get; init; }
    /// <summary>Training FLOPs spent: tokens x 6 A.</summary>
    public double Flops { get; init; }
    /// <summary>Training loss of the last step this process ran; null when it ran none.</summary>
    public double? TrainLoss { get; init; }
    /// <summary>Validation loss, nats per token.</summary>
    public double ValLoss { get; init; }
    /// <summary>Validation perplexity exp(ValLoss).</summary>
    public double ValPerplexity { get; init; }
    /// <summary>Fraction of PEER experts used on the validation windows; null without PEER.</summary>
    public double? Usage { get; init; }
    /// <summary>PEER unevenness on the validation windows; null without PEER.</summary>
    public double? Unevenness { get; init; }
    /// <summary>Wall-clock seconds of training and evaluation (of the last process that ran it).</summary>
    public double Seconds { get; init; }
    /// <summary>The variant's run configuration (checked on rerun).</summary>
    public RunConfig Config { get; init; } = new();
}

/// <summary>Trains a sweep's variants with resume, and writes its reports.</summary>
public sealed class SweepRunner(Device device, string outDir, TextWriter log, CancellationToken interrupt = default)
{
    readonly Dictionary<(string?, string, int), Dataset> data = new();

    /// <summary>Folder of a variant.</summary>
    public string VariantDir(SweepVariant v) => Path.Combine(outDir, "variants", v.Name);

    /// <summary>Runs every variant not yet finished; returns all results in variant order, or null when interrupted (the running variant saved a checkpoint).</summary>
    /// <exception cref="ConfigException">A variant's folder holds a result or checkpoint of another configuration.</exception>
    public IReadOnlyList<SweepResult>? Run(IReadOnlyList<SweepVariant> variants)
    {
        ArgumentNullException.ThrowIfNull(variants);
        Directory.CreateDirectory(outDir);
        var results = new List<SweepResult>();
        for (int i = 0; i < variants.Count; i++)
        {
            var v = variants[i];
            var done = ReadResult(v);
            if (done != null)
            {
                log.WriteLine($"[{i + 1}/{variants.Count}] {v.Name}: done earlier, val ppl {done.ValPerplexity:F3} (skipped)");
                results.Add(done);
                continue;
            }
            if (interrupt.IsCancellationRequested) return null;
            var r = Train(v, $"[{i + 1}/{variants.Count}]");
            if (r is null) return null;
            results.Add(r);
            SweepReport.Write(outDir, results);
        }
        SweepReport.Write(outDir, results);
        return results;
    }

    SweepResult? ReadResult(SweepVariant v)
    {
        string path = Path.Combine(VariantDir(v), "result.json");
        if (!File.Exists(path)) return null;
        var r = StrictJson.Read<SweepResult>(File.ReadAllText(path), problem => new ConfigException($"sweep: {path} is damaged ({problem}); delete it to retrain the variant"));
        string? diff = Checkpoint.Difference(r.Config, v.Config)
            ?? (r.Config.Train.Steps != v.Config.Train.Steps ? $"steps: {r.Config.Train.Steps} in the result vs {v.Config.Train.Steps}" : null);
        if (diff != null) throw new ConfigException($"sweep: {path} was trained with another configuration ({diff}); pass another --out");
        return r;
    }

    Dataset DataFor(RunConfig c)
    {
        var key = (c.Train.Corpus, c.Train.Tokenizer, c.Model.Context);
        if (!data.TryGetValue(key, out var d))
            data[key] = d = Dataset.Create(Corpus.Load(c.Train.Corpus), Tokenizers.Create(c.Train.Tokenizer), c.Model.Context);
        return d;
    }

    SweepResult? Train(SweepVariant v, string tag)
    {
        string dir = VariantDir(v);
        var config = v.Config;
        var dataset = DataFor(config);
        bool resume = Checkpoint.Exists(dir);
        Directory.CreateDirectory(dir);
        RunFolder.RemoveTemporaries(dir); // the sweep's lock covers its variants' folders
        if (!resume) AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), config.ToJson());
        var clock = Stopwatch.StartNew();
        using var trainer = resume ? Checkpoint.Load(device, dir, dataset, config) : new Trainer(device, config, dataset);
        int total = config.Train.Steps;
        log.WriteLine($"{tag} {v.Name}: {(resume ? $"resuming at step {trainer.StepCount}" : "starting")}, {total} steps of {v.TokensPerStep} tokens, "
            + $"A = {v.Cost.ForwardMacsPerToken:N0} multiply-adds/token, {v.Cost.TotalParameters:N0} parameters");
        StepResult? last = null; // its loss is read at the end (and at the log lines): a step itself does not wait for the device
        int every = Math.Max(1, total / 5);
        while (trainer.StepCount < total)
        {
            if (interrupt.IsCancellationRequested)
            {
                Checkpoint.Save(trainer, dir);
                log.WriteLine($"{tag} {v.Name}: interrupted at step {trainer.StepCount}; checkpoint saved");
                return null;
            }
            var s = trainer.Step();
            last = s;
            if (s.Step % every == 0) log.WriteLine($"{tag} {v.Name}: step {s.Step}/{total} loss {s.Loss:F4} ({s.TokensPerSecond:N0} tok/s)");
            if (config.Train.CheckpointEvery > 0 && s.Step % config.Train.CheckpointEvery == 0 && s.Step < total) Checkpoint.Save(trainer, dir);
        }
        double lastLoss = last?.Loss ?? double.NaN;
        var eval = trainer.Evaluate();
        var m = config.Model;
        var keys = v.Kind == "pkm" ? m.Pkm : m.Peer;
        bool retrieval = v.Kind is "peer" or "pkm";
        var result = new SweepResult
        {
            Name = v.Name, Experiment = v.Experiment, Kind = v.Kind, Budget = v.Budget, Seed = config.Train.Seed, DModel = m.DModel,
            Experts = retrieval ? keys.Experts : v.Kind.StartsWith("moe", StringComparison.Ordinal) ? m.Moe.Experts : 0,
            Heads = retrieval ? keys.Heads : 0, TopK = retrieval ? keys.TopK : 0, QueryNorm = retrieval ? keys.QueryNorm : "",
            MacsPerToken = v.Cost.ForwardMacsPerToken, Parameters = trainer.Model.ParameterCount, Steps = total,
            Tokens = (long)total * v.TokensPerStep, Flops = v.SpentFlops, TrainLoss = double.IsNaN(lastLoss) ? null : lastLoss, ValLoss = eval.Loss,
            ValPerplexity = eval.Perplexity, Usage = eval.Usage, Unevenness = eval.Unevenness,
            Seconds = clock.Elapsed.TotalSeconds, Config = config,
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "result.json"), JsonSerializer.Serialize(result, ModelConfig.Json));
        string checkpoints = Path.Combine(dir, "checkpoints");
        if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, true);
        File.Delete(Path.Combine(dir, "checkpoint.json"));
        log.WriteLine($"{tag} {v.Name}: val loss {eval.Loss:F4} ppl {eval.Perplexity:F3}"
            + (eval.Usage is { } u ? $" usage {u:P1} unevenness {eval.Unevenness:F3}" : "") + $" ({clock.Elapsed.TotalSeconds:F0} s)");
        return result;
    }
}
