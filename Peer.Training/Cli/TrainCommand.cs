// `peer train`: resolves the configuration (preset or --config file, then options), prepares the run
// folder (new and empty, or an existing run with --resume), and runs the training loop with progress,
// metrics.csv, plots, periodic checkpoints, and a final sample. Ctrl+C finishes the current step, saves a
// checkpoint and exits with code 130.
using System.CommandLine;

namespace Peer.Training;

/// <summary>The options of <c>peer train</c>, resolved.</summary>
public sealed record TrainOptions
{
    /// <summary>Preset name, when given.</summary>
    public string? Preset { get; init; }
    /// <summary>Configuration file, when given.</summary>
    public string? ConfigFile { get; init; }
    /// <summary>Corpus path, when given.</summary>
    public string? Corpus { get; init; }
    /// <summary>Tokenizer, when given.</summary>
    public string? Tokenizer { get; init; }
    /// <summary>Steps, when given.</summary>
    public int? Steps { get; init; }
    /// <summary>Device, when given.</summary>
    public string? Device { get; init; }
    /// <summary>Seed, when given.</summary>
    public ulong? Seed { get; init; }
    /// <summary>Run folder, when given.</summary>
    public string? Out { get; init; }
    /// <summary>Continue the run in the folder.</summary>
    public bool Resume { get; init; }
    /// <summary>Profile the training steps and report time per op (<see cref="Device.Profile"/>).</summary>
    public bool Profile { get; init; }
}

static class TrainCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken interrupt)
    {
        var preset = new Option<string>("--preset") { Description = "Model and training preset: tiny (default; minutes on a laptop CPU), small, paper (the paper's PEER layer settings)." };
        preset.AcceptOnlyFromAmong(ModelConfig.PresetNames);
        var config = new Option<string>("--config") { Description = "A JSON run configuration ({\"model\": {...}, \"train\": {...}}) instead of a preset." };
        var corpus = new Option<string>("--corpus") { Description = "A UTF-8 text file or a folder of *.txt files (default: the built-in .NET documentation corpus)." };
        var tokenizer = new Option<string>("--tokenizer") { Description = "byte (default) or gpt2." };
        tokenizer.AcceptOnlyFromAmong(Tokenizers.Names);
        var steps = new Option<int?>("--steps") { Description = "Optimizer steps (overrides the preset; warmup is then capped at a tenth of them)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default auto)." };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of initialisation and batch sampling." };
        var outDir = new Option<string>("--out") { Description = "Run folder (default runs/<preset>-<time>; with --resume, the latest run under runs/)." };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out (or the latest run) from its checkpoint." };
        var profile = new Option<bool>("--profile")
        {
            Description = $"Profile the training steps after the first {TrainLoop.ProfileWarmup} (evaluations left out): print time, launches and share of the step per op, forward, backward and optimizer apart, and write it to profile.txt in the run folder.",
        };
        var cmd = new Command("train", "Train a language model; writes metrics.csv, loss.png, experts.png and checkpoints to the run folder.")
        {
            preset, config, corpus, tokenizer, steps, device, seed, outDir, resume, profile,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () => Run(new TrainOptions
        {
            Preset = r.GetValue(preset),
            ConfigFile = r.GetValue(config),
            Corpus = r.GetValue(corpus),
            Tokenizer = r.GetValue(tokenizer),
            Steps = r.GetValue(steps),
            Device = r.GetValue(device),
            Seed = r.GetValue(seed),
            Out = r.GetValue(outDir),
            Resume = r.GetValue(resume),
            Profile = r.GetValue(profile),
        }, output, interrupt)));
        return cmd;
    }

    /// <summary>The run configuration the options ask for (without a checkpoint).</summary>
    public static RunConfig Resolve(TrainOptions o)
    {
        if (o.Preset != null && o.ConfigFile != null) throw new ConfigException("config: pass --preset or --config, not both");
        RunConfig run;
        if (o.ConfigFile != null)
        {
            if (!File.Exists(o.ConfigFile)) throw new ConfigException($"config: {Path.GetFullPath(o.ConfigFile)} does not exist");
            run = RunConfig.FromJson(File.ReadAllText(o.ConfigFile));
        }
        else run = RunConfig.Preset(o.Preset ?? "tiny");
        var train = run.Train with
        {
            Corpus = o.Corpus != null ? Path.GetFullPath(o.Corpus) : run.Train.Corpus,
            Tokenizer = o.Tokenizer ?? run.Train.Tokenizer,
            Steps = o.Steps ?? run.Train.Steps,
            Device = o.Device ?? run.Train.Device,
            Seed = o.Seed ?? run.Train.Seed,
        };
        if (o.Steps is { } s) train = train with { WarmupSteps = Math.Min(train.WarmupSteps, Math.Max(0, s / 10)) };
        var model = run.Model;
        int vocab = Tokenizers.Create(train.Tokenizer).VocabSize;
        if (o.ConfigFile == null) model = model with { VocabSize = vocab };
        else ModelConfig.Require(model.VocabSize == vocab, $"vocab_size = {model.VocabSize} but the {train.Tokenizer} tokenizer has {vocab} ids");
        run = new RunConfig { Model = model, Train = train };
        run.Validate();
        return run;
    }

    // Everything that can refuse the run is checked before anything is written: the configuration, the checkpoint and the
    // run's files (resume) or the folder's contents (fresh), the lock, the memory the run needs, the corpus. Only then is
    // the folder changed. The lock is held until the run ends; a lock file left by a killed run does not hold it.
    static int Run(TrainOptions o, TextWriter output, CancellationToken interrupt)
    {
        string runDir;
        RunConfig config;
        bool resume = o.Resume;
        IReadOnlyList<string> leftovers = [];
        RunLock? runLock = null;
        try
        {
            if (resume)
            {
                runDir = Path.GetFullPath(o.Out ?? LatestRun() ?? throw new CheckpointException("checkpoint: no run with a checkpoint under runs/; pass --out DIR"));
                if (File.Exists(runDir)) throw new ConfigException($"--out: {runDir} is a file, not a run folder");
                runLock = RunLock.AcquireExisting(runDir);
                if (!Checkpoint.Exists(runDir)) throw NothingToResume(runDir);
                var (state, _) = Checkpoint.ReadState(runDir);
                bool respecified = o.Preset != null || o.ConfigFile != null || o.Corpus != null || o.Tokenizer != null || o.Seed != null;
                config = respecified ? Resolve(o) : state.Config with
                {
                    Train = state.Config.Train with { Steps = o.Steps ?? state.Config.Train.Steps, Device = o.Device ?? state.Config.Train.Device },
                };
                config.Validate();
                if (Checkpoint.Difference(state.Config, config) is { } diff)
                    throw new CheckpointException($"checkpoint: {runDir} was trained with another configuration ({diff})");
                if (state.Step >= config.Train.Steps)
                    throw new ConfigException($"config: the checkpoint is at step {state.Step} and steps = {config.Train.Steps}; pass --steps N with N > {state.Step} to train further");
                MetricsFile.Read(Path.Combine(runDir, "metrics.csv")); // a damaged file is refused now, not after training starts
            }
            else
            {
                config = Resolve(o);
                runDir = Path.GetFullPath(o.Out ?? Path.Combine("runs", $"{o.Preset ?? (o.ConfigFile != null ? Path.GetFileNameWithoutExtension(o.ConfigFile) : "tiny")}-{DateTime.UtcNow:yyyyMMdd-HHmmss}"));
                if (File.Exists(runDir)) throw new ConfigException($"--out: {runDir} is a file; pass a new or empty folder");
                runLock = RunLock.AcquireExisting(runDir);
                leftovers = RunFolder.LeftoversForAFreshRun(runDir);
            }

            using var device = PeerCli.OpenDevice(config.Train.Device);
            MemoryEstimate.Require(config, Corpus.BytesOnDisk(config.Train.Corpus), MemoryEstimate.AvailableBytes(device),
                device.IsCpu ? "the CPU accelerator" : device.Name, host: device.IsCpu, resume);
            var corpus = Corpus.Load(config.Train.Corpus);
            var data = Dataset.Create(corpus, Tokenizers.Create(config.Train.Tokenizer), config.Model.Context);

            runLock ??= RunLock.Acquire(runDir);
            if (!resume) leftovers = RunFolder.LeftoversForAFreshRun(runDir); // again, now that no other run can change the folder
            using var trainer = resume ? Checkpoint.Load(device, runDir, data, config) : new Trainer(device, config, data);
            RunFolder.RemoveTemporaries(runDir);
            if (leftovers.Count > 0)
            {
                RunFolder.Remove(runDir, leftovers);
                output.WriteLine($"run folder {runDir} held a run without a checkpoint; starting afresh, replacing its {string.Join(", ", leftovers)}");
            }
            if (!resume) AtomicFile.WriteAllText(Path.Combine(runDir, "config.json"), config.ToJson());
            return new TrainLoop(trainer, runDir, output, interrupt, o.Profile).Run();
        }
        finally
        {
            runLock?.Dispose();
        }
    }

    static CheckpointException NothingToResume(string runDir)
    {
        string configPath = Path.Combine(runDir, "config.json");
        return File.Exists(configPath)
            ? new CheckpointException($"checkpoint: {runDir} holds no checkpoint (its run stopped before the first one, or they were deleted), so there is nothing to resume; "
                + $"run it again without --resume, which replaces its files: {PeerCli.Command($"train --config {PeerCli.Quote(configPath)} --out {PeerCli.Quote(runDir)}")}")
            : new CheckpointException($"checkpoint: no checkpoint in {runDir}; to start a run there, run without --resume: {PeerCli.Command($"train --out {PeerCli.Quote(runDir)}")}");
    }

    static string? LatestRun()
    {
        if (!Directory.Exists("runs")) return null;
        return Directory.GetDirectories("runs").Where(Checkpoint.Exists)
            .OrderByDescending(d => Directory.GetLastWriteTimeUtc(Path.Combine(d, "checkpoints"))).FirstOrDefault();
    }
}
