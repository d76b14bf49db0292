// The torch suite: Peer beside PyTorch on the same CPU, the same work in both, run in the same rounds (Peer's
// step, then the PyTorch process's step at each thread count, the thread counts' order rotating round by
// round), so the ratios see the same machine load. On the CPU accelerator Peer's language-model step is timed
// at 1 thread and at the device's own count (one per processor) in the same rounds, its order rotating too: on a
// shared machine either side's 2 threads can lose to 1 when another process holds a core, so each side's best
// thread count is compared. The PEER step keeps the device's count (a second runner would double its memory). The PyTorch side is the project's own scripts in
// Peer.Bench/torch/ (the language model of Peer.Training; the PEER layer in the public implementations'
// design: gathered rows + einsum, dense AdamW or SparseAdam). PyTorch's best thread count decides the ratio.
// Without a Python that imports torch the suite reports PyTorch absent and measures nothing.
using Peer.Training;

namespace Peer.Bench;

internal sealed partial class TorchSuite : ISuite
{
    public string Name => "torch";
    public string Summary => "Peer beside PyTorch (the scripts in Peer.Bench/torch): language-model training step and PEER layer step, interleaved";

    /// <summary>Longest wait for one answer of a PyTorch process (building a 1024^2-expert layer under load takes minutes).</summary>
    internal static readonly TimeSpan Answer = TimeSpan.FromMinutes(10);

    /// <summary>Thread counts PyTorch is timed at (torch's and OpenBLAS's): 1, 2 and the machine's cores.</summary>
    internal static int[] Threads => new[] { 1, 2, Environment.ProcessorCount }.Distinct().Order().ToArray();

    /// <summary>The key of Peer's figures on <paramref name="d"/>: its thread count on the CPU accelerator, else 0 (not a thread count).</summary>
    static int PeerKey(Device d) => d.IsCpu ? d.Workers : 0;

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        var python = TorchPython.Find(out string reason);
        if (python is null)
        {
            s.Notes.Add($"PyTorch absent: {reason}. Nothing was measured.");
            run.Log.WriteLine($"  PyTorch absent: {reason}");
            return;
        }
        var (name, device) = run.Open.FirstOrDefault(d => d.Device.IsCpu);
        if (device is null)
        {
            s.Notes.Add("PyTorch runs on the CPU: the suite compares it with Peer's CPU accelerator, which was not among the devices (add --devices cpu). Nothing was measured.");
            return;
        }
        run.Log.WriteLine($"  PyTorch {python.TorchVersion} ({python.Path}), threads {string.Join(", ", Threads)}");
        s.Notes.Add($"PyTorch {python.TorchVersion} run by {python.Path} (set {TorchPython.Variable} to choose another interpreter), timed at " +
            $"{string.Join(" and ", Threads)} threads (torch.set_num_threads and OpenBLAS's own thread count), one process per configuration; " +
            "Peer on the CPU accelerator, its language-model step at 1 thread and at one per processor (DeviceOptions.CpuThreads), its PEER step at one per processor. " +
            "Ratios are Peer's tokens/s at its best thread count over PyTorch's at its best, from the same rounds.");
        if (o.TorchPart is null or "lm") LanguageModel(run, s, python, name, device);
        if (o.TorchPart is null or "peer") PeerStep(run, s, python, name, device);
        if (o.TorchPart is { } part) s.Notes.Add($"--torch-part {part}: only the {(part == "lm" ? "language-model" : "PEER layer")} step was run.");
    }

    /// <summary>The language-model shapes: the first tiny preset's (d 64, learned positions, the record defaults), and a wider one (bench configurations, not user presets).</summary>
    static (string Label, RunConfig Config)[] LmShapes(BenchOptions o)
    {
        // Not RunConfig.Preset("tiny"): that preset now uses rotary positions, which torch/lm_step.py does not have, and the
        // recorded comparisons were measured with this shape.
        var tiny = new RunConfig { Model = new ModelConfig(), Train = new TrainConfig() };
        if (o.Smoke)
            return [("smoke: d 32, 3 layers, context 16, batch 2", tiny with
            {
                Model = tiny.Model with { DModel = 32, Context = 16, Peer = tiny.Model.Peer with { Experts = 16 * 16 } },
                Train = tiny.Train with { BatchSize = 2 },
            })];
        var wide = tiny with { Model = tiny.Model with { DModel = 128, Layers = 4 }, Train = tiny.Train with { BatchSize = 12 } };
        return [("first tiny preset: d 64, 3 layers, context 64, batch 8", tiny), ("d 128, 4 layers, context 64, batch 12", wide)];
    }

    void LanguageModel(BenchRun run, SuiteResults s, TorchPython python, string name, Device device)
    {
        var o = run.Options;
        int repeats = Sizes.Repeats(o, 10, 3, 2), warmup = Sizes.Pick(o, 3, 1, 1);
        // The CPU accelerator at 1 thread beside the device's own count; any other device as it is.
        using var single = device.IsCpu && device.Workers != 1 ? Device.Open("cpu", new DeviceOptions { CpuThreads = 1 }) : null;
        var sides = (single is null ? new[] { device } : [single, device]).Select(d => (Threads: PeerKey(d), Device: d)).ToArray();
        var rows = new List<SideBySide>();
        foreach (var (label, shape) in LmShapes(o))
        {
            var data = Dataset.Create(Corpus.Load(null), new ByteTokenizer(), shape.Model.Context);
            var dense = shape with { Model = shape.Model with { Blocks = Enumerable.Repeat("ffw", shape.Model.Layers).ToArray() } };
            foreach (var (variant, config) in new[] { ("dense", dense), ("PEER block", shape) })
            {
                run.Log.WriteLine($"  LM {label}, {variant} ...");
                var c = new SideBySide($"LM, {label}", $"{variant} ({string.Join(",", config.Model.BlockKinds())})", (double)config.Train.BatchSize * config.Model.Context,
                    Threads, sides.Select(p => p.Threads).ToArray());
                var trainers = new List<Trainer>();
                try
                {
                    foreach (var p in sides) trainers.Add(new Trainer(p.Device, config, data));
                    using var torch = new TorchWorker(python, "lm_step.py", LmArgs(config), Answer);
                    c.Parameters = CheckParameters(trainers[0].Model.ParameterCount, torch, c.Label + ", " + variant);
                    var peaks = new long[sides.Length];
                    Rounds(warmup, repeats, c, torch, (round, record) =>
                    {
                        for (int j = 0; j < sides.Length; j++)
                        {
                            int i = (round + j) % sides.Length;
                            var (threads, d) = sides[i];
                            var trainer = trainers[i];
                            if (record) d.ResetPeak();
                            double total = Timing.Seconds(() => { trainer.Step(); d.Synchronize(); });
                            var (f, b, opt) = PhasedStep(trainer);
                            if (record) { c.PeerAt[threads].Add(f, b, opt, total); peaks[i] = Math.Max(peaks[i], d.PeakTensorBytes); }
                        }
                    });
                    c.PeerPeak = peaks[Array.FindIndex(sides, p => p.Threads == c.PeerBestThreads)];
                    (c.TorchPeakRss, c.TorchImportRss) = torch.Quit();
                    rows.Add(c);
                    Profiles.Capture(run, s, device, $"LM, {label}, {variant}", repeats, () => trainers[^1].Step());
                }
                catch (InvalidOperationException e) when (e is not ParameterMismatchException)
                {
                    s.Notes.Add($"WARNING: {c.Label}, {variant}: not run: {e.Message}");
                }
                finally
                {
                    foreach (var t in trainers) t.Dispose();
                }
            }
        }
        Report(run, s, name, rows, sides.Select(p => p.Threads).ToArray(), "language-model training step (forward + cross-entropy, backward, gradient clipping, AdamW)");
        foreach (var c in rows)
        {
            double r = c.Ratio;
            s.Goals.Add(new Goal(name, $"{c.Label}, {c.Variant}: Peer's best / PyTorch's best{(o.Smoke ? " (reduced sizes of this mode)" : o.Quick ? " (fewer repeats in this mode)" : "")}", ">= 1.5x", r, r >= 1.5,
                $"{r:F2}x (Peer {Fmt.Num(c.PeerBest.Median)} tokens/s{SideBySide.At(c.PeerBestThreads)} vs PyTorch {Fmt.Num(c.TorchRate(c.BestThreads).Median)} at {c.BestThreads} thread(s))"));
        }
        s.Notes.Add("LM step: Peer's is Trainer.Step() (Peer.Training: forward, cross-entropy, backward, clipping at norm 1, AdamW with row-sparse PEER " +
            "tables), timed whole for tokens/s; its phases come from a second step of the same trainer timed phase by phase (Model.Loss, Backward, " +
            "clipping + AdamW). " + (single is null ? "" : "On the CPU accelerator one trainer per thread count (1, and one per processor), the same " +
            "configuration and seed, stepped in the same rounds, the order rotating; Peer's figures in the phases table and its peak are its best thread count's. ") +
            "PyTorch's (torch/lm_step.py) is the same model (parameter counts checked equal) with dense AdamW over every parameter, " +
            "torch.nn.utils.clip_grad_norm_ and random tokens. Peer's peak is the device's peak tensor bytes over the measured steps (parameters, AdamW " +
            "state, activations; the device's pool of idle buffers, at most 1 GiB, left out); PyTorch's is the process's peak resident memory above what it held once torch was imported.");
    }

    /// <summary>One step of the trainer timed by phase: the body of Trainer.Step (one micro-batch) with a synchronisation after each phase.</summary>
    static (double Forward, double Backward, double Optimizer) PhasedStep(Trainer trainer)
    {
        var t = trainer.Config.Train;
        var device = trainer.Device;
        int[] windows = trainer.Sampler.NextBatch(t.BatchSize);
        double f, b;
        trainer.Model.Train();
        using (Scope.Begin())
        {
            Tensor? loss = null;
            f = Timing.Seconds(() => { loss = trainer.Model.Loss(windows, t.BatchSize); loss.Item(); });
            b = Timing.Seconds(() => { loss!.Backward(); device.Synchronize(); });
        }
        double o = Timing.Seconds(() =>
        {
            if (t.ClipNorm > 0) GradClip.ClipGlobalNorm(trainer.Model.Parameters(), t.ClipNorm);
            trainer.Optimizer.Step();
            device.Synchronize();
        });
        trainer.Model.ZeroGrad();
        return (f, b, o);
    }

    static IEnumerable<string> LmArgs(RunConfig c) =>
        [.. LmShapeArgs(c.Model), "--batch", $"{c.Train.BatchSize}", "--lr", $"{c.Train.LearningRate}", "--weight-decay", $"{c.Train.WeightDecay}",
         "--clip", $"{c.Train.ClipNorm}", "--seed", $"{c.Train.Seed}"];

    /// <summary>torch/lm_step.py's options that give its model <paramref name="m"/>'s shape (its time and check commands take them alike).</summary>
    /// <exception cref="ArgumentException">A PEER block with a query norm other than BatchNorm, or positions other than learned (the script has those only).</exception>
    internal static IEnumerable<string> LmShapeArgs(ModelConfig m)
    {
        if (m.BlockKinds().Contains("peer") && m.Peer.QueryNorm != "batch")
            throw new ArgumentException($"the PyTorch language model has BatchNorm queries only; peer.query_norm = '{m.Peer.QueryNorm}'", nameof(m));
        if (m.Positions != "learned")
            throw new ArgumentException($"the PyTorch language model has learned positions only; positions = '{m.Positions}'", nameof(m));
        if (m.BlockKinds().Any(k => k is not ("ffw" or "peer")))
            throw new ArgumentException($"the PyTorch language model has ffw and peer blocks only; blocks = {string.Join(",", m.BlockKinds())}", nameof(m));
        return ["--vocab", $"{m.VocabSize}", "--dim", $"{m.DModel}", "--layers", $"{m.Layers}", "--heads", $"{m.Heads}", "--context", $"{m.Context}",
            "--hidden", $"{m.HiddenWidth}", "--blocks", string.Join(",", m.BlockKinds()), "--peer-experts", $"{m.Peer.Experts}",
            "--peer-heads", $"{m.Peer.Heads}", "--peer-top-k", $"{m.Peer.TopK}", "--peer-query-dim", $"{m.Peer.QueryDim}",
            .. m.TiedHead ? Array.Empty<string>() : ["--untied"]];
    }

    /// <summary>Peer's parameter count, after checking that the PyTorch process built a model of the same size.</summary>
    /// <exception cref="ParameterMismatchException">The counts differ: the two sides would not be computing the same model.</exception>
    internal static long CheckParameters(long peer, TorchWorker torch, string what)
    {
        long theirs = torch.Ready.GetProperty("params").GetInt64();
        if (theirs != peer) throw new ParameterMismatchException($"{what}: PyTorch's model has {theirs} parameters, Peer's {peer}: the scripts do not build the same model");
        return peer;
    }

    /// <summary>Warm-up rounds, then measured ones: Peer's step (told the round and whether to record), then PyTorch's at each thread count, the order rotating.</summary>
    static void Rounds(int warmup, int repeats, SideBySide c, TorchWorker? torch, Action<int, bool>? peer)
    {
        var threads = c.Torch.Keys.Order().ToArray();
        for (int r = 0; r < warmup + repeats; r++)
        {
            bool record = r >= warmup;
            peer?.Invoke(r, record);
            if (torch is null) continue;
            for (int j = 0; j < threads.Length; j++)
            {
                var t = torch.Step(threads[(r + j) % threads.Length]);
                if (record) c.Torch[t.Threads].Add(t.Forward, t.Backward, t.Optimizer, t.Total);
            }
        }
    }
}

/// <summary>The PyTorch script built a model of another size than Peer's: a fault of the bench, not of the run.</summary>
internal sealed class ParameterMismatchException(string message) : InvalidOperationException(message);
