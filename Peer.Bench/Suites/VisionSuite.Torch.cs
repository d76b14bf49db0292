// The vision suite's PyTorch side: torch/vit_step.py builds the dense preset's model (parameter count checked equal to
// Peer's) and steps it on request (torch/worker.py's protocol), so that its steps run in the same rounds as Peer's.
// Without a Python that imports torch, or without the CPU accelerator among the devices, the suite says so and goes on.
using Peer.Training;

namespace Peer.Bench;

internal sealed partial class VisionSuite
{
    /// <summary>Longest wait for one answer of the PyTorch process.</summary>
    sealed class TorchSide(string preset, TorchWorker worker, int[] threads, int warmup)
    {
        public string Preset => preset;
        public TorchWorker Worker => worker;
        public int[] Threads => threads;
        public Dictionary<int, List<TorchStep>> Steps { get; } = threads.ToDictionary(t => t, _ => new List<TorchStep>());

        public void Step(int threads) => Steps[threads].Add(worker.Step(threads));

        /// <summary>The measured steps' totals at <paramref name="threads"/> (the warm-up ones left out), in seconds.</summary>
        public Stat Totals(int threads) => Stat.Of(Steps[threads].Skip(warmup).Select(t => t.Total));
    }

    /// <summary>Starts torch/vit_step.py for each preset when a CPU device is open and a Python imports torch; else a note and none.
    /// <paramref name="warmup"/>: the rounds before the measured ones, whose steps the figures leave out.</summary>
    static List<TorchSide> StartTorch(BenchRun run, SuiteResults s, IEnumerable<(string Preset, VisionRunConfig Config)> presets, ImageDataset data, int warmup)
    {
        var sides = new List<TorchSide>();
        if (!run.Open.Any(d => d.Device.IsCpu))
        {
            s.Notes.Add("PyTorch runs on the CPU: its steps are compared with Peer's on the CPU accelerator, which was not among the devices (add --devices cpu).");
            return sides;
        }
        var python = TorchPython.Find(out string reason);
        if (python is null)
        {
            s.Notes.Add($"PyTorch absent: {reason}. Peer's presets were measured alone.");
            run.Log.WriteLine($"  PyTorch absent: {reason}");
            return sides;
        }
        var threads = TorchSuite.Threads;
        foreach (var (preset, config) in presets)
        {
            try
            {
                sides.Add(new TorchSide(preset, new TorchWorker(python, "vit_step.py", TorchArgs(config, data), TorchSuite.Answer), threads, warmup));
            }
            catch (InvalidOperationException e)
            {
                s.Notes.Add($"WARNING: PyTorch's step of the {preset} preset not run: {e.Message}");
            }
        }
        if (sides.Count == 0) return sides;
        run.Log.WriteLine($"  PyTorch {python.TorchVersion} ({python.Path}), threads {string.Join(", ", threads)}");
        s.Notes.Add($"PyTorch {python.TorchVersion} run by {python.Path} (set {TorchPython.Variable} to choose another interpreter): torch/vit_step.py, " +
            "one process per preset, the same model (parameter counts checked equal to Peer's): stem, strided-convolution patch embedding, nn.MultiheadAttention " +
            "blocks, dense feed-forward layers (the dense preset) or peer_step.py's PEER layer (gathered rows + einsum, the peer preset), final LayerNorm, mean " +
            "pooling, head; torch.optim.AdamW over every parameter (dense AdamW also over PEER's tables, where Peer steps only the rows a batch touched), " +
            $"clip_grad_norm_ 1, half of each batch flipped left to right, {(Directory.Exists(data.Name) ? "Fashion-MNIST's training images" : "random images")}; " +
            $"timed at {string.Join(" and ", threads)} threads (torch.set_num_threads and OpenBLAS's own count) by the script's own clock, in the same rounds " +
            "as Peer's steps (after them, in a fixed order). Peer runs on the CPU accelerator at its default thread count (one per processor). " +
            "The ratios are Peer's images/s over PyTorch's at its best thread count, preset by preset.");
        return sides;
    }

    static IEnumerable<string> TorchArgs(VisionRunConfig c, ImageDataset data)
    {
        var m = c.Model;
        var t = c.Train;
        return ["--batch", $"{t.BatchSize}", "--image", $"{m.ImageSize}", "--patch", $"{m.PatchSize}", "--stem", $"{m.StemChannels}",
            "--stem-kernel", $"{m.StemKernel}", "--dim", $"{m.DModel}", "--layers", $"{m.Layers}", "--heads", $"{m.Heads}",
            "--hidden", $"{m.HiddenWidth}", "--classes", $"{m.Classes}", "--lr", $"{t.LearningRate}", "--weight-decay", $"{t.WeightDecay}",
            "--clip", $"{t.ClipNorm}", "--seed", $"{t.Seed}", "--blocks", Kind(m),
            "--peer-experts", $"{m.Peer.Experts}", "--peer-heads", $"{m.Peer.Heads}", "--peer-top-k", $"{m.Peer.TopK}", "--peer-query-dim", $"{m.Peer.QueryDim}",
            .. t.AugmentFlip ? ["--flip"] : Array.Empty<string>(),
            .. Directory.Exists(data.Name) ? ["--data", data.Name] : Array.Empty<string>()];
    }

    /// <summary>The feed-forward kind every block of <paramref name="m"/> has (torch/vit_step.py builds one kind in every block, ffw or peer).</summary>
    /// <exception cref="ArgumentException">The blocks mix kinds, or use one the script does not have.</exception>
    static string Kind(VisionModelConfig m)
    {
        var kinds = m.BlockKinds().Distinct().ToArray();
        if (kinds.Length != 1 || kinds[0] is not ("ffw" or "peer"))
            throw new ArgumentException($"torch/vit_step.py builds ffw or peer blocks, one kind in every block; blocks = {string.Join(",", m.BlockKinds())}", nameof(m));
        return kinds[0];
    }

    /// <summary>Checks that the PyTorch model of <paramref name="side"/>'s preset has Peer's <paramref name="peer"/> parameters.</summary>
    /// <exception cref="ParameterMismatchException">The counts differ: the two sides would not compute the same model.</exception>
    static void AddTorchRows(SuiteResults s, Table table, TorchSide side, string device, Rate peer, Rate peerDense, int batch, long parameters, string blocks)
    {
        Rate best = default;
        int bestThreads = 0;
        foreach (int t in side.Threads)
        {
            var st = side.Totals(t);
            var rate = st.Per(batch);
            var ms = st.Scaled(1e3);
            string label = $"{side.Preset} preset, PyTorch {t} thread(s)";
            table.Add(device, $"{side.Preset}, PyTorch {t} thread(s)", blocks, $"{parameters:N0}", Fmt.Spread(ms.Median, ms.Min, ms.Max), rate.ToString(), Fmt.Ratio(rate.Median / peerDense.Median));
            s.Add(new Measurement(device, label, "training step", "ms", ms.Median, ms.Min, ms.Max));
            s.Add(new Measurement(device, label, "training step", "images/s", rate.Median, rate.Low, rate.High));
            if (rate.Median > best.Median) (best, bestThreads) = (rate, t);
        }
        s.Add(new Measurement(device, $"{side.Preset} preset", "Peer / PyTorch at its best thread count", "x", peer.Median / best.Median)
            { Reference = best.Median, ReferenceName = $"PyTorch {side.Preset} at {bestThreads} thread(s)" });
        s.Notes.Add($"{device}, {side.Preset} preset: Peer {Fmt.Num(peer.Median)} images/s, PyTorch {Fmt.Num(best.Median)} at its best thread count ({bestThreads}): " +
            $"Peer / PyTorch {Fmt.Ratio(peer.Median / best.Median)}.");
    }

    static void QuitTorch(SuiteResults s, TorchSide side)
    {
        try
        {
            var (peak, import) = side.Worker.Quit();
            s.Notes.Add($"PyTorch's {side.Preset} process: peak resident memory above its memory once torch was imported (its copy of the images included) {Fmt.Bytes(Math.Max(0, peak - import))}.");
        }
        catch (InvalidOperationException e)
        {
            s.Notes.Add($"WARNING: PyTorch's {side.Preset} process did not end cleanly: {e.Message}");
        }
        finally
        {
            side.Worker.Dispose();
        }
    }
}
