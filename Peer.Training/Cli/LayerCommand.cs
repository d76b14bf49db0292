// `peer layer`: runs one feed-forward layer (PEER by default, or any baseline) from a safetensors file of
// parameters under their interop names, on x (and optionally grad_y) from another safetensors file, and
// writes y, the retrieval (PEER), and every gradient — so the layer can be checked against PyTorch.
using System.CommandLine;
using Peer.IO;
using Peer.Nn;

namespace Peer.Training;

/// <summary>The <c>peer layer</c> command.</summary>
public static class LayerCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create(TextWriter output, TextWriter error)
    {
        var weights = new Option<string>("--weights") { Description = "safetensors file of the layer's parameters under their interop names (docs/peer-spec.md, docs/layers.md).", Required = true };
        var input = new Option<string>("--input") { Description = "safetensors file with x [T, d] (F32 or F64) and optionally grad_y [T, d].", Required = true };
        var outputPath = new Option<string>("--output") { Description = "safetensors file to write: y, indices and weights (peer), grad.x and grad.<name> when grad_y was given.", Required = true };
        var topK = new Option<int?>("--top-k") { Description = "Experts kept per head (peer, pkm) or per token (moe-topk). Required for those layers." };
        var device = new Option<string>("--device") { Description = "cpu (default), cuda, opencl or auto.", DefaultValueFactory = _ => "cpu" };
        var eval = new Option<bool>("--eval") { Description = "Evaluation mode (BatchNorm running statistics) instead of training mode (batch statistics)." };
        var activation = new Option<string>("--activation") { Description = "gelu (default, exact erf form) or relu.", DefaultValueFactory = _ => "gelu" };
        var layer = new Option<string>("--layer") { Description = $"Layer kind: {string.Join(", ", FeedForwardFactory.Names)} (default peer).", DefaultValueFactory = _ => "peer" };
        var capacity = new Option<double>("--capacity-factor") { Description = "Capacity factor of moe-ec and moe-topk (default 1).", DefaultValueFactory = _ => 1.0 };

        var cmd = new Command("layer", "Run one layer from safetensors files and write its output and gradients (for checking against another implementation).")
        {
            weights, input, outputPath, topK, device, eval, activation, layer, capacity,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () =>
        {
            var kind = ParseKind(r.GetValue(layer)!);
            var act = r.GetValue(activation)!.Trim().ToLowerInvariant() switch
            {
                "gelu" => PeerActivation.Gelu,
                "relu" => PeerActivation.Relu,
                var other => throw new ConfigException($"--activation: '{other}' is not one of gelu, relu"),
            };
            int? k = r.GetValue(topK);
            if (kind is FeedForwardKind.Peer or FeedForwardKind.Pkm or FeedForwardKind.MoeTopK && k is null)
                throw new ConfigException($"--top-k: required for --layer {FeedForwardFactory.Name(kind)}");
            if (k is < 1) throw new ConfigException($"--top-k: {k} is not a positive number");

            var parameters = ReadAll(r.GetValue(weights)!);
            var (x, xShape, gradY) = ReadInput(r.GetValue(input)!);
            string outPath = r.GetValue(outputPath)!;
            using var dev = PeerCli.OpenDevice(r.GetValue(device)!);
            var file = new SafeTensorFile();
            file.Metadata["layer"] = FeedForwardFactory.Name(kind);
            file.Metadata["mode"] = r.GetValue(eval) ? "eval" : "train";
            var options = new FeedForwardOptions { Activation = act, TopK = k ?? 0, CapacityFactor = r.GetValue(capacity) };
            var result = FeedForwardRunner.Run(dev, kind, parameters, x, xShape, gradY, options, r.GetValue(eval));
            file.Add("y", result.Y, xShape[0], xShape[1]);
            if (result.Retrieval is { } retrieval)
            {
                var idx = retrieval.Shape.Select(v => (long)v).ToArray();
                file.Add("indices", retrieval.Indices, idx);
                file.Add("weights", retrieval.Weights, idx);
            }
            if (result.AuxiliaryLoss is float aux) file.Add("aux_loss", [aux], 1);
            AddGrads(file, result.Grads);
            SafeTensors.Write(outPath, file);
            output.WriteLine($"wrote {outPath}: {string.Join(", ", file.Entries.Select(e => $"{e.Name} {Tensor.FormatShape(e.Shape.Select(s => (int)s).ToArray())}"))}");
            return 0;
        }));
        return cmd;
    }

    static FeedForwardKind ParseKind(string name)
    {
        try
        {
            return FeedForwardFactory.Parse(name);
        }
        catch (ArgumentException e)
        {
            throw new ConfigException($"--layer: {PeerCli.OneLine(e.Message)}");
        }
    }

    static void AddGrads(SafeTensorFile file, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> grads)
    {
        foreach (var (name, (data, shape)) in grads.OrderBy(g => g.Key, StringComparer.Ordinal))
            file.Add(name, data, shape.Select(s => (long)s).ToArray());
    }

    static Dictionary<string, (float[] Data, int[] Shape)> ReadAll(string path)
    {
        if (!File.Exists(path)) throw new ConfigException($"--weights: file '{path}' does not exist");
        using var reader = OpenReader(path, "--weights");
        var result = new Dictionary<string, (float[], int[])>();
        foreach (var name in reader.Names)
            result[name] = ReadFloats(reader, name, path);
        return result;
    }

    static (float[] X, int[] Shape, float[]? GradY) ReadInput(string path)
    {
        if (!File.Exists(path)) throw new ConfigException($"--input: file '{path}' does not exist");
        using var reader = OpenReader(path, "--input");
        if (!reader.Contains("x")) throw new ConfigException($"--input: '{path}' has no tensor named 'x' (it has: {string.Join(", ", reader.Names)})");
        var (x, shape) = ReadFloats(reader, "x", path);
        if (shape.Length != 2) throw new ConfigException($"--input: x has shape {Tensor.FormatShape(shape)}; expected [T, d]");
        float[]? gradY = null;
        if (reader.Contains("grad_y"))
        {
            var (g, gShape) = ReadFloats(reader, "grad_y", path);
            if (!gShape.SequenceEqual(shape)) throw new ConfigException($"--input: grad_y has shape {Tensor.FormatShape(gShape)}; expected {Tensor.FormatShape(shape)} like x");
            gradY = g;
        }
        return (x, shape, gradY);
    }

    static SafeTensorReader OpenReader(string path, string option)
    {
        try
        {
            return SafeTensors.Read(path);
        }
        catch (InvalidDataException e)
        {
            throw new ConfigException($"{option}: {PeerCli.OneLine(e.Message)}");
        }
    }

    static (float[] Data, int[] Shape) ReadFloats(SafeTensorReader reader, string name, string path)
    {
        var info = reader.GetInfo(name);
        if (info.Shape.Any(s => s > int.MaxValue)) throw new ConfigException($"{path}: tensor '{name}' has a dimension too large");
        var shape = info.Shape.Select(s => (int)s).ToArray();
        float[] data = info.DType switch
        {
            SafeDType.F32 => reader.GetFloats(name),
            SafeDType.F64 => SafeTensors.ToFloats(reader.GetDoubles(name), name),
            _ => throw new ConfigException($"{path}: tensor '{name}' has dtype {info.DType}; expected F32 or F64"),
        };
        return (data, shape);
    }
}
