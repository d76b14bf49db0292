// Checkpoints: a run folder holds checkpoints/step-NNNNNNN/ (model.safetensors, optimizer.safetensors,
// state.json with the step, the sampler's RNG state, the configuration, the data's identity and a SHA-256
// of each file) and checkpoint.json naming the latest one. A checkpoint is written to a temporary folder,
// renamed into place, and only then does checkpoint.json (replaced by an atomic rename) point at it: a
// process killed at any moment leaves the previous checkpoint intact and named.
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

/// <summary>Saves and restores a <see cref="Trainer"/>.</summary>
public static class Checkpoint
{
    /// <summary>The format tag in state.json.</summary>
    public const string FormatTag = "peer-checkpoint-1";
    const string Pointer = "checkpoint.json";

    /// <summary>True when <paramref name="runDir"/> holds a checkpoint pointer.</summary>
    public static bool Exists(string runDir) => File.Exists(Path.Combine(runDir, Pointer));

    /// <summary>
    /// Writes the trainer's state under <paramref name="runDir"/> and points checkpoint.json at it; older checkpoints are removed afterwards.
    /// In a distributed run every rank calls it together: rank 0 alone writes (tables split between ranks are gathered to it block by
    /// block, see ShardGather), and no rank returns before the checkpoint is in place, or all throw.
    /// </summary>
    /// <returns>The checkpoint's folder.</returns>
    /// <exception cref="CheckpointException">In a distributed run, rank 0 could not write (on rank 0 the original error is thrown).</exception>
    public static string Save(Trainer trainer, string runDir)
    {
        var group = trainer.Distribution.Group;
        string root = Path.Combine(runDir, "checkpoints");
        string name = $"step-{trainer.StepCount:D7}";
        string final = Path.Combine(root, name);
        var shards = trainer.Model.ShardedParameters();
        var model = trainer.Model.StateDict().Select(e => (e.Name, T: e.Tensor)).ToList();
        var optimizer = trainer.Optimizer.StateDict().ToList();
        // A split optimizer state ("<parameter>.exp_avg") is split as its parameter, when it has the parameter's shape.
        ColumnShard? ShardOf(string n, Tensor t) => shards.TryGetValue(n, out var sh) ? sh
            : n.LastIndexOf('.') is int dot and > 0 && shards.TryGetValue(n[..dot], out sh) && t.Rank == 2 && t.Shape[1] == sh.MyCount ? sh : null;
        var gather = new ShardGather(group, model.Concat(optimizer).Where(e => ShardOf(e.Name, e.T) is not null)
            .Select(e => (e.Name, e.T, ShardOf(e.Name, e.T)!)).ToList());
        IEnumerable<SafeTensorSource> Sources(List<(string Name, Tensor T)> entries) => entries.Select(e =>
        {
            int i = gather.Tables.Select(g => g.Name).ToList().IndexOf(e.Name);
            return i >= 0 ? gather.Source(i) : SafeTensors.Source(e.Name, e.T);
        });
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
            SafeTensors.Write(Path.Combine(tmp, "model.safetensors"), Sources(model));
            SafeTensors.Write(Path.Combine(tmp, "optimizer.safetensors"), Sources(optimizer));
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
            AtomicFile.WriteAllText(Path.Combine(runDir, Pointer), JsonSerializer.Serialize(new Dictionary<string, string> { ["latest"] = name }, ModelConfig.Json));
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

    /// <summary>Reads and verifies the latest checkpoint's state of <paramref name="runDir"/> (a run folder or a checkpoint folder).</summary>
    /// <exception cref="CheckpointException">Missing, damaged (hash mismatch, unreadable) or of an unknown format.</exception>
    public static (CheckpointState State, string Folder) ReadState(string runDir)
    {
        string folder = Locate(runDir);
        CheckpointState? state;
        try
        {
            state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(Path.Combine(folder, "state.json")), ModelConfig.Json);
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new CheckpointException($"checkpoint: {folder}/state.json is damaged ({e.Message.Split('\n')[0]})");
        }
        if (state is null || state.Format != FormatTag) throw new CheckpointException($"checkpoint: {folder}/state.json is not a {FormatTag} checkpoint");
        try
        {
            state.Config.Validate();
        }
        catch (ConfigException e)
        {
            throw new CheckpointException($"checkpoint: {folder} holds an invalid configuration ({e.Message})");
        }
        foreach (var file in new[] { "model.safetensors", "optimizer.safetensors" })
        {
            string path = Path.Combine(folder, file);
            if (!File.Exists(path)) throw new CheckpointException($"checkpoint: {path} is missing");
            if (!state.Files.TryGetValue(file, out var expected) || expected != Sha256(path))
                throw new CheckpointException($"checkpoint: {path} is damaged (its SHA-256 differs from the one recorded when it was written)");
        }
        return (state, folder);
    }

    static string Locate(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(Path.Combine(full, "state.json"))) return full;
        string pointer = Path.Combine(full, Pointer);
        if (!File.Exists(pointer)) throw new CheckpointException($"checkpoint: no checkpoint in {full} (no {Pointer})");
        string? latest;
        try
        {
            latest = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(pointer))?.GetValueOrDefault("latest");
        }
        catch (JsonException)
        {
            latest = null;
        }
        if (string.IsNullOrEmpty(latest) || latest.Contains('/') || latest.Contains('\\') || latest.Contains(".."))
            throw new CheckpointException($"checkpoint: {pointer} is damaged");
        string folder = Path.Combine(full, "checkpoints", latest);
        if (!File.Exists(Path.Combine(folder, "state.json"))) throw new CheckpointException($"checkpoint: {folder} named by {pointer} is missing");
        return folder;
    }

    /// <summary>Restores a trainer from the checkpoint in <paramref name="runDir"/>, on <paramref name="data"/> (which must be the data it was trained on).</summary>
    /// <param name="device">Where to build the model.</param>
    /// <param name="runDir">A run folder or a checkpoint folder.</param>
    /// <param name="data">The data, tokenized as the checkpoint's configuration says.</param>
    /// <param name="config">The configuration to continue with: it may change only steps, evaluation and checkpoint cadence and device; null takes the checkpoint's.</param>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged, or the data or configuration differs from the checkpoint's.</exception>
    public static Trainer Load(Device device, string runDir, Dataset data, RunConfig? config = null) => Load(device, runDir, data, config, null);

    /// <summary>Restores one rank's trainer of a distributed run (see <see cref="Trainer(Device, RunConfig, Dataset, Distribution?)"/>;
    /// null: one process) from a checkpoint written by any number of ranks: each rank reads the files (the run folder must be visible to
    /// every rank) and takes its columns of the tables it holds split.</summary>
    /// <exception cref="CheckpointException">As <see cref="Load(Device, string, Dataset, RunConfig?)"/>.</exception>
    public static Trainer Load(Device device, string runDir, Dataset data, RunConfig? config, Distribution? distribution)
    {
        var (state, folder) = ReadState(runDir);
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
            var shards = trainer.Model.ShardedParameters();
            ColumnShard? ShardOf(string n) => shards.TryGetValue(n, out var sh) ? sh
                : n.LastIndexOf('.') is int dot and > 0 && shards.TryGetValue(n[..dot], out sh) ? sh : null;
            using (var model = SafeTensors.Read(Path.Combine(folder, "model.safetensors")))
                foreach (var (name, tensor) in trainer.Model.StateDict()) CopyInto(model, name, tensor, folder, ShardOf(name));
            using (var opt = SafeTensors.Read(Path.Combine(folder, "optimizer.safetensors")))
            using (Scope.Begin())
                trainer.Optimizer.LoadStateDict(opt.Names.Select(n =>
                {
                    var sh = ShardOf(n);
                    var info = opt.GetInfo(n);
                    if (sh is null || info.Shape.Length != 2 || info.Shape[1] != sh.Dim) return (n, opt.ToTensor(device, n));
                    return (n, Tensor.FromArray(device, opt.GetFloatColumns(n, sh.MyStart, sh.MyCount), (int)info.Shape[0], sh.MyCount));
                }).ToList());
            trainer.Sampler.State = state.SamplerState;
            trainer.StepCount = state.Step;
            return trainer;
        }
        catch (Exception e) when (e is not CheckpointException)
        {
            trainer.Dispose();
            throw new CheckpointException($"checkpoint: {folder} does not fit the model ({e.Message.Split('\n')[0]})");
        }
        catch
        {
            trainer.Dispose();
            throw;
        }
    }

    /// <summary>Loads only the model of a checkpoint (for evaluation and generation), with its configuration.</summary>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged.</exception>
    public static (LanguageModel Model, CheckpointState State) LoadModel(Device device, string runDir)
    {
        var (state, folder) = ReadState(runDir);
        var model = new LanguageModel(device, state.Config.Model, state.Config.Train.Seed);
        try
        {
            using var reader = SafeTensors.Read(Path.Combine(folder, "model.safetensors"));
            foreach (var (name, tensor) in model.StateDict()) CopyInto(reader, name, tensor, folder);
            return (model, state);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    static void CopyInto(SafeTensorReader reader, string name, Tensor tensor, string folder, ColumnShard? shard = null)
    {
        if (!reader.Contains(name)) throw new CheckpointException($"checkpoint: {folder} has no tensor '{name}'");
        var info = reader.GetInfo(name);
        int[] whole = shard is null ? tensor.Shape : [tensor.Shape[0], shard.Dim];
        if (!info.Shape.Select(s => (int)s).SequenceEqual(whole))
            throw new CheckpointException($"checkpoint: '{name}' has shape [{string.Join(", ", info.Shape)}] in {folder}; the model expects {Tensor.FormatShape(whole)}");
        if (shard is not null) tensor.View.SubView(0, tensor.Length).CopyFromCPU(reader.GetFloatColumns(name, shard.MyStart, shard.MyCount));
        else if (tensor.DType == DType.F32) tensor.View.SubView(0, tensor.Length).CopyFromCPU(reader.GetFloats(name));
        else tensor.IntView.SubView(0, tensor.Length).CopyFromCPU(reader.GetInts(name));
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

    static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
    }
}
