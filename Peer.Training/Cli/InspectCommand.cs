// `peer inspect --checkpoint DIR`: a Markdown report with PNG figures on what the PEER experts of a trained language model or
// image classifier do (Inspect/Inspector.cs says what it holds), written to DIR/inspect (or --out); with --disable-experts it
// also switches experts off and reports the change per context (language) or per class (images).
using System.CommandLine;

namespace Peer.Training;

static class InspectCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A run folder (or a checkpoint folder inside it) of `peer train` or `peer vision train`.", Required = true };
        var outDir = new Option<string>("--out") { Description = "Folder of the report (default: inspect/ in the run folder)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default: the run's)." };
        var data = new Option<string>("--data") { Description = "Image classifiers: the folder of the Fashion-MNIST files (default: the run's)." };
        var split = new Option<string>("--split") { Description = "Image classifiers: the images inspected, test (default) or validation.", DefaultValueFactory = _ => "test" };
        split.AcceptOnlyFromAmong("test", "validation");
        var windows = new Option<int>("--windows") { Description = "Language models: validation windows inspected (default 64).", DefaultValueFactory = _ => 64 };
        var top = new Option<int>("--top") { Description = "Most used experts shown per layer (default 8).", DefaultValueFactory = _ => 8 };
        var disable = new Option<string[]>("--disable-experts")
        {
            Description = "Also switch experts off and report the change per context or class: IDS (every PEER layer) or LAYER:IDS (repeatable).",
        };
        var cmd = new Command("inspect", "Write a Markdown report with plots on what a trained model's PEER experts do: usage, top-activating contexts or images, class specialisation, output norms, head overlap.")
        {
            checkpoint, outDir, device, data, split, windows, top, disable,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () =>
        {
            string path = r.GetValue(checkpoint)!;
            int n = r.GetValue(top), w = r.GetValue(windows);
            if (n < 1) throw new ConfigException($"top = {n}: expected at least 1 expert");
            if (w < 1) throw new ConfigException($"windows = {w}: expected at least 1 window");
            var options = new InspectOptions { TopExperts = n };
            string report = VisionCheckpoint.IsVision(path)
                ? InspectVision(path, r.GetValue(outDir), r.GetValue(device), r.GetValue(data), r.GetValue(split)!, r.GetValue(disable) ?? [], options)
                : InspectLanguage(path, r.GetValue(outDir), r.GetValue(device), w, r.GetValue(disable) ?? [], options);
            output.WriteLine($"report: {report}");
            return 0;
        }));
        return cmd;
    }

    // The run folder of a checkpoint path (itself, or the folder above checkpoints/).
    static string DefaultOut(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        string? parent = Path.GetDirectoryName(full);
        string run = parent != null && Path.GetFileName(parent) == "checkpoints" ? Path.GetDirectoryName(parent)! : full;
        return Path.Combine(run, "inspect");
    }

    static string InspectVision(string path, string? outDir, string? deviceName, string? dataFolder, string split, string[] disable, InspectOptions options)
    {
        var (state, _) = VisionCheckpoint.ReadState(path);
        var config = state.Config with { Train = state.Config.Train with { Device = deviceName ?? state.Config.Train.Device } };
        var data = ImageDataset.Load(dataFolder ?? config.Train.Data, config.Train.Validation);
        using var device = PeerCli.OpenDevice(config.Train.Device);
        using var trainer = VisionCheckpoint.Load(device, path, data, config);
        var images = split == "validation" ? data.Validation : data.Test;
        if (images.Count == 0) throw new ConfigException("split: the run holds back no validation images (validation = 0); use --split test");
        var edits = ExpertEditing.Parse(disable, trainer.Model.PeerLayers().ToArray());
        return Inspector.Vision(trainer, images, split, outDir ?? DefaultOut(path), options, edits);
    }

    static string InspectLanguage(string path, string? outDir, string? deviceName, int windows, string[] disable, InspectOptions options)
    {
        var (state, _) = Checkpoint.ReadState(path);
        var data = Dataset.Create(Corpus.Load(state.Config.Train.Corpus), Tokenizers.Create(state.Config.Train.Tokenizer), state.Config.Model.Context);
        using var device = PeerCli.OpenDevice(deviceName ?? state.Config.Train.Device);
        var (model, _) = Checkpoint.LoadModel(device, path);
        using (model)
        {
            var edits = ExpertEditing.Parse(disable, model.PeerLayers().ToArray());
            return Inspector.Language(model, data, windows, outDir ?? DefaultOut(path), options, edits);
        }
    }
}
