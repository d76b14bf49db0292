// The command-line training loop around a Trainer: steps until the configured count, evaluating and
// checkpointing on schedule (interim evaluations on a sample of validation windows, the final one on the
// whole split, each beside the n-gram baselines on the same windows, cached in the run's baselines.json),
// appending metrics.csv and redrawing the plots at each evaluation, showing a Spectre.Console progress bar
// on a terminal or plain lines when output is redirected, and saving a checkpoint on Ctrl+C or SIGTERM. With --profile,
// the device's profiler records the training steps after a short warm-up (evaluations and checkpoints paused) and its
// table is printed and written to the run's profile.txt at the end. The loop reads the device only at a log line (every
// steps / 50), an evaluation, a checkpoint or an interruption (Trainer.ReadBack); metrics.csv gets the rows of the steps between
// such reads then, so a step itself waits for nothing.
using System.Runtime.InteropServices;
using Spectre.Console;

namespace Peer.Training;

sealed class TrainLoop(Trainer trainer, string runDir, TextWriter output, CancellationToken interrupt, bool profile = false)
{
    /// <summary>Steps of a run left out of the profile before it starts: the first loads and compiles the kernels, the next
    /// ones run before the JIT's optimised code is in place.</summary>
    public const int ProfileWarmup = 5;

    readonly string metricsPath = Path.Combine(runDir, "metrics.csv");
    // In a distributed run rank 0 alone writes the run folder's files (and its output is the one shown); every rank evaluates,
    // checkpoints and samples together, since those run collectives.
    readonly bool writes = trainer.Distribution.Group.Rank == 0;
    volatile bool interrupted;
    int lastCheckpoint = trainer.StepCount;
    bool hasCheckpoint = Checkpoint.Exists(runDir);
    Profiler? profiler;
    long lastBytes;
    // A plain log line every this many steps (and at the last): the steps at which the loop reads the device.
    readonly int logEvery = Math.Max(1, trainer.Config.Train.Steps / 50);

    public int Run()
    {
        var cfg = trainer.Config;
        int total = cfg.Train.Steps, start = trainer.StepCount;
        var rows = MetricsFile.Read(metricsPath, upToStep: start);
        if (writes) MetricsFile.Write(metricsPath, rows); // a resumed run drops rows written after its checkpoint
        double unigram = trainer.Data.UnigramEntropy();
        if (writes) trainer.Data.Baselines.CacheFile = Path.Combine(runDir, "baselines.json");
        output.WriteLine($"run folder  {runDir}");
        output.WriteLine($"device      {trainer.Device.Name}");
        var group = trainer.Distribution.Group;
        if (group.Size > 1)
        {
            output.WriteLine($"parallel    {trainer.Distribution.Mode.ToString().ToLowerInvariant()} over {group.Size} ranks ({group.Library}); collectives time out after {group.Timeout.TotalSeconds:G4} s");
            foreach (var (name, layer) in trainer.Model.PeerLayers().Where(p => p.Layer.Shard is not null).Take(1))
                output.WriteLine($"experts     {name}.experts.down/up split by columns: rank 0 holds [{layer.Options.Experts}, {layer.Shard!.MyCount}] of [{layer.Options.Experts}, {layer.Shard.Dim}] of each table and of its optimizer state");
        }
        output.WriteLine($"corpus      {trainer.Data.CorpusName}: {trainer.Data.Train.Length:N0} training and {trainer.Data.Validation.Length:N0} validation tokens ({trainer.Data.Tokenizer.Name}); unigram entropy {unigram:F3} nats");
        output.WriteLine($"model       d={cfg.Model.DModel} layers={cfg.Model.Layers} heads={cfg.Model.Heads} context={cfg.Model.Context} blocks=[{string.Join(",", cfg.Model.BlockKinds())}] "
            + $"parameters={trainer.Model.ParameterCount:N0}" + (cfg.Model.BlockKinds().Contains("peer") ? $" experts={cfg.Model.Peer.Experts:N0} (h={cfg.Model.Peer.Heads}, k={cfg.Model.Peer.TopK})" : ""));
        output.WriteLine($"training    steps {start + 1}..{total}, batch {cfg.Train.BatchSize}x{cfg.Train.Accumulation}, lr {cfg.Train.LearningRate}, seed {cfg.Train.Seed}");

        // The first Ctrl+C (SIGINT) or SIGTERM asks for a checkpoint and a clean exit; a second one ends the process at
        // once (the last checkpoint stays intact). PosixSignalRegistration also covers Ctrl+C on Windows.
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = !interrupted;
            interrupted = true;
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var onInterrupt = interrupt.Register(() => interrupted = true);
        {
            if (EvalDisplay.Interactive(output))
                EvalDisplay.Progress().Start(ctx =>
                    {
                        var task = ctx.AddTask("starting", maxValue: total);
                        task.Value = start;
                        ProgressTask? evalTask = null;
                        Loop(rows, unigram, (row, line) =>
                        {
                            task.Value = row.Step;
                            task.Description = Markup.Escape($"step {row.Step}/{total}  loss {row.Loss:F3}  {row.TokensPerSecond:N0} tok/s");
                            if (line != null) AnsiConsole.MarkupLine(Markup.Escape(line));
                        }, (done, count) =>
                        {
                            evalTask ??= ctx.AddTask("final evaluation: whole validation split", maxValue: count);
                            evalTask.Value = done;
                        });
                    });
            else
            {
                int every = logEvery;
                bool announced = false;
                Loop(rows, unigram, (row, line) =>
                {
                    if (line != null) output.WriteLine(line);
                    else if (row.Step % every == 0 || row.Step == total)
                        output.WriteLine($"step {row.Step}/{total}  loss {row.Loss:F4}  lr {row.LearningRate:G3}  {row.TokensPerSecond:N0} tok/s"
                            + (trainer.Distribution.Group.Size > 1 ? $"  {lastBytes / 1024.0:F1} KiB received per rank" : ""));
                }, (_, count) =>
                {
                    if (!announced) output.WriteLine($"evaluating the whole validation split: {count:N0} windows");
                    announced = true;
                });
            }
        }

        if (profiler != null)
        {
            profiler.Dispose();
            string table = profiler.Report();
            output.WriteLine(table);
            AtomicFile.WriteAllText(Path.Combine(runDir, "profile.txt"), table + "\n");
            output.WriteLine($"profile     written to {Path.Combine(runDir, "profile.txt")}");
        }
        if (interrupted)
        {
            output.WriteLine($"interrupted at step {trainer.StepCount}: checkpoint saved in {runDir}; continue with: {PeerCli.Command($"train --resume --out {PeerCli.Quote(runDir)}")}");
            return PeerCli.InterruptedExit;
        }
        if (!writes && trainer.Distribution.Mode != ParallelMode.Experts) return 0; // only expert parallelism needs every rank to sample
        var sample = trainer.Model.Generate(trainer.Data.Tokenizer.Encode("The "), 160, temperature: 0.8f, topK: 40, seed: trainer.Config.Train.Seed);
        output.WriteLine("sample      The " + trainer.Data.Tokenizer.Decode(sample).ReplaceLineEndings(" "));
        output.WriteLine($"done: metrics.csv, loss.png{(trainer.Model.PeerLayers().Any() ? ", experts.png" : "")} and the checkpoint are in {runDir}");
        return 0;
    }

    // One line: which step, what was not finite, what happened to it, and that the last checkpoint is as it was.
    TrainingDivergedException Stopped(TrainingDivergedException e, string consequence) =>
        TrainingDivergedException.Stopped(e, consequence, hasCheckpoint ? lastCheckpoint : null, runDir, trainer.Config.Train.ClipNorm > 0);

    void Loop(List<MetricRow> rows, double unigram, Action<MetricRow, string?> report, Action<int, int> finalProgress)
    {
        var cfg = trainer.Config.Train;
        int start = trainer.StepCount, warmup = Math.Min(ProfileWarmup, Math.Max(0, cfg.Steps - start - 1));
        var unread = new List<(StepResult Step, double LiveMiB, double PeakMiB)>(); // steps whose rows wait for the next read
        while (trainer.StepCount < cfg.Steps && !interrupted)
        {
            if (profile && profiler == null && trainer.StepCount - start >= warmup) profiler = trainer.Device.Profile();
            int attempted = trainer.StepCount + 1;
            StepResult s;
            try
            {
                s = trainer.Step();
            }
            catch (TrainingDivergedException e)
            {
                throw Diverged(rows, unread, e, attempted);
            }
            unread.Add((s, trainer.Device.LiveBytes / 1048576.0, trainer.Device.PeakBytes / 1048576.0));
            profiler?.Pause(); // evaluations, checkpoints and plots are not training steps
            lastBytes = s.BytesReceived;
            if (trainer.Distribution.Group.Size > 1)
            {
                // Ctrl+C or SIGTERM may reach the ranks at different steps: they stop together at the first step any saw it.
                var seen = new[] { interrupted ? 1 : 0 };
                trainer.Distribution.Group.AllReduce(seen.AsSpan(), Peer.Distributed.ReduceOp.Max);
                interrupted = seen[0] != 0;
            }
            bool final = s.Step == cfg.Steps, evaluate = final || (cfg.EvalEvery > 0 && s.Step % cfg.EvalEvery == 0);
            bool save = final || interrupted || (cfg.CheckpointEvery > 0 && s.Step % cfg.CheckpointEvery == 0);
            if (!evaluate && !save && s.Step % logEvery != 0)
            {
                profiler?.Resume();
                continue;
            }
            try
            {
                trainer.ReadBack();
            }
            catch (TrainingDivergedException e)
            {
                throw Diverged(rows, unread, e, s.Step);
            }
            WriteRows(rows, unread.Take(unread.Count - 1), report);
            unread.Clear();
            EvalResult? eval = !evaluate ? null : final ? trainer.Evaluate(EvalCoverage.Whole, finalProgress) : trainer.Evaluate();
            var row = Row(s, trainer.Device.LiveBytes / 1048576.0, trainer.Device.PeakBytes / 1048576.0, eval);
            rows.Add(row);
            if (writes) File.AppendAllText(metricsPath, row.ToCsv() + "\n");
            string? line = null;
            if (eval != null)
            {
                line = $"step {s.Step}  loss {s.Loss:F4}  val loss {eval.Loss:F4}  val ppl {eval.Perplexity:F2}  ({EvalDisplay.Baselines(unigram, eval.Baselines)})"
                    + (eval.Usage is { } u ? $"  expert usage {u:P1}  unevenness {eval.Unevenness:F3}" : "")
                    + $"  {s.TokensPerSecond:N0} tok/s  device memory {row.LiveMiB:F1} MiB (peak {row.PeakMiB:F1})";
                if (final) line += $"\nfinal       val loss {eval.Loss:F4} (ppl {eval.Perplexity:F2}) on the whole validation split ({eval.Tokens:N0} tokens in {eval.Windows:N0} windows); {EvalDisplay.Baselines(unigram, eval.Baselines)}";
                if (writes) Plots.LossCurves(Path.Combine(runDir, "loss.png"), rows, unigram, $"{trainer.Data.CorpusName} ({trainer.Data.Tokenizer.Name})", eval.Baselines);
                if (writes && eval.Experts.Count > 0) Plots.ExpertUsage(Path.Combine(runDir, "experts.png"), eval.Experts, $"expert usage at step {s.Step}");
            }
            if (save)
            {
                try
                {
                    Checkpoint.Save(trainer, runDir);
                }
                catch (TrainingDivergedException e)
                {
                    rows.RemoveAt(rows.Count - 1);
                    MetricsFile.Write(metricsPath, rows); // the step's row describes parameters that were not kept
                    throw Stopped(e, "its parameters were not saved");
                }
                lastCheckpoint = s.Step;
                hasCheckpoint = true;
            }
            report(row, line);
            profiler?.Resume();
        }
    }

    static MetricRow Row(StepResult s, double liveMiB, double peakMiB, EvalResult? eval) =>
        new(s.Step, s.Loss, s.LearningRate, s.TokensPerSecond, eval?.Loss, eval?.Usage, eval?.Unevenness, liveMiB, peakMiB);

    // Appends the rows of steps whose losses were read (metrics.csv and the report), in step order.
    void WriteRows(List<MetricRow> rows, IEnumerable<(StepResult Step, double LiveMiB, double PeakMiB)> steps, Action<MetricRow, string?> report)
    {
        var added = steps.Select(u => Row(u.Step, u.LiveMiB, u.PeakMiB, null)).ToList();
        if (added.Count == 0) return;
        rows.AddRange(added);
        if (writes) File.AppendAllText(metricsPath, string.Concat(added.Select(r => r.ToCsv() + "\n")));
        foreach (var r in added) report(r, null);
    }

    // A divergence found by a read: the rows of the steps before the bad one are kept (as they would have been written had each
    // step been read), then the run stops naming the step and how many steps after it were not applied either.
    TrainingDivergedException Diverged(List<MetricRow> rows, List<(StepResult Step, double LiveMiB, double PeakMiB)> unread, TrainingDivergedException e, int attempted)
    {
        if (writes) WriteRows(rows, unread.Where(u => u.Step.Step < e.Step), (_, _) => { });
        int later = attempted - e.Step;
        return Stopped(e, later <= 0 ? "the step was not applied" : $"neither it nor the {later} step{(later == 1 ? "" : "s")} after it were applied");
    }
}
