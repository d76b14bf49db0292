// The vision suite: ms per training step and images/s of the image classifier's two presets (Peer.Training's
// VisionTrainer.Step(): stem, patches, 4 attention blocks with PEER or dense feed-forward layers, loss, backward, clipping,
// AdamW; flips), interleaved round by round so that the ratio sees the same machine load; on the CPU accelerator, when a
// Python with torch is found, PyTorch's step of the dense model (torch/vit_step.py) in the same rounds at 1 and 2 threads.
// Data: Fashion-MNIST when it is installed (Debian's dataset-fashion-mnist), else random images of the same size made in
// memory; a step's work depends on the pixels only through PEER's routing (which experts each token retrieves).
using Peer.Training;

namespace Peer.Bench;

internal sealed partial class VisionSuite : ISuite
{
    public string Name => "vision";
    public string Summary => "ms per step and images/s of the vision presets' training step (Peer.Training), peer and dense, beside PyTorch's steps of the same models";

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        int repeats = Sizes.Repeats(o, 10, 3, 2), warmup = Sizes.Pick(o, 2, 1, 1);
        var (data, source) = Data(o);
        var peerConfig = Configure(VisionRunConfig.Preset("peer"), o, data);
        var denseConfig = Configure(VisionRunConfig.Preset("dense"), o, data);
        int batch = peerConfig.Train.BatchSize;
        var torch = StartTorch(run, s, [("peer", peerConfig), ("dense", denseConfig)], data, warmup);
        var table = new Table("device", "preset", "blocks", "parameters", "step ms", "images/s", "vs Peer dense");
        try
        {
            foreach (var (name, device) in run.Open)
            {
                using var peer = new VisionTrainer(device, peerConfig, data);
                using var dense = new VisionTrainer(device, denseConfig, data);
                var sides = device.IsCpu ? torch : [];
                foreach (var side in sides) TorchSuite.CheckParameters((side.Preset == "peer" ? peer : dense).Model.ParameterCount, side.Worker, $"vision, {side.Preset} preset");
                var actions = new List<Action>
                {
                    () => { peer.Step(); device.Synchronize(); },
                    () => { dense.Step(); device.Synchronize(); },
                };
                // PyTorch's steps join the same rounds; their figures are the script's own clock (the step alone, not the pipe).
                foreach (var side in sides) actions.AddRange(side.Threads.Select(t => (Action)(() => side.Step(t))));
                var t = Timing.Interleaved(warmup, repeats, [.. actions]);
                var rp = t[0].Per(batch);
                var rd = t[1].Per(batch);
                var mp = t[0].Scaled(1e3);
                var md = t[1].Scaled(1e3);
                table.Add(name, "peer", string.Join(",", peerConfig.Model.BlockKinds()), $"{peer.Model.ParameterCount:N0}", Fmt.Spread(mp.Median, mp.Min, mp.Max), rp.ToString(), Fmt.Ratio(rp.Median / rd.Median));
                table.Add(name, "dense", string.Join(",", denseConfig.Model.BlockKinds()), $"{dense.Model.ParameterCount:N0}", Fmt.Spread(md.Median, md.Min, md.Max), rd.ToString(), "1.00x");
                s.Add(new Measurement(name, "peer preset", "training step", "ms", mp.Median, mp.Min, mp.Max));
                s.Add(new Measurement(name, "peer preset", "training step", "images/s", rp.Median, rp.Low, rp.High) { Reference = rd.Median, ReferenceName = "dense preset" });
                s.Add(new Measurement(name, "dense preset", "training step", "ms", md.Median, md.Min, md.Max));
                s.Add(new Measurement(name, "dense preset", "training step", "images/s", rd.Median, rd.Low, rd.High));
                foreach (var side in sides)
                {
                    var (trainer, rate) = side.Preset == "peer" ? (peer, rp) : (dense, rd);
                    AddTorchRows(s, table, side, name, rate, rd, batch, trainer.Model.ParameterCount, string.Join(",", trainer.Config.Model.BlockKinds()) + " (torch)");
                }
                Profiles.Capture(run, s, device, $"{name}, peer preset", repeats, () => peer.Step());
                Profiles.Capture(run, s, device, $"{name}, dense preset", repeats, () => dense.Step());
            }
        }
        finally
        {
            foreach (var side in torch) QuitTorch(s, side);
        }
        var m = peerConfig.Model;
        run.Show(s, $"batch {batch} images of {m.ImageSize}x{m.ImageSize} ({source}), stem {m.StemChannels} channels {m.StemKernel}x{m.StemKernel}, " +
            $"{m.Tokens} tokens of {m.PatchSize}x{m.PatchSize}, d = {m.DModel}, {m.Layers} blocks, PEER N = {Fmt.Experts(m.Peer.Experts)} h = {m.Peer.Heads} k = {m.Peer.TopK}, dense H = {denseConfig.Model.HiddenWidth}", table);
        s.Notes.Add("One step = VisionTrainer.Step() (Peer.Training): the batch's left-right flips, forward, cross-entropy, backward, gradient clipping at norm 1, " +
            "AdamW (sparse rows for PEER), then a device synchronisation. The presets are VisionRunConfig.Preset(\"peer\") and Preset(\"dense\")" +
            (o.Smoke ? $", here at batch {batch} (--smoke)" : "") + "; their steps and PyTorch's run interleaved, round by round.");
        s.Notes.Add($"Data: {source}. A step's work depends on the pixel values only through PEER's routing (which experts each token retrieves).");
    }

    /// <summary>Fashion-MNIST when installed (not under --smoke), else random images of its size; with a description for the notes.</summary>
    static (ImageDataset Data, string Source) Data(BenchOptions o)
    {
        if (!o.Smoke)
        {
            try
            {
                var d = ImageDataset.Load(null, VisionRunConfig.Preset("peer").Train.Validation);
                return (d, $"Fashion-MNIST from {d.Name}");
            }
            catch (DatasetException e)
            {
                return (RandomImages(4096, 1), $"random images made in memory: {e.Message}");
            }
        }
        return (RandomImages(64, 1), "random images made in memory (--smoke)");
    }

    /// <summary><paramref name="count"/> random 28x28 images and labels, the pixels uniform bytes (normalised with their mean and standard deviation); no held-back splits.</summary>
    internal static ImageDataset RandomImages(int count, int seed)
    {
        const int side = 28;
        var rng = new Random(seed);
        var pixels = new byte[count * side * side];
        rng.NextBytes(pixels);
        var labels = new byte[count];
        for (int i = 0; i < count; i++) labels[i] = (byte)rng.Next(ImageDataset.FashionClasses.Length);
        var none = new ImageSplit([], [], side, side);
        // Uniform bytes / 255: mean 1/2, standard deviation sqrt((256^2 - 1) / 12) / 255.
        return new ImageDataset
        {
            Name = "random images", Train = new ImageSplit(pixels, labels, side, side), Validation = none, Test = none,
            Classes = ImageDataset.FashionClasses, Mean = 0.5f, Std = (float)(Math.Sqrt((256.0 * 256 - 1) / 12) / 255),
        };
    }

    /// <summary>The preset fitted to the data's held-back split and, under --smoke, at batch 8.</summary>
    static VisionRunConfig Configure(VisionRunConfig c, BenchOptions o, ImageDataset data) =>
        c with { Train = c.Train with { Validation = data.Validation.Count, BatchSize = o.Smoke ? 8 : c.Train.BatchSize } };
}
