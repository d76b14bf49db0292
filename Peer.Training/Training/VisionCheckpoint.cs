// Checkpoints of image-classifier runs, laid out as the language model's (Checkpoint.cs): a run folder holds
// checkpoints/step-NNNNNNN/ (model.safetensors, optimizer.safetensors, state.json with the step, the sampler's position,
// the configuration, the data's identity and a SHA-256 of each tensor file) and checkpoint.json naming the latest. A
// checkpoint is written to a temporary folder and renamed into place before checkpoint.json (replaced atomically) points at
// it, so a process killed at any moment leaves the previous checkpoint intact. The format tag tells the two kinds apart.
using System.Security.Cryptography;
using System.Text.Json;
using ILGPU.Runtime;
using Peer.IO;

namespace Peer.Training;

/// <summary>The contents of an image-classifier checkpoint's state.json.</summary>
public sealed record VisionCheckpointState
{
    /// <summary>Format tag.</summary>
    public string Format { get; init; } = VisionCheckpoint.FormatTag;
    /// <summary>Optimizer steps taken.</summary>
    public int Step { get; init; }
    /// <summary>Training images drawn so far (the sampler's state).</summary>
    public long SamplerState { get; init; }
    /// <summary>The run's configuration.</summary>
    public VisionRunConfig Config { get; init; } = new();
    /// <summary>The data folder.</summary>
    public string Data { get; init; } = "";
    /// <summary>FNV-1a hash of every image and label, hex.</summary>
    public string DataHash { get; init; } = "";
    /// <summary>SHA-256 (hex) of each tensor file.</summary>
    public Dictionary<string, string> Files { get; init; } = new();
}

/// <summary>Saves and restores a <see cref="VisionTrainer"/>.</summary>
public static class VisionCheckpoint
{
    /// <summary>The format tag in state.json.</summary>
    public const string FormatTag = "peer-vision-checkpoint-1";
    const string Pointer = "checkpoint.json";
    static readonly string[] TensorFiles = ["model.safetensors", "optimizer.safetensors"];

    /// <summary>Whether the checkpoint at <paramref name="path"/> (a run folder or a checkpoint folder) is an image classifier's.</summary>
    /// <exception cref="CheckpointException">No checkpoint there, or its state.json is unreadable.</exception>
    public static bool IsVision(string path)
    {
        string folder = Locate(path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "state.json")));
            return doc.RootElement.TryGetProperty("format", out var f) && f.GetString() == FormatTag;
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new CheckpointException($"checkpoint: {folder}/state.json is damaged ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>Writes the trainer's state under <paramref name="runDir"/> and points checkpoint.json at it; older checkpoints are removed afterwards.</summary>
    /// <returns>The checkpoint's folder.</returns>
    public static string Save(VisionTrainer trainer, string runDir)
    {
        string root = Path.Combine(runDir, "checkpoints");
        Directory.CreateDirectory(root);
        string name = $"step-{trainer.StepCount:D7}";
        string final = Path.Combine(root, name);
        string tmp = Path.Combine(root, $".{name}.{Environment.ProcessId}.tmp");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        SafeTensors.Write(Path.Combine(tmp, TensorFiles[0]), trainer.Model.StateDict());
        SafeTensors.Write(Path.Combine(tmp, TensorFiles[1]), trainer.Optimizer.StateDict());
        var state = new VisionCheckpointState
        {
            Step = trainer.StepCount,
            SamplerState = trainer.Sampler.State,
            Config = trainer.Config,
            Data = trainer.Data.Name,
            DataHash = trainer.Data.Hash(),
            Files = TensorFiles.ToDictionary(f => f, f => Sha256(Path.Combine(tmp, f))),
        };
        File.WriteAllText(Path.Combine(tmp, "state.json"), JsonSerializer.Serialize(state, ModelConfig.Json));
        if (Directory.Exists(final)) Directory.Delete(final, true); // only when re-saving the same step
        Directory.Move(tmp, final);
        AtomicFile.WriteAllText(Path.Combine(runDir, Pointer), JsonSerializer.Serialize(new Dictionary<string, string> { ["latest"] = name }, ModelConfig.Json));
        foreach (var old in Directory.GetDirectories(root))
            if (Path.GetFileName(old) != name) Directory.Delete(old, true);
        return final;
    }

    /// <summary>Reads and verifies the latest checkpoint's state of <paramref name="path"/> (a run folder or a checkpoint folder).</summary>
    /// <exception cref="CheckpointException">Missing, damaged (hash mismatch, unreadable), of another format, or with an invalid configuration.</exception>
    public static (VisionCheckpointState State, string Folder) ReadState(string path)
    {
        string folder = Locate(path);
        VisionCheckpointState? state;
        try
        {
            state = JsonSerializer.Deserialize<VisionCheckpointState>(File.ReadAllText(Path.Combine(folder, "state.json")), ModelConfig.Json);
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new CheckpointException($"checkpoint: {folder}/state.json is not an image classifier's ({e.Message.Split('\n')[0]})");
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
        foreach (var file in TensorFiles)
        {
            string p = Path.Combine(folder, file);
            if (!File.Exists(p)) throw new CheckpointException($"checkpoint: {p} is missing");
            if (!state.Files.TryGetValue(file, out var expected) || expected != Sha256(p))
                throw new CheckpointException($"checkpoint: {p} is damaged (its SHA-256 differs from the one recorded when it was written)");
        }
        return (state, folder);
    }

    /// <summary>
    /// Restores a trainer from the checkpoint at <paramref name="path"/> on <paramref name="data"/> (the data it was trained on),
    /// continuing with <paramref name="config"/> (which may change only steps, evaluation and checkpoint cadence and device; null:
    /// the checkpoint's).
    /// </summary>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged, or the data or configuration differs from it.</exception>
    public static VisionTrainer Load(Device device, string path, ImageDataset data, VisionRunConfig? config = null)
    {
        var (state, folder) = ReadState(path);
        if (config != null && Difference(state.Config, config) is { } diff)
            throw new CheckpointException($"checkpoint: {folder} was trained with another configuration ({diff})");
        if (state.DataHash != data.Hash())
            throw new CheckpointException($"checkpoint: {folder} was trained on other data ({state.Data}); this is {data.Name}");
        var trainer = new VisionTrainer(device, config ?? state.Config, data);
        try
        {
            using (var model = SafeTensors.Read(Path.Combine(folder, TensorFiles[0])))
                foreach (var (name, tensor) in trainer.Model.StateDict()) CopyInto(model, name, tensor, folder);
            using (var opt = SafeTensors.Read(Path.Combine(folder, TensorFiles[1])))
            using (Scope.Begin())
                trainer.Optimizer.LoadStateDict(opt.Names.Select(n => (n, opt.ToTensor(device, n))).ToList());
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

    /// <summary>Loads only the model of a checkpoint, with its state.</summary>
    /// <exception cref="CheckpointException">The checkpoint is missing or damaged.</exception>
    public static (VisionModel Model, VisionCheckpointState State) LoadModel(Device device, string path)
    {
        var (state, folder) = ReadState(path);
        var model = new VisionModel(device, state.Config.Model, state.Config.Train.Seed);
        try
        {
            using var reader = SafeTensors.Read(Path.Combine(folder, TensorFiles[0]));
            foreach (var (name, tensor) in model.StateDict()) CopyInto(reader, name, tensor, folder);
            return (model, state);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The first setting that differs between two configurations in what a resumed run must keep, or null.</summary>
    public static string? Difference(VisionRunConfig saved, VisionRunConfig wanted)
    {
        static VisionRunConfig Normalise(VisionRunConfig c) => c with
        {
            Model = c.Model with { Blocks = c.Model.BlockKinds() },
            Train = c.Train with { Steps = 0, EvalEvery = 0, CheckpointEvery = 0, Device = "", Data = null },
        };
        string a = JsonSerializer.Serialize(Normalise(saved), ModelConfig.Json), b = JsonSerializer.Serialize(Normalise(wanted), ModelConfig.Json);
        if (a == b) return null;
        var la = a.Split('\n');
        var lb = b.Split('\n');
        for (int i = 0; i < Math.Min(la.Length, lb.Length); i++)
            if (la[i] != lb[i]) return $"{la[i].Trim().TrimEnd(',')} in the checkpoint vs {lb[i].Trim().TrimEnd(',')}";
        return "the settings differ";
    }

    static void CopyInto(SafeTensorReader reader, string name, Tensor tensor, string folder)
    {
        if (!reader.Contains(name)) throw new CheckpointException($"checkpoint: {folder} has no tensor '{name}'");
        var info = reader.GetInfo(name);
        if (!info.Shape.Select(s => (int)s).SequenceEqual(tensor.Shape))
            throw new CheckpointException($"checkpoint: '{name}' has shape [{string.Join(", ", info.Shape)}] in {folder}; the model expects {Tensor.FormatShape(tensor.Shape)}");
        if (tensor.DType == DType.F32) tensor.View.SubView(0, tensor.Length).CopyFromCPU(reader.GetFloats(name));
        else tensor.IntView.SubView(0, tensor.Length).CopyFromCPU(reader.GetInts(name));
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

    static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
    }
}
