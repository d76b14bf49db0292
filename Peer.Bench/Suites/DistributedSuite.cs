// The distributed suite: `peer train --parallel data|experts` on R = 1, 2, 4 ranks of this machine through MPICH's mpiexec
// (docs/distributed.md): median step time and the bytes each rank received per step (as the run reports them, counted by
// Communicator.Traffic) beside the cost model's figure, and the link speed above which a run over R machines would be
// compute-bound (its bytes per step moved in the compute time of 1/R of the one-rank step). It also counts, from the
// expert ids of a real batch, the bytes row sharding of the expert tables would move per rank, beside column sharding's.
// Without MPI it reports MPI absent, with the reason, and the run goes on.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Peer.Training;

namespace Peer.Bench;

internal sealed partial class DistributedSuite : ISuite
{
    public string Name => "distributed";
    public string Summary => "peer train --parallel data|experts on 1, 2, 4 ranks (mpiexec): step time, bytes per step per rank against the cost model; row vs column sharding";

    [GeneratedRegex(@"^step (\d+)/\d+ +loss \S+ +lr \S+ +([\d,]+) tok/s(?: +([\d.,]+) KiB received per rank)?")]
    private static partial Regex StepLine();

    [GeneratedRegex(@"^experts +\S+ split by columns: rank 0 holds \[(\d+), (\d+)\] of \[\d+, \d+\]")]
    private static partial Regex HoldsLine();

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        string? launcher = new[] { "mpiexec.mpich", "mpiexec" }.Select(n => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
            .Select(d => Path.Combine(d, n)).FirstOrDefault(File.Exists)).FirstOrDefault(p => p != null);
        if (launcher is null || !NativeLibrary.TryLoad("libmpich.so.12", out _))
        {
            s.Notes.Add("MPI absent: no mpiexec with libmpich.so.12 here (apt-get install mpich); the distributed suite was skipped.");
            run.Log.WriteLine(s.Notes[^1]);
            return;
        }
        int steps = Sizes.Pick(o, 14, 8, 3), skip = Sizes.Pick(o, 4, 3, 1);
        int[] ranks = Sizes.Pick(o, new[] { 1, 2, 4 }, new[] { 1, 2, 4 }, new[] { 2 });
        string[] modes = Sizes.Pick(o, new[] { "data", "experts" }, new[] { "data", "experts" }, new[] { "experts" });
        var config = RunConfig.Preset("tiny") with { Train = RunConfig.Preset("tiny").Train with
        {
            Steps = steps, WarmupSteps = 0, EvalEvery = 0, CheckpointEvery = 0, EvalWindows = 2, Device = "cpu",
        } };
        string dir = Path.Combine(Path.GetFullPath(o.Output), "distributed");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "run.json"), config.ToJson());
        File.WriteAllText(Path.Combine(dir, "corpus.txt"), Corpus.Load(null).Text[..60_000]);
        long dense;
        int tensors, peerLayers;
        using (var device = Device.Open("cpu", new DeviceOptions { CpuThreads = 1 }))
        using (var model = new LanguageModel(device, config.Model, 1))
        {
            (dense, tensors) = CommunicationCost.DenseShape(model);
            peerLayers = model.PeerLayers().Count();
        }
        // A whole PEER layer's expert memory: down and up, each [N, d] floats with AdamW's two moments of the same shape.
        double wholeExperts = peerLayers * 2.0 * config.Model.Peer.Experts * config.Model.DModel * 4 * 3 / (1 << 20);

        var table = new Table("mode", "ranks", "step ms", "KiB/step/rank", "model KiB", "compute-bound above (Gbit/s)", "expert MiB/rank");
        double? oneRank = null;
        foreach (var mode in modes)
            foreach (int r in ranks)
            {
                var (ms, kib, held) = Launch(run, launcher, dir, mode, r, steps, skip);
                if (ms.Count == 0) continue;
                var st = Stat.Of(ms);
                if (r == 1) oneRank ??= st.Median;
                double measured = kib.Count > 0 ? Stat.Of(kib).Median : 0;
                var parallel = Distribution.ParseMode(mode);
                double model = CommunicationCost.BytesPerStep(config, dense, tensors, r, 0, parallel) / 1024.0;
                // R machines share the one-rank compute: the link must move a step's bytes in 1/R of the one-rank step.
                double? link = r > 1 && oneRank is { } t1 ? measured * 1024 * 8 / (t1 / r / 1e3) / 1e9 : null;
                // Expert tables and their AdamW moments on rank 0: from the split the run reports, else whole.
                double experts = held.Count > 0 ? held.Sum() * 4.0 * 3 / (1 << 20) : wholeExperts;
                table.Add(mode, r, Fmt.Spread(st.Median, st.Min, st.Max), r > 1 ? measured : null, r > 1 ? model : null, link, experts);
                s.Add(new Measurement("cpu", $"{mode}, {r} ranks", "expert tables and AdamW state on rank 0", "MiB", experts)
                    { Reference = wholeExperts, ReferenceName = "one process" });
                s.Add(new Measurement("cpu", $"{mode}, {r} ranks", "training step", "ms", st.Median, st.Min, st.Max));
                if (r > 1) s.Add(new Measurement("cpu", $"{mode}, {r} ranks", "bytes received per rank per step", "KiB", measured) { Reference = model, ReferenceName = "cost model (upper bound for data)" });
            }
        run.Show(s, $"tiny preset (d = {config.Model.DModel}, PEER N = {Fmt.Experts(config.Model.Peer.Experts)}, h = {config.Model.Peer.Heads}, k = {config.Model.Peer.TopK}), "
            + $"batch {config.Train.BatchSize} x {config.Model.Context} tokens, {steps} steps (first {skip} not timed), ranks on this machine's {Environment.ProcessorCount} cores", table);
        s.Notes.Add("Ranks share this machine's cores, so step times show overhead, not speed-up. The compute-bound link speed assumes R machines each "
            + "doing 1/R of the one-rank step's compute: below it a multi-machine run waits on the network.");
        Sharding(run, s, config);
    }

    // Column sharding (the model, which the runs measure) against row sharding counted from one batch's retrievals.
    static void Sharding(BenchRun run, SuiteResults s, RunConfig config)
    {
        var table = new Table("ranks", "column sharding KiB/layer/rank", "row sharding KiB/layer/rank (counted)", "row / column");
        using var device = Device.Open("cpu");
        var data = Dataset.Create(Corpus.Load(null), new ByteTokenizer(), config.Model.Context);
        using var trainer = new Trainer(device, config, data);
        for (int i = 0; i < 3; i++) trainer.Step();
        var (name, layer) = trainer.Model.PeerLayers().First();
        using (Scope.Begin())
        using (device.Tape.NoGrad())
            trainer.Model.Loss(trainer.Sampler.NextBatch(config.Train.BatchSize), config.Train.BatchSize);
        var ids = layer.LastIndices!.ToIntArray();
        var p = config.Model.Peer;
        int t = config.Train.BatchSize * config.Model.Context, hk = p.Heads * p.TopK, d = config.Model.DModel;
        foreach (int r in new[] { 2, 4, 8 })
        {
            double column = CommunicationCost.ColumnShardedBytesPerRank(t, hk, d, r) / 1024;
            double row = CommunicationCost.RowShardedBytesPerRank(ids, t, hk, p.Experts, d, r, config.Train.BatchSize) / 1024;
            table.Add(r, column, row, Fmt.Ratio(row / column));
            s.Add(new Measurement("cpu", $"row sharding, {r} ranks, {name}", "bytes per layer per rank per step", "KiB", row) { Reference = column, ReferenceName = "column sharding" });
        }
        run.Show(s, $"expert sharding of {name} (d = {d}, h k = {hk}, T = {t}): bytes per rank per step, column (chosen) vs row (counted from a trained model's retrievals)", table);
    }

    // One `mpiexec -np R peer train`; the step times (ms) and KiB per step of rank 0 after the first `skip` steps, and the floats of
    // the expert tables rank 0 reports holding split (two tables a line; none when they are whole).
    static (List<double> Ms, List<double> KiB, List<double> Held) Launch(BenchRun run, string launcher, string dir, string mode, int r, int steps, int skip)
    {
        string peer = $"{Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet"} {Path.Combine(AppContext.BaseDirectory, "peer.dll")}";
        var info = new ProcessStartInfo(launcher, $"-np {r} {peer} train --config run.json --corpus corpus.txt --out {mode}-{r} --parallel {mode} --comm-timeout 600")
        {
            WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var p = Process.Start(info)!;
        var err = p.StandardError.ReadToEndAsync();
        var lines = p.StandardOutput.ReadToEnd().Split('\n');
        p.WaitForExit();
        var ms = new List<double>();
        var kib = new List<double>();
        var held = new List<double>();
        if (p.ExitCode != 0)
        {
            run.Log.WriteLine($"{mode} on {r} ranks failed (exit {p.ExitCode}): {err.Result.Trim()}");
            return (ms, kib, held);
        }
        var config = RunConfig.FromJson(File.ReadAllText(Path.Combine(dir, "run.json")));
        double tokens = (double)config.Train.BatchSize * config.Model.Context;
        foreach (var line in lines)
            if (StepLine().Match(line.Trim()) is { Success: true } m && int.Parse(m.Groups[1].Value) > skip)
            {
                ms.Add(tokens / double.Parse(m.Groups[2].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture) * 1e3);
                if (m.Groups[3].Success) kib.Add(double.Parse(m.Groups[3].Value, NumberStyles.Number, CultureInfo.InvariantCulture));
            }
            else if (HoldsLine().Match(line.Trim()) is { Success: true } h)
                held.Add(2.0 * long.Parse(h.Groups[1].Value, CultureInfo.InvariantCulture) * long.Parse(h.Groups[2].Value, CultureInfo.InvariantCulture));
        return (ms, kib, held);
    }
}
