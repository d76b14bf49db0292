// The training suite: tokens/s of Peer.Training's training step (forward, loss, backward, clipping, AdamW) for the
// tiny preset (a PEER block in the middle), and for the same model with a dense FFW in every block, run alternately.
using Peer.Training;

namespace Peer.Bench;

internal sealed class TrainingSuite : ISuite
{
    public string Name => "training";
    public string Summary => "tokens/s of the tiny preset's training step (Peer.Training), and of the same model with dense FFW blocks";

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        int repeats = Sizes.Repeats(o, 10, 2, 2), warmup = Sizes.Pick(o, 3, 1, 1);
        var tiny = RunConfig.Preset("tiny");
        if (o.Smoke) tiny = tiny with { Train = tiny.Train with { BatchSize = 2 } };
        var dense = tiny with { Model = tiny.Model with { Blocks = Enumerable.Repeat("ffw", tiny.Model.Layers).ToArray() } };
        var data = Dataset.Create(Corpus.Load(null), new ByteTokenizer(), tiny.Model.Context);
        var table = new Table("device", "model", "blocks", "step ms", "tokens/s", "vs dense");
        foreach (var (name, device) in run.Open)
        {
            using var peer = new Trainer(device, tiny, data);
            using var ffw = new Trainer(device, dense, data);
            var t = Timing.Interleaved(warmup, repeats,
                () => { peer.Step(); device.Synchronize(); },
                () => { ffw.Step(); device.Synchronize(); });
            double tokens = (double)tiny.Train.BatchSize * tiny.Train.Accumulation * tiny.Model.Context;
            var rp = t[0].Per(tokens);
            var rd = t[1].Per(tokens);
            var mp = t[0].Scaled(1e3);
            var md = t[1].Scaled(1e3);
            table.Add(name, "tiny", string.Join(",", tiny.Model.BlockKinds()), Fmt.Spread(mp.Median, mp.Min, mp.Max), rp.ToString(), Fmt.Ratio(rp.Median / rd.Median));
            table.Add(name, "tiny, dense", string.Join(",", dense.Model.BlockKinds()), Fmt.Spread(md.Median, md.Min, md.Max), rd.ToString(), "1.00x");
            s.Add(new Measurement(name, "tiny preset", "training step", "tokens/s", rp.Median, rp.Low, rp.High) { Reference = rd.Median, ReferenceName = "tiny with dense FFW blocks" });
            s.Add(new Measurement(name, "tiny preset, dense FFW blocks", "training step", "tokens/s", rd.Median, rd.Low, rd.High));
            Profiles.Capture(run, s, device, $"{name}, tiny preset", repeats, () => peer.Step());
            Profiles.Capture(run, s, device, $"{name}, tiny preset, dense FFW blocks", repeats, () => ffw.Step());
        }
        run.Show(s, $"batch {tiny.Train.BatchSize} x context {tiny.Model.Context} tokens, d = {tiny.Model.DModel}, {tiny.Model.Layers} blocks, PEER N = {Fmt.Experts(tiny.Model.Peer.Experts)}", table);
        s.Notes.Add("One step = Trainer.Step(): forward, cross-entropy, backward, gradient clipping, AdamW (sparse rows for PEER), then a device synchronisation.");
    }
}
