// `peer vision eval`: a checkpoint's loss and accuracy (overall and per class) on the test or validation images, PEER expert
// usage, and, when experts are switched off, the same evaluation again with the change per class.
namespace Peer.Training;

static class VisionEval
{
    public static int Run(string checkpoint, string? dataFolder, string? deviceName, string split, string[] disable, string? disableClass, TextWriter output,
        bool? flip = null)
    {
        var (state, _) = VisionCheckpoint.ReadState(checkpoint);
        var config = state.Config with { Train = state.Config.Train with { Device = deviceName ?? state.Config.Train.Device } };
        var data = ImageDataset.Load(dataFolder ?? config.Train.Data, config.Train.Validation);
        using var device = PeerCli.OpenDevice(config.Train.Device);
        using var trainer = VisionCheckpoint.Load(device, checkpoint, data, config);
        var images = split == "validation" ? data.Validation : data.Test;
        if (images.Count == 0) throw new ConfigException("split: the run holds back no validation images (validation = 0); use --split test");
        var classes = data.Classes;
        var layers = trainer.Model.PeerLayers().ToArray();

        var edits = ExpertEditing.Parse(disable, layers);
        if (disableClass != null)
        {
            string[] parts = disableClass.Split(':');
            int cls = ExpertEditing.ParseClass(parts[0], classes);
            int m = 16;
            if (parts.Length > 2 || (parts.Length == 2 && (!int.TryParse(parts[1], out m) || m < 1)))
                throw new ConfigException($"disable-class: '{disableClass}' is not CLASS or CLASS:M with M a positive number of experts per layer");
            // Chosen on images the edit is not judged on: the validation split, or the training images when evaluating it.
            var chooseOn = split == "test" && data.Validation.Count > 0 ? data.Validation : data.Train.Range(0, Math.Min(5000, data.Train.Count));
            output.WriteLine($"choosing the {m} expert{(m == 1 ? "" : "s")} per layer most specific to {classes[cls]} on {chooseOn.Count:N0} {(ReferenceEquals(chooseOn, data.Validation) ? "validation" : "training")} images");
            foreach (var (layer, set) in ExpertEditing.ClassExperts(trainer, chooseOn, cls, m))
            {
                if (!edits.TryGetValue(layer, out var all)) edits[layer] = all = new SortedSet<int>();
                all.UnionWith(set);
            }
        }

        var before = trainer.Evaluate(images, flip: flip);
        output.WriteLine($"step {state.Step}  {split} accuracy {before.Accuracy:P2}  loss {before.Loss:F4}  on {before.Images:N0} images"
            + (before.FlipAveraged ? ", each scored with its mirror image (eval_flip)" : ""));
        foreach (var layer in before.Experts)
            output.WriteLine($"{layer.Layer}: expert usage {layer.Usage:P2}  unevenness {layer.Unevenness:F4}");
        if (edits.Count == 0)
        {
            output.WriteLine("per class   " + string.Join(", ", before.ClassAccuracy.Select((a, c) => $"{classes[c]} {a:P1}")));
            return 0;
        }
        ExpertEditing.Apply(layers, edits);
        var after = trainer.Evaluate(images, flip: flip);
        foreach (var (layer, set) in edits)
            output.WriteLine($"switched off in {layer}: {set.Count} expert{(set.Count == 1 ? "" : "s")} ({string.Join(",", set.Take(24))}{(set.Count > 24 ? ",..." : "")})");
        output.WriteLine($"{split} accuracy {before.Accuracy:P2} -> {after.Accuracy:P2} ({100 * (after.Accuracy - before.Accuracy):+0.00;-0.00} points), loss {before.Loss:F4} -> {after.Loss:F4}");
        output.WriteLine($"{"class",-14}{"before",9}{"after",9}{"change",9}");
        var b = before.ClassAccuracy;
        var a = after.ClassAccuracy;
        for (int c = 0; c < classes.Length; c++)
            output.WriteLine($"{classes[c],-14}{b[c],9:P1}{a[c],9:P1}{100 * (a[c] - b[c]),9:+0.0;-0.0}");
        return 0;
    }
}
