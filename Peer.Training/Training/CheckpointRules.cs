// What a checkpoint must satisfy before a trainer or model is built from it, beyond its files' hashes: the state's
// values in their domains, the state agreeing with its folder's name and with the run's config.json (a checkpoint
// copied in from another run is refused), and every tensor of the model and optimizer files present, of the model's
// shape and type, finite, with the optimizer's moments and step counts in range and its step agreeing with the
// state's. All of it is read and checked before anything is kept; nothing on disk is modified.
using System.Text.RegularExpressions;
using ILGPU.Runtime;
using Peer.Distributed;
using Peer.IO;

namespace Peer.Training;

static partial class CheckpointRules
{
    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Hex();

    [GeneratedRegex("^[0-9a-f]{16}$")]
    private static partial Regex Fnv64Hex();

    // Used by every step (the input embedding, and the output head when tied), so its AdamW step count is the run's.
    const string EveryStepParameter = "tok_emb.weight";

    public static void CheckState(CheckpointState state, string folder, string statePath)
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new CheckpointException($"checkpoint: {statePath}: {problem}");
        }
        Require(state.Step >= 0, $"step = {state.Step}: expected 0 or more");
        string name = Path.GetFileName(folder);
        if (RunFolder.IsStepFolder(name))
            Require(int.Parse(name[5..]) == state.Step, $"step = {state.Step} but the folder is {name}: the state file belongs to another checkpoint");
        Require(state.TrainTokens >= 1, $"train_tokens = {state.TrainTokens}: expected a positive count");
        Require(Fnv64Hex().IsMatch(state.DataHash), $"data_hash = '{state.DataHash}': expected 16 hexadecimal digits");
        foreach (var (file, hash) in state.Files)
        {
            Require(file is "model.safetensors" or "optimizer.safetensors", $"files.{file}: expected only model.safetensors and optimizer.safetensors");
            Require(Sha256Hex().IsMatch(hash), $"files.{file} = '{hash}': expected a SHA-256 in 64 lowercase hexadecimal digits");
        }
        try
        {
            state.Config.Validate();
        }
        catch (ConfigException e)
        {
            throw new CheckpointException($"checkpoint: {folder} holds an invalid configuration ({e.Message})");
        }
    }

    // A checkpoint folder inside a run (run/checkpoints/step-N) must agree with the run's config.json, when it has one.
    public static void CheckRun(CheckpointState state, string folder)
    {
        var parent = Directory.GetParent(folder);
        if (parent is null || parent.Name != "checkpoints" || parent.Parent is null) return;
        string runDir = parent.Parent.FullName;
        string path = Path.Combine(runDir, "config.json");
        if (!File.Exists(path)) return;
        RunConfig run;
        try
        {
            run = StrictJson.Read<RunConfig>(File.ReadAllText(path), problem => new CheckpointException($"checkpoint: {path}: {problem}"));
            run.Validate();
        }
        catch (ConfigException e)
        {
            throw new CheckpointException($"checkpoint: {path} is invalid ({e.Message})");
        }
        catch (IOException e)
        {
            throw new CheckpointException($"checkpoint: cannot read {path} ({e.Message})");
        }
        if (Checkpoint.Difference(state.Config, run) is { } diff)
            throw new CheckpointException($"checkpoint: {folder} does not agree with {path} ({diff} of config.json); "
                + "a checkpoint copied from another run cannot continue this one: copy the whole run folder instead");
    }

    static SafeTensorReader Open(string path)
    {
        try
        {
            return SafeTensors.Read(path);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointException($"checkpoint: {PeerCli.ForPeople(e)}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"checkpoint: cannot read {path} ({e.Message})");
        }
    }

    static CheckpointException Bad(string path, string problem) => new($"checkpoint: {path}: {problem}");

    // The file's names must be exactly the expected ones; each tensor of the expected shape and type.
    static void CheckNames(SafeTensorReader reader, IReadOnlyList<(string Name, Tensor Tensor)> expected, string path, int step, Shards? shardOf)
    {
        // Files written before the step was recorded have no such metadata; those that have it must be of this checkpoint.
        if (reader.Metadata.TryGetValue("step", out var written) && written != step.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw Bad(path, $"was written at step {written} but the checkpoint is at step {step}: the file belongs to another checkpoint");
        var names = expected.Select(e => e.Name).ToHashSet();
        foreach (var name in reader.Names)
            if (!names.Contains(name)) throw Bad(path, $"holds a tensor '{name}' that the model does not have");
        foreach (var (name, tensor) in expected)
        {
            if (!reader.Contains(name)) throw Bad(path, $"has no tensor '{name}'");
            var info = reader.GetInfo(name);
            // A table this rank holds split by columns is whole in the file: [N, d] for a slice [N, d/R].
            int[] whole = shardOf?.Invoke(name, tensor) is { } shard ? [tensor.Shape[0], shard.Dim] : tensor.Shape;
            if (!info.Shape.SequenceEqual(whole.Select(s => (long)s)))
                throw Bad(path, $"'{name}' has shape [{string.Join(", ", info.Shape)}]; the model expects {Tensor.FormatShape(whole)}");
            var want = tensor.DType == DType.F32 ? SafeDType.F32 : SafeDType.I32;
            if (info.DType != want) throw Bad(path, $"'{name}' is {info.DType}; expected {want}");
        }
    }

    static float[] Floats(SafeTensorReader reader, string name, string path, bool nonNegative, ColumnShard? shard)
    {
        var values = shard is null ? reader.GetFloats(name) : reader.GetFloatColumns(name, shard.MyStart, shard.MyCount);
        int bad = SafeTensors.FirstNonFinite(values);
        if (bad >= 0) throw Bad(path, $"'{name}' holds {SafeTensors.Describe(values[bad])} at index {bad}; a checkpoint holds finite numbers only");
        if (nonNegative)
            for (int i = 0; i < values.Length; i++)
                if (values[i] < 0) throw Bad(path, $"'{name}' holds {values[i]} at index {i}; expected a variance, 0 or more");
        return values;
    }

    /// <summary>The column split of a tensor that a rank of a distributed run holds as a slice of a whole table, or null.</summary>
    public delegate ColumnShard? Shards(string name, Tensor tensor);

    /// <summary>Reads every tensor of a model file into <paramref name="model"/>'s state (a freshly built model), checking each first,
    /// and that the file was written at <paramref name="step"/>; a table <paramref name="shardOf"/> names is read as this rank's columns.</summary>
    public static void ReadModel(string path, IEnumerable<(string Name, Tensor Tensor)> model, int step, Shards? shardOf = null)
    {
        var expected = model.ToList();
        using var reader = Open(path);
        CheckNames(reader, expected, path, step, shardOf);
        foreach (var (name, tensor) in expected)
        {
            if (tensor.Length == 0) continue;
            if (tensor.DType == DType.F32) tensor.View.SubView(0, tensor.Length).CopyFromCPU(Floats(reader, name, path, name.EndsWith("running_var", StringComparison.Ordinal), shardOf?.Invoke(name, tensor)));
            else tensor.IntView.SubView(0, tensor.Length).CopyFromCPU(reader.GetInts(name));
        }
    }

    /// <summary>Reads and checks every tensor of an optimizer file against the optimizer's own state (names, shapes) and the
    /// checkpoint's step; returns device copies (made in the caller's scope) for <see cref="Optim.Optimizer.LoadStateDict"/>.</summary>
    public static List<(string Name, Tensor Tensor)> ReadOptimizer(string path, IEnumerable<(string Name, Tensor Tensor)> optimizer, int step, Device device,
        Shards? shardOf = null)
    {
        var expected = optimizer.ToList();
        using var reader = Open(path);
        CheckNames(reader, expected, path, step, shardOf);
        var result = new List<(string, Tensor)>();
        foreach (var (name, tensor) in expected)
        {
            if (tensor.DType == DType.F32)
            {
                result.Add((name, Tensor.FromArray(device, Floats(reader, name, path, name.EndsWith(".exp_avg_sq", StringComparison.Ordinal), shardOf?.Invoke(name, tensor)), tensor.Shape)));
                continue;
            }
            int[] values = reader.GetInts(name);
            if (name.EndsWith(".step", StringComparison.Ordinal))
            {
                int count = values[0];
                if (count < 0 || count > step) throw Bad(path, $"'{name}' = {count}: expected a step count from 0 to the checkpoint's step {step}");
                if (name == EveryStepParameter + ".step" && count != step)
                    throw Bad(path, $"'{name}' = {count} but the checkpoint is at step {step} and this parameter steps every time: the optimizer's state belongs to another checkpoint");
            }
            result.Add((name, Tensor.FromArray(device, values, tensor.Shape)));
        }
        return result;
    }
}
