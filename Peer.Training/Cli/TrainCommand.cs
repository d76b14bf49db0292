// `peer train`: resolves the configuration (preset or --config file, then options), prepares the run
// folder (new and empty, or an existing run with --resume), and runs the training loop with progress,
// metrics.csv, plots, periodic checkpoints, and a final sample. Ctrl+C finishes the current step, saves a
// checkpoint and exits with code 130.
using System.CommandLine;
using Peer.Distributed;

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
    /// <summary>Optimizer of the row-sparse tables, when given.</summary>
    public string? SparseOptimizer { get; init; }
    /// <summary>Peak learning rate of the row-sparse tables, when given.</summary>
    public float? SparseLearningRate { get; init; }
    /// <summary>Run folder, when given.</summary>
    public string? Out { get; init; }
    /// <summary>Continue the run in the folder.</summary>
    public bool Resume { get; init; }
    /// <summary>Profile the training steps and report time per op (<see cref="Device.Profile"/>).</summary>
    public bool Profile { get; init; }
    /// <summary>Distributed training: <c>data</c> or <c>experts</c> (see <see cref="ParallelMode"/>), when given.</summary>
    public string? Parallel { get; init; }
    /// <summary>Seconds a rank waits for the others in a collective before the run stops, when given.</summary>
    public double? CommTimeout { get; init; }
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
        var sparseOptimizer = new Option<string>("--sparse-optimizer")
        {
            Description = "Optimizer of the PEER/PKM expert and value tables and sub-keys (train.sparse_optimizer): adamw (default; lazy AdamW, " +
                "2 floats of state per element), rowwise-adamw (second moment per row: d + 1 floats per row of d), rowwise-adagrad (1 float per row). " +
                "Every other parameter uses AdamW.",
        };
        sparseOptimizer.AcceptOnlyFromAmong(TrainConfig.SparseOptimizers);
        var sparseLr = new Option<float?>("--sparse-lr") { Description = "Peak learning rate of those tables (train.sparse_learning_rate; default: the learning rate), on the same schedule." };
        var outDir = new Option<string>("--out") { Description = "Run folder (default runs/<preset>-<time>; with --resume, the latest run under runs/)." };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out (or the latest run) from its checkpoint." };
        var profile = new Option<bool>("--profile")
        {
            Description = $"Profile the training steps after the first {TrainLoop.ProfileWarmup} (evaluations left out): print time, launches and share of the step per op, forward, backward and optimizer apart, and write it to profile.txt in the run folder.",
        };
        var parallel = new Option<string>("--parallel") { Description = "Train on the ranks an MPI launcher started (mpiexec -np R peer train ...): data (each rank takes its share of every batch) or experts (also splits the PEER expert tables by columns). See docs/distributed.md." };
        parallel.AcceptOnlyFromAmong(Distribution.ModeNames);
        var commTimeout = new Option<double?>("--comm-timeout") { Description = "With --parallel: seconds a rank waits for the others before the run stops with an error (default 300; longer than a checkpoint write)." };
        var cmd = new Command("train", "Train a language model; writes metrics.csv, loss.png, experts.png and checkpoints to the run folder.")
        {
            preset, config, corpus, tokenizer, steps, device, seed, sparseOptimizer, sparseLr, outDir, resume, profile, parallel, commTimeout,
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
            SparseOptimizer = r.GetValue(sparseOptimizer),
            SparseLearningRate = r.GetValue(sparseLr),
            Out = r.GetValue(outDir),
            Resume = r.GetValue(resume),
            Profile = r.GetValue(profile),
            Parallel = r.GetValue(parallel),
            CommTimeout = r.GetValue(commTimeout),
        }, output, error, interrupt)));
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
            SparseOptimizer = o.SparseOptimizer ?? run.Train.SparseOptimizer,
            SparseLearningRate = o.SparseLearningRate ?? run.Train.SparseLearningRate,
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

    static int Run(TrainOptions o, TextWriter output, TextWriter error, CancellationToken interrupt)
    {
        bool launched = MpiCommunicator.Launched(out int world) && world > 1;
        if (o.Parallel is null)
        {
            if (launched)
                throw new ConfigException($"launch: this process is one of {world} ranks an MPI launcher started, but --parallel is not given; pass --parallel data or --parallel experts");
            if (o.CommTimeout is not null) throw new ConfigException("comm-timeout: applies to distributed runs; pass --parallel data or experts with it");
            return Train(o, output, interrupt, null);
        }
        var mode = Distribution.ParseMode(o.Parallel);
        if (o.CommTimeout is { } seconds && !(seconds > 0 && double.IsFinite(seconds)))
            throw new ConfigException($"comm-timeout: {seconds} s; expected a positive number of seconds");
        Communicator group;
        try
        {
            group = launched ? MpiCommunicator.Open() : new SingleProcess();
        }
        catch (CommunicationException e)
        {
            throw new ConfigException(e.Message);
        }
        group.Timeout = TimeSpan.FromSeconds(o.CommTimeout ?? 300);
        if (group.Size == 1)
            using (group) return Train(o, output, interrupt, new Distribution(group, mode));
        int code;
        try
        {
            code = Train(o, group.Rank == 0 ? output : TextWriter.Null, interrupt, new Distribution(group, mode));
        }
        catch (Exception e)
        {
            // One rank's error ends every rank: the others may be waiting for it in a collective.
            string message = PeerCli.OneLine(e.Message);
            error.WriteLine($"error: {(message.StartsWith(group.Who, StringComparison.Ordinal) ? "" : group.Who + ": ")}{message}");
            error.Flush();
            // The launcher forwards each rank's output through a pipe; aborting at once can tear that down before the line is read.
            Thread.Sleep(TimeSpan.FromSeconds(1));
            group.Abort(PeerCli.ErrorExit);
            return PeerCli.ErrorExit;
        }
        group.Dispose();
        return code;
    }

    static int Train(TrainOptions o, TextWriter output, CancellationToken interrupt, Distribution? distribution)
    {
        var group = distribution?.Group;
        string runDir;
        RunConfig config;
        bool resume = o.Resume;
        if (resume)
        {
            runDir = o.Out ?? LatestRun() ?? throw new CheckpointException("checkpoint: no run with a checkpoint under runs/; pass --out DIR");
            var (state, _) = Checkpoint.ReadState(runDir);
            bool respecified = o.Preset != null || o.ConfigFile != null || o.Corpus != null || o.Tokenizer != null || o.Seed != null;
            config = respecified ? Resolve(o) : state.Config with
            {
                Train = state.Config.Train with
                {
                    Steps = o.Steps ?? state.Config.Train.Steps, Device = o.Device ?? state.Config.Train.Device,
                    // Kept only to be compared below: a run continues with the optimizer (and state) it was saved with.
                    SparseOptimizer = o.SparseOptimizer ?? state.Config.Train.SparseOptimizer,
                    SparseLearningRate = o.SparseLearningRate ?? state.Config.Train.SparseLearningRate,
                },
            };
            if (Checkpoint.Difference(state.Config, config) is { } diff)
                throw new CheckpointException($"checkpoint: {Path.GetFullPath(runDir)} was trained with another configuration ({diff})");
            if (state.Step >= config.Train.Steps)
                throw new ConfigException($"config: the checkpoint is at step {state.Step} and steps = {config.Train.Steps}; pass --steps N with N > {state.Step} to train further");
        }
        else
        {
            config = Resolve(o);
            runDir = o.Out ?? Path.Combine("runs", $"{o.Preset ?? (o.ConfigFile != null ? Path.GetFileNameWithoutExtension(o.ConfigFile) : "tiny")}-{DateTime.UtcNow:yyyyMMdd-HHmmss}");
            if (o.Out is null && group is { Size: > 1 }) runDir = RootsChoice(group, runDir); // the ranks' clocks may straddle a second
            if (Directory.Exists(runDir) && Directory.EnumerateFileSystemEntries(runDir).Any())
                throw new ConfigException(Checkpoint.Exists(runDir)
                    ? $"run folder {Path.GetFullPath(runDir)} already holds a checkpoint; pass --resume to continue it, or another --out"
                    : $"run folder {Path.GetFullPath(runDir)} is not empty; pass an empty or new --out folder");
        }
        runDir = Path.GetFullPath(runDir);

        var corpus = Corpus.Load(config.Train.Corpus);
        var data = Dataset.Create(corpus, Tokenizers.Create(config.Train.Tokenizer), config.Model.Context);
        if (distribution is not null)
        {
            distribution.Validate(config);
            Distribution.RequireSameLaunch(distribution.Group, string.Join("\n",
                $"ranks {distribution.Group.Size}", $"parallel {distribution.Mode}", $"run folder {runDir}", $"resume {resume}",
                $"data {data.CorpusName} {Checkpoint.DataHash(data)}", config.ToJson()));
        }
        using var device = PeerCli.OpenDevice(config.Train.Device, group);
        if (group is null || group.Rank == 0)
        {
            Directory.CreateDirectory(runDir);
            if (!resume) AtomicFile.WriteAllText(Path.Combine(runDir, "config.json"), config.ToJson());
        }
        using var trainer = resume ? Checkpoint.Load(device, runDir, data, config, distribution) : new Trainer(device, config, data, distribution);
        return new TrainLoop(trainer, runDir, output, interrupt, o.Profile).Run();
    }

    // Rank 0's choice of a string, on every rank.
    static string RootsChoice(Communicator group, string mine)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(mine);
        var length = new[] { bytes.Length };
        group.Broadcast(length.AsSpan());
        var root = group.Rank == 0 ? bytes : new byte[length[0]];
        group.Broadcast(root.AsSpan());
        return System.Text.Encoding.UTF8.GetString(root);
    }

    static string? LatestRun()
    {
        if (!Directory.Exists("runs")) return null;
        return Directory.GetDirectories("runs").Where(Checkpoint.Exists)
            .OrderByDescending(d => File.GetLastWriteTimeUtc(Path.Combine(d, "checkpoint.json"))).FirstOrDefault();
    }
}
