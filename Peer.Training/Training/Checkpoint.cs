// Checkpoints: a run folder holds checkpoints/step-NNNNNNN/ (model.safetensors, optimizer.safetensors,
// state.json with the step, the sampler's RNG state, the configuration, the data's identity and a SHA-256
// of each file) and checkpoint.json naming the latest one. A checkpoint is written to a temporary folder,
// renamed into place, and only then does checkpoint.json (replaced by an atomic rename) point at it: a
// process killed at any moment leaves the previous checkpoint intact and named. Only finite values are saved.
// Reading checks the whole state file, the hashes, and (CheckpointRules) every value and tensor before use.
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using ILGPU.Runtime;
using Peer.Distributed;
using Peer.IO;

namespace Peer.Training;

/// <summary>A checkpoint that cannot be used (missing, damaged, or from another configuration); its message is one line.</summary>
public sealed class CheckpointException(string message) : Exception(message);

/// <summary>The contents of state.json.</summary>
public sealed record CheckpointState
{
    /// <summary>Format tag.</summary>
    public string Format { get; init; } = Checkpoint.FormatTag;
    /// <summary>Optimizer steps taken.</summary>
    public int Step { get; init; }
    /// <summary>The training sampler's generator state.</summary>
    public ulong SamplerState { get; init; }
    /// <summary>The run's configuration.</summary>
    public RunConfig Config { get; init; } = new();
    /// <summary>The corpus name.</summary>
    public string Corpus { get; init; } = "";
    /// <summary>Training tokens in the split.</summary>
    public int TrainTokens { get; init; }
    /// <summary>FNV-1a hash of the training and validation tokens, hex.</summary>
    public string DataHash { get; init; } = "";
    /// <summary>SHA-256 (hex) of each tensor file.</summary>
    public Dictionary<string, string> Files { get; init; } = new();
}

/// <summary>The contents of checkpoint.json.</summary>
public sealed record CheckpointPointer
{
    /// <summary>The latest checkpoint's folder name under checkpoints/ (step-NNNNNNN).</summary>
    public string Latest { get; init; } = "";
}

/// <summary>Saves and restores a <see cref="Trainer"/>.</summary>
public static class Checkpoint
{
    /// <summary>The format tag in state.json.</summary>
    public const string FormatTag = "peer-checkpoint-1";
    const string Pointer = "checkpoint.json";

    /// <summary>True when <paramref name="runDir"/> holds a checkpoint: a pointer, or a complete checkpoint folder (a save killed
    /// between renaming its folder into place and writing the pointer leaves the latter).
    /// A pointer naming a folder that is gone (deleted by hand) counts as no checkpoint, so that the folder can start afresh.</summary>
    public static bool Exists(string runDir) => (File.Exists(Path.Combine(runDir, Pointer)) && !Dangles(runDir)) || LatestFolder(runDir) != null;

    // Whether checkpoint.json is well formed but names a checkpoint folder without a state file. A damaged pointer does
    // not dangle: it is reported as damaged, not replaced.
    internal static bool Dangles(string runDir)
    {
        string pointer = Path.Combine(runDir, Pointer);
        try
        {
            string latest = StrictJson.Read<CheckpointPointer>(File.ReadAllText(pointer), problem => new CheckpointException(problem)).Latest;
            return RunFolder.IsStepFolder(latest) && !File.Exists(Path.Combine(runDir, "checkpoints", latest, "state.json"));
        }
        catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// Writes the trainer's state under <paramref name="runDir"/> and points checkpoint.json at it; older checkpoints are removed afterwards.
    /// In a distributed run every rank calls it together: rank 0 alone writes (tables split between ranks are gathered to it block by
    /// block, see ShardGather), and no rank returns before the checkpoint is in place, or all throw.
    /// </summary>
    /// <returns>The checkpoint's folder.</returns>
    /// <exception cref="CheckpointException">In a distributed run, rank 0 could not write (on rank 0 the original error is thrown).</exception>
    /// <exception cref="TrainingDivergedException">A step since the trainer's last read had a non-finite loss or gradient
    /// (<see cref="Trainer.ReadBack"/>, which this calls first), or a parameter or optimizer state holds NaN or infinity: nothing was written.</exception>
    public static string Save(Trainer trainer, string runDir)
    {
        trainer.ReadBack();
        var group = trainer.Distribution.Group;
        string root = Path.Combine(runDir, "checkpoints");
        string name = $"step-{trainer.StepCount:D7}";
        string final = Path.Combine(root, name);
        var model = trainer.Model.StateDict().Select(e => (e.Name, T: e.Tensor)).ToList();
        var optimizer = trainer.Optimizer.StateDict().ToList();
        var shardOf = ShardsOf(trainer.Model);
        var gather = new ShardGather(group, model.Concat(optimizer).Where(e => shardOf(e.Name, e.T) is not null)
            .Select(e => (e.Name, e.T, shardOf(e.Name, e.T)!)).ToList());
        var gathered = gather.Tables.Select(g => g.Name).ToList();
        IEnumerable<SafeTensorSource> Sources(List<(string Name, Tensor T)> entries) => entries.Select(e =>
            gathered.IndexOf(e.Name) is int i and >= 0 ? gather.Source(i) : SafeTensors.Source(e.Name, e.T, requireFinite: true));
        if (group.Rank != 0)
        {
            gather.Drain();
            Agree(group, null);
            return final;
        }
        Exception? failure = null;
        try
        {
            Directory.CreateDirectory(root);
            string tmp = Path.Combine(root, $".{name}.{Environment.ProcessId}.tmp");
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            Directory.CreateDirectory(tmp);
            try
            {
                WriteTensors(trainer, Path.Combine(tmp, "model.safetensors"), Sources(model));
                WriteTensors(trainer, Path.Combine(tmp, "optimizer.safetensors"), Sources(optimizer));
                var state = new CheckpointState
                {
                    Step = trainer.StepCount,
                    SamplerState = trainer.Sampler.State,
                    Config = trainer.Config,
                    Corpus = trainer.Data.CorpusName,
                    TrainTokens = trainer.Data.Train.Length,
                    DataHash = DataHash(trainer.Data),
                    Files = new() { ["model.safetensors"] = Sha256(Path.Combine(tmp, "model.safetensors")), ["optimizer.safetensors"] = Sha256(Path.Combine(tmp, "optimizer.safetensors")) },
                };
                File.WriteAllText(Path.Combine(tmp, "state.json"), JsonSerializer.Serialize(state, ModelConfig.Json));
                if (Directory.Exists(final)) Directory.Delete(final, true); // only when re-saving the same step
                Directory.Move(tmp, final);
            }
            catch (Exception e)
            {
                try { Directory.Delete(tmp, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                if (e is IOException or UnauthorizedAccessException)
                    throw new IOException($"cannot write a checkpoint in {root}: {e.Message.Replace(tmp, final)}", e);
                throw;
            }
            AtomicFile.WriteAllText(Path.Combine(runDir, Pointer), JsonSerializer.Serialize(new CheckpointPointer { Latest = name }, ModelConfig.Json));
            foreach (var old in Directory.GetDirectories(root))
                if (Path.GetFileName(old) != name) Directory.Delete(old, true);
        }
        catch (Exception e) when (group.Size > 1 && e is not CommunicationException)
        {
            failure = e;
            gather.Drain();
        }
        Agree(group, failure);
        return final;
    }

    // Every rank learns whether rank 0 wrote the checkpoint; a failure is thrown on every rank (rank 0 rethrows its own).
    static void Agree(Communicator group, Exception? failure)
    {
        if (group.Size == 1) return;
        var flag = new[] { failure is null ? 0 : 1 };
        group.AllReduce(flag.AsSpan(), ReduceOp.Max);
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        if (flag[0] != 0) throw new CheckpointException("checkpoint: rank 0 could not write the checkpoint (its message says why); the previous checkpoint is intact");
    }

    // A table a rank holds split by columns: a sharded parameter, or its optimizer state ("<parameter>.exp_avg") when that has the
    // slice's shape (a step count, say, is whole on every rank).
    static CheckpointRules.Shards ShardsOf(LanguageModel model)
    {
        var shards = model.ShardedParameters();
        return (n, t) => shards.TryGetValue(n, out var sh) ? sh
            : n.LastIndexOf('.') is int dot and > 0 && shards.TryGetValue(n[..dot], out sh) && t.Rank == 2 && t.Shape[1] == sh.MyCount ? sh : null;
    }

    // A checkpoint holds finite numbers only: the writer checks each chunk as it copies it to the file (the columns gathered from
    // other ranks excepted: those ranks' steps were checked through the loss and gradient norm every rank shares).
    static void WriteTensors(Trainer trainer, string path, IEnumerable<SafeTensorSource> tensors)
    {
        try
        {
            // The step in each file's metadata ties the file to its checkpoint (a file copied from another step is refused).
            SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["format"] = FormatTag, ["step"] = trainer.StepCount.ToString(CultureInfo.InvariantCulture) });
        }
        catch (NonFiniteTensorException e)
        {
            throw new TrainingDivergedException($"the state after step {trainer.StepCount} holds {e.Value} (in '{e.Tensor}')", trainer.StepCount);
        }
    }

    /// <summary>Reads and verifies the latest checkpoint's state of <paramref name="runDir"/> (a run folder or a checkpoint folder): the
    /// whole state file, its values' domains, the hashes of the tensor files, and its agreement with the run's config.json.</summary>
    /// <param name="runDir">A run folder or a checkpoint folder.</param>
    /// <param name="withOptimizer">Whether the optimizer's file is needed (training) or not (evaluation, generation).</param>
    /// <exception cref="CheckpointException">Missing, damaged (hash mismatch, unreadable, values out of range), of an unknown format, or not of this run.</exception>
    public static (CheckpointState State, string Folder) ReadState(string runDir, bool withOptimizer = true)
    {
        string folder = Locate(runDir);
        string statePath = Path.Combine(folder, "state.json");
        var state = StrictJson.Read<CheckpointState>(ReadText(statePath), problem => new CheckpointException($"checkpoint: {statePath}: {problem}"));
        if (state.Format != FormatTag) throw new CheckpointException($"checkpoint: {statePath} is not a {FormatTag} checkpoint (format = '{state.Format}')");
        CheckpointRules.CheckState(state, folder, statePath);
        foreach (var file in withOptimizer ? TensorFiles : TensorFiles[..1])
        {
            string path = Path.Combine(folder, file);
            if (!File.Exists(path)) throw new CheckpointException($"checkpoint: {path} is missing");
            if (!state.Files.TryGetValue(file, out var expected) || expected != Sha256(path))
                throw new CheckpointException($"checkpoint: {path} is damaged (its SHA-256 differs from the one recorded when it was written)");
        }
        CheckpointRules.CheckRun(state, folder);
        return (state, folder);
    }

    static readonly string[] TensorFiles = ["model.safetensors", "optimizer.safetensors"];

    static string ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"checkpoint: cannot read {path} ({e.Message})");
        }
    }

    static string Locate(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(Path.Combine(full, "state.json"))) return full;
        string pointer = Path.Combine(full, Pointer);
        if (!File.Exists(pointer))
            return LatestFolder(full) ?? throw new CheckpointException($"checkpoint: no checkpoint in {full} (no {Pointer})");
        string latest = StrictJson.Read<CheckpointPointer>(ReadText(pointer), problem => new CheckpointException($"checkpoint: {pointer} is damaged: {problem}")).Latest;
        if (!RunFolder.IsStepFolder(latest))
            throw new CheckpointException($"checkpoint: {pointer} is damaged: latest = '{latest}': expected a checkpoint folder's name (step-NNNNNNN)");
        string folder = Path.Combine(full, "checkpoints", latest);
        if (!File.Exists(Path.Combine(folder, "state.json"))) throw new CheckpointException($"checkpoint: {Path.Combine(folder, "state.json")}, named by {pointer}, is missing");
        return folder;
    }

    // The newest complete checkpoint folder (one with its state.json), for a run whose pointer was never written.
    static string? LatestFolder(string runDir)
    {
        string root = Path.Combine(runDir, "checkpoints");
        if (!Directory.Exists(root)) return null;
        return Directory.GetDirectories(root).Where(d => RunFolder.IsStepFolder(Path.GetFileName(d)) && File.Exists(Path.Combine(d, "state.json")))
            .OrderByDescending(d => Path.GetFileName(d), StringComparer.Ordinal).FirstOrDefault();
    }

    /// <summary>Restores a trainer from the checkpoint in <paramref name="runDir"/>, on <paramref name="data"/> (which must be the data it was trained on).
    /// Every tensor is checked (names, shapes, types, finite values, the optimizer's step counts against the checkpoint's step) before the trainer is returned.</summary>
    /// <param name="device">Where to build the model.</param>
    /// <param name="runDir">A run folder or a checkpoint folder.</param>
    /// <param name="data">The data, tokenized as the checkpoint's configuration says.</param>
    /// <param name="config">The configuration to continue with: it may change only steps, evaluation and checkpoint cadence and device; null takes the checkpoint's.</param>
    /// <param name="withOptimizer">Whether to restore the optimizer's state (to train on; evaluation does not need it, nor its file).</param>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged, or the data or configuration differs from the checkpoint's.</exception>
    /// <param name="distribution">For one rank of a distributed run (see <see cref="Trainer(Device, RunConfig, Dataset, Distribution?)"/>), which reads
    /// the files (the run folder must be visible to every rank) and takes its columns of the tables it holds split; null: one process. A
    /// checkpoint written by any number of ranks loads with any other.</param>
    public static Trainer Load(Device device, string runDir, Dataset data, RunConfig? config = null, Distribution? distribution = null, bool withOptimizer = true)
    {
        var (state, folder) = ReadState(runDir, withOptimizer);
        if (config != null)
        {
            string? diff = Difference(state.Config, config);
            if (diff != null) throw new CheckpointException($"checkpoint: {folder} was trained with another configuration ({diff})");
        }
        if (state.Corpus != data.CorpusName || state.TrainTokens != data.Train.Length || state.DataHash != DataHash(data))
            throw new CheckpointException($"checkpoint: {folder} was trained on other data (corpus {state.Corpus}, {state.TrainTokens} training tokens); this is {data.CorpusName} with {data.Train.Length}");
        var trainer = new Trainer(device, config ?? state.Config, data, distribution);
        try
        {
            var shardOf = ShardsOf(trainer.Model);
            CheckpointRules.ReadModel(Path.Combine(folder, "model.safetensors"), trainer.Model.StateDict(), state.Step, shardOf);
            if (withOptimizer)
            {
                using (Scope.Begin()) // frees the device copies the optimizer copies from
                    trainer.Optimizer.LoadStateDict(CheckpointRules.ReadOptimizer(Path.Combine(folder, "optimizer.safetensors"), trainer.Optimizer.StateDict(), state.Step, device, shardOf));
            }
            trainer.Sampler.State = state.SamplerState;
            trainer.StepCount = state.Step;
            return trainer;
        }
        catch
        {
            trainer.Dispose();
            throw;
        }
    }

    /// <summary>Loads only the model of a checkpoint (for evaluation and generation), with its configuration; the optimizer's file is not needed.</summary>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged.</exception>
    public static (LanguageModel Model, CheckpointState State) LoadModel(Device device, string runDir)
    {
        var (state, folder) = ReadState(runDir, withOptimizer: false);
        var model = new LanguageModel(device, state.Config.Model, state.Config.Train.Seed);
        try
        {
            CheckpointRules.ReadModel(Path.Combine(folder, "model.safetensors"), model.StateDict(), state.Step);
            return (model, state);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The first setting that differs between two configurations in what a resumed run must keep, or null.</summary>
    public static string? Difference(RunConfig saved, RunConfig wanted)
    {
        var a = Normalise(saved);
        var b = Normalise(wanted);
        var ja = JsonSerializer.SerializeToElement(a, ModelConfig.Json);
        var jb = JsonSerializer.SerializeToElement(b, ModelConfig.Json);
        return FirstDifference(ja, jb, "");
    }

    static RunConfig Normalise(RunConfig c) => c with
    {
        Model = c.Model with { Blocks = c.Model.BlockKinds() },
        Train = c.Train with { Steps = 0, EvalEvery = 0, CheckpointEvery = 0, Device = "", EvalWindows = 0 },
    };

    static string? FirstDifference(JsonElement a, JsonElement b, string path)
    {
        if (a.ValueKind == JsonValueKind.Object && b.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in a.EnumerateObject())
            {
                string sub = path.Length == 0 ? p.Name : path + "." + p.Name;
                if (!b.TryGetProperty(p.Name, out var q)) return $"{sub}: {p.Value.GetRawText()} vs absent";
                if (FirstDifference(p.Value, q, sub) is { } d) return d;
            }
            foreach (var q in b.EnumerateObject())
                if (!a.TryGetProperty(q.Name, out _)) return $"{(path.Length == 0 ? q.Name : path + "." + q.Name)}: absent vs {q.Value.GetRawText()}";
            return null;
        }
        string ra = a.GetRawText(), rb = b.GetRawText();
        return ra == rb ? null : $"{path}: {ra} in the checkpoint vs {rb}";
    }

    /// <summary>FNV-1a over the training then validation tokens.</summary>
    public static string DataHash(Dataset data)
    {
        ulong h = 14695981039346656037UL;
        foreach (var part in new[] { data.Train, data.Validation })
            foreach (int t in part) { h ^= (uint)t; h *= 1099511628211UL; }
        return h.ToString("x16");
    }

    internal static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
    }
}
