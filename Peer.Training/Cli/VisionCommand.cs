// `peer vision train` and `peer vision eval`: the image classifier's counterparts of `peer train` and `peer eval`, with the
// same conventions (a preset or --config, options that override it, a new run folder or --resume, periodic checkpoints,
// Ctrl+C saving a checkpoint, one-line errors). Evaluation can switch experts off (--disable-experts, or a class's most
// specific experts with --disable-class) and report the change per class.
using System.CommandLine;

namespace Peer.Training;

/// <summary>The options of <c>peer vision train</c>, resolved.</summary>
public sealed record VisionTrainOptions
{
    /// <summary>Preset name, when given.</summary>
    public string? Preset { get; init; }
    /// <summary>Configuration file, when given.</summary>
    public string? ConfigFile { get; init; }
    /// <summary>Data folder, when given.</summary>
    public string? Data { get; init; }
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
}

static class VisionCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken interrupt)
    {
        var cmd = new Command("vision", "Image classification (Fashion-MNIST) with a small vision transformer whose feed-forward layers are PEER or a baseline.");
        cmd.Subcommands.Add(TrainCommandOf(output, error, interrupt));
        cmd.Subcommands.Add(EvalCommandOf(output, error));
        return cmd;
    }

    static Option<string> DataOption() => new("--data")
    {
        Description = $"Folder of the four Fashion-MNIST IDX files, gzipped or not (default {ImageDataset.DebianFolder}, from `apt-get install {ImageDataset.DebianPackage}`).",
    };

    static Command TrainCommandOf(TextWriter output, TextWriter error, CancellationToken interrupt)
    {
        var preset = new Option<string>("--preset") { Description = "peer (default: PEER feed-forward layers) or dense (dense layers of the same forward FLOPs)." };
        preset.AcceptOnlyFromAmong(VisionRunConfig.PresetNames);
        var config = new Option<string>("--config") { Description = "A JSON run configuration ({\"model\": {...}, \"train\": {...}}) instead of a preset." };
        var data = DataOption();
        var steps = new Option<int?>("--steps") { Description = "Optimizer steps (overrides the preset; warmup is then capped at a tenth of them)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default auto)." };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of initialisation and batch order." };
        var outDir = new Option<string>("--out") { Description = "Run folder (default runs/vision-<preset>-<time>)." };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its checkpoint." };
        var cmd = new Command("train", "Train an image classifier; writes metrics.csv, accuracy.png, experts.png and checkpoints to the run folder and prints the test accuracy.")
        {
            preset, config, data, steps, device, seed, outDir, resume,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () => Train(new VisionTrainOptions
        {
            Preset = r.GetValue(preset),
            ConfigFile = r.GetValue(config),
            Data = r.GetValue(data),
            Steps = r.GetValue(steps),
            Device = r.GetValue(device),
            Seed = r.GetValue(seed),
            Out = r.GetValue(outDir),
            Resume = r.GetValue(resume),
        }, output, interrupt)));
        return cmd;
    }

    /// <summary>The run configuration the options ask for (without a checkpoint).</summary>
    public static VisionRunConfig Resolve(VisionTrainOptions o)
    {
        if (o.Preset != null && o.ConfigFile != null) throw new ConfigException("config: pass --preset or --config, not both");
        VisionRunConfig run;
        if (o.ConfigFile != null)
        {
            if (!File.Exists(o.ConfigFile)) throw new ConfigException($"config: {Path.GetFullPath(o.ConfigFile)} does not exist");
            run = VisionRunConfig.FromJson(File.ReadAllText(o.ConfigFile));
        }
        else run = VisionRunConfig.Preset(o.Preset ?? "peer");
        var train = run.Train with
        {
            Data = o.Data != null ? Path.GetFullPath(o.Data) : run.Train.Data,
            Steps = o.Steps ?? run.Train.Steps,
            Device = o.Device ?? run.Train.Device,
            Seed = o.Seed ?? run.Train.Seed,
        };
        if (o.Steps is { } s) train = train with { WarmupSteps = Math.Min(train.WarmupSteps, Math.Max(0, s / 10)) };
        run = run with { Train = train };
        run.Validate();
        return run;
    }

    static int Train(VisionTrainOptions o, TextWriter output, CancellationToken interrupt)
    {
        string runDir;
        VisionRunConfig config;
        if (o.Resume)
        {
            runDir = o.Out ?? throw new ConfigException("config: --resume needs --out DIR, the run folder to continue");
            var (state, _) = VisionCheckpoint.ReadState(runDir);
            bool respecified = o.Preset != null || o.ConfigFile != null || o.Seed != null;
            config = respecified ? Resolve(o) : state.Config with
            {
                Train = state.Config.Train with
                {
                    Steps = o.Steps ?? state.Config.Train.Steps,
                    Device = o.Device ?? state.Config.Train.Device,
                    Data = o.Data != null ? Path.GetFullPath(o.Data) : state.Config.Train.Data,
                },
            };
            if (VisionCheckpoint.Difference(state.Config, config) is { } diff)
                throw new CheckpointException($"checkpoint: {Path.GetFullPath(runDir)} was trained with another configuration ({diff})");
            if (state.Step >= config.Train.Steps)
                throw new ConfigException($"config: the checkpoint is at step {state.Step} and steps = {config.Train.Steps}; pass --steps N with N > {state.Step} to train further");
        }
        else
        {
            config = Resolve(o);
            string name = o.Preset ?? (o.ConfigFile != null ? Path.GetFileNameWithoutExtension(o.ConfigFile) : "peer");
            runDir = o.Out ?? Path.Combine("runs", $"vision-{name}-{DateTime.UtcNow:yyyyMMdd-HHmmss}");
            if (Directory.Exists(runDir) && Directory.EnumerateFileSystemEntries(runDir).Any())
                throw new ConfigException(File.Exists(Path.Combine(runDir, "checkpoint.json"))
                    ? $"run folder {Path.GetFullPath(runDir)} already holds a checkpoint; pass --resume to continue it, or another --out"
                    : $"run folder {Path.GetFullPath(runDir)} is not empty; pass an empty or new --out folder");
        }
        runDir = Path.GetFullPath(runDir);
        var data = ImageDataset.Load(config.Train.Data, config.Train.Validation);
        using var device = PeerCli.OpenDevice(config.Train.Device);
        Directory.CreateDirectory(runDir);
        if (!o.Resume) AtomicFile.WriteAllText(Path.Combine(runDir, "config.json"), config.ToJson());
        using var trainer = o.Resume ? VisionCheckpoint.Load(device, runDir, data, config) : new VisionTrainer(device, config, data);
        return new VisionTrainLoop(trainer, runDir, output, interrupt).Run();
    }

    static Command EvalCommandOf(TextWriter output, TextWriter error)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A run folder (or a checkpoint folder inside it).", Required = true };
        var data = DataOption();
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default: the run's)." };
        var split = new Option<string>("--split") { Description = "test (default) or validation.", DefaultValueFactory = _ => "test" };
        split.AcceptOnlyFromAmong("test", "validation");
        var disable = new Option<string[]>("--disable-experts")
        {
            Description = "Switch experts off and report the change per class: IDS (every PEER layer) or LAYER:IDS, e.g. blocks.1.ffw:12,57 (repeatable).",
            AllowMultipleArgumentsPerToken = false,
        };
        var disableClass = new Option<string>("--disable-class")
        {
            Description = "Switch off a class's most specific experts (CLASS or CLASS:M, M per PEER layer, default 16; CLASS a label number or name), chosen on the validation split.",
        };
        var flip = new Option<string>("--flip")
        {
            Description = "on: score each image by the mean logits of it and its mirror image; off: the images alone (default: the run's eval_flip).",
        };
        flip.AcceptOnlyFromAmong("on", "off");
        var cmd = new Command("eval", "Evaluate an image classifier's checkpoint: loss, accuracy per class, PEER expert usage; optionally with experts switched off.")
        {
            checkpoint, data, device, split, disable, disableClass, flip,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () => VisionEval.Run(r.GetValue(checkpoint)!, r.GetValue(data), r.GetValue(device), r.GetValue(split)!,
            r.GetValue(disable) ?? [], r.GetValue(disableClass), output, r.GetValue(flip) is { } f ? f == "on" : null)));
        return cmd;
    }
}
