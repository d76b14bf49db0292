// The command-line training loop around a VisionTrainer, as TrainLoop is for the language model: steps until the configured
// count, evaluating on the validation images and checkpointing on schedule, appending metrics.csv and redrawing accuracy.png and
// experts.png at each evaluation, scoring the test images at the end (test.json), with a progress bar on a terminal or plain
// lines when output is redirected; the first Ctrl+C or SIGTERM saves a checkpoint and exits with code 130.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using ScottPlot;
using Spectre.Console;

namespace Peer.Training;

/// <summary>One row of an image-classifier run's metrics.csv (evaluation columns on evaluation steps, test columns on the last).</summary>
public sealed record VisionMetricRow(int Step, double Loss, double Accuracy, double LearningRate, double ImagesPerSecond,
    double? ValLoss, double? ValAccuracy, double? TestLoss, double? TestAccuracy, double? ExpertUsage, double? Unevenness, double PeakMiB)
{
    /// <summary>The CSV header line.</summary>
    public const string Header = "step,loss,train_acc,lr,images_per_s,val_loss,val_acc,test_loss,test_acc,expert_usage,unevenness,peak_mib";

    /// <summary>The CSV line (invariant culture).</summary>
    public string ToCsv()
    {
        static string F(double? v, string format = "R") => v is { } x ? x.ToString(format, CultureInfo.InvariantCulture) : "";
        return string.Join(",", Step.ToString(CultureInfo.InvariantCulture), F(Loss), F(Accuracy, "G6"), F(LearningRate, "G6"), F(ImagesPerSecond, "F1"),
            F(ValLoss), F(ValAccuracy, "G6"), F(TestLoss), F(TestAccuracy, "G6"), F(ExpertUsage, "G6"), F(Unevenness, "G6"), F(PeakMiB, "F2"));
    }

    /// <summary>Parses a line written by <see cref="ToCsv"/>.</summary>
    public static VisionMetricRow Parse(string line)
    {
        var f = line.Split(',');
        double? D(int i) => f[i].Length == 0 ? null : double.Parse(f[i], CultureInfo.InvariantCulture);
        return new VisionMetricRow(int.Parse(f[0], CultureInfo.InvariantCulture), D(1)!.Value, D(2)!.Value, D(3)!.Value, D(4)!.Value,
            D(5), D(6), D(7), D(8), D(9), D(10), D(11)!.Value);
    }
}

sealed class VisionTrainLoop(VisionTrainer trainer, string runDir, TextWriter output, CancellationToken interrupt)
{
    readonly string metricsPath = Path.Combine(runDir, "metrics.csv");
    volatile bool interrupted;
    int lastCheckpoint;
    VisionEvalResult? testAlone; // the final test evaluation on the images alone, when the run scores them with their mirrors

    public int Run()
    {
        var cfg = trainer.Config;
        int total = cfg.Train.Steps, start = trainer.StepCount;
        lastCheckpoint = start; // a resumed run starts from its checkpoint
        var rows = File.Exists(metricsPath)
            ? File.ReadLines(metricsPath).Skip(1).Where(l => l.Length > 0).Select(VisionMetricRow.Parse).Where(r => r.Step <= start).ToList()
            : new List<VisionMetricRow>();
        WriteMetrics(rows); // a resumed run drops rows written after its checkpoint
        var m = cfg.Model;
        output.WriteLine($"run folder  {runDir}");
        output.WriteLine($"device      {trainer.Device.Name}");
        output.WriteLine($"data        {trainer.Data.Name}: {trainer.Data.Train.Count:N0} training, {trainer.Data.Validation.Count:N0} validation, {trainer.Data.Test.Count:N0} test images of {m.ImageSize}x{m.ImageSize}");
        output.WriteLine($"model       {m.TokenMixing} d={m.DModel} layers={m.Layers} {(m.StemChannels > 0 ? $"stem={m.StemKernel}x{m.StemKernel}x{m.StemChannels} " : "")}patch={m.PatchSize}{(m.WindowSize != m.PatchSize ? $" window={m.WindowSize}" : "")} ({m.Tokens} tokens) blocks=[{string.Join(",", m.BlockKinds())}] parameters={trainer.Model.ParameterCount:N0}"
            + (m.BlockKinds().Contains("peer") ? $" experts={m.Peer.Experts:N0} (h={m.Peer.Heads}, k={m.Peer.TopK})" : ""));
        output.WriteLine($"training    steps {start + 1}..{total}, batch {cfg.Train.BatchSize} ({(double)total * cfg.Train.BatchSize / trainer.Data.Train.Count:F1} epochs), lr {cfg.Train.LearningRate}, seed {cfg.Train.Seed}"
            + (cfg.Train.AugmentShift > 0 || cfg.Train.AugmentFlip ? ", augmentation: " + string.Join(" and ",
                new[] { cfg.Train.AugmentShift > 0 ? $"shifts up to {cfg.Train.AugmentShift} pixels" : null, cfg.Train.AugmentFlip ? "left-right flips" : null }.OfType<string>()) : "")
            + (cfg.Train.LabelSmoothing > 0 ? $", label smoothing {cfg.Train.LabelSmoothing}" : "")
            + (cfg.Train.EvalFlip ? "; evaluation scores each image with its mirror image" : ""));

        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = !interrupted;
            interrupted = true;
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var onInterrupt = interrupt.Register(() => interrupted = true);
        VisionEvalResult? test = null;
        if (EvalDisplay.Interactive(output))
            EvalDisplay.Progress().Start(ctx =>
            {
                var task = ctx.AddTask("starting", maxValue: total);
                task.Value = start;
                test = Loop(rows, (row, line) =>
                {
                    task.Value = row.Step;
                    task.Description = Markup.Escape($"step {row.Step}/{total}  loss {row.Loss:F3}  {row.ImagesPerSecond:N0} images/s");
                    if (line != null) AnsiConsole.MarkupLine(Markup.Escape(line));
                });
            });
        else
        {
            int every = Math.Max(1, total / 50);
            test = Loop(rows, (row, line) =>
            {
                if (line != null) output.WriteLine(line);
                else if (row.Step % every == 0 || row.Step == total)
                    output.WriteLine($"step {row.Step}/{total}  loss {row.Loss:F4}  train acc {row.Accuracy:P1}  lr {row.LearningRate:G3}  {row.ImagesPerSecond:N0} images/s");
            });
        }
        if (interrupted)
        {
            output.WriteLine($"interrupted at step {trainer.StepCount}: checkpoint saved in {runDir}; continue with: peer vision train --resume --out \"{runDir}\"");
            return PeerCli.InterruptedExit;
        }
        var classes = trainer.Data.Classes;
        output.WriteLine($"test        accuracy {test!.Accuracy:P2} (loss {test.Loss:F4}) on {test.Images:N0} test images"
            + (testAlone != null ? $", each scored with its mirror image (eval_flip; the images alone: {testAlone.Accuracy:P2})" : ""));
        output.WriteLine("per class   " + string.Join(", ", test.ClassAccuracy.Select((a, c) => $"{classes[c]} {a:P1}")));
        output.WriteLine($"done: metrics.csv, accuracy.png{(trainer.Model.PeerLayers().Any() ? ", experts.png" : "")}, test.json and the checkpoint are in {runDir}");
        return 0;
    }

    VisionEvalResult? Loop(List<VisionMetricRow> rows, Action<VisionMetricRow, string?> report)
    {
        var cfg = trainer.Config.Train;
        VisionEvalResult? test = null;
        while (trainer.StepCount < cfg.Steps && !interrupted)
        {
            VisionStepResult s;
            try
            {
                s = trainer.Step();
            }
            catch (TrainingDivergedException e)
            {
                throw TrainingDivergedException.Stopped(e, "the step was not applied", lastCheckpoint > 0 ? lastCheckpoint : null, runDir, cfg.ClipNorm > 0);
            }
            bool final = s.Step == cfg.Steps, evaluate = final || (cfg.EvalEvery > 0 && s.Step % cfg.EvalEvery == 0);
            var val = evaluate && trainer.Data.Validation.Count > 0 ? trainer.Evaluate(trainer.Data.Validation) : null;
            if (final)
            {
                test = trainer.Evaluate(trainer.Data.Test);
                testAlone = test.FlipAveraged ? trainer.Evaluate(trainer.Data.Test, flip: false) : null;
            }
            var usage = test ?? val;
            var row = new VisionMetricRow(s.Step, s.Loss, s.Accuracy, s.LearningRate, s.ImagesPerSecond, val?.Loss, val?.Accuracy, test?.Loss, test?.Accuracy,
                usage?.Usage, usage?.Unevenness, trainer.Device.PeakBytes / 1048576.0);
            rows.Add(row);
            File.AppendAllText(metricsPath, row.ToCsv() + "\n");
            string? line = null;
            if (val != null || test != null)
            {
                line = $"step {s.Step}  loss {s.Loss:F4}"
                    + (val != null ? $"  val loss {val.Loss:F4}  val acc {val.Accuracy:P2}" : "")
                    + (test != null ? $"  test acc {test.Accuracy:P2}" : "")
                    + (usage!.Usage is { } u ? $"  expert usage {u:P1}  unevenness {usage.Unevenness:F3}" : "")
                    + $"  {s.ImagesPerSecond:N0} images/s";
                AccuracyPlot(Path.Combine(runDir, "accuracy.png"), rows);
                if (usage.Experts.Count > 0) Plots.ExpertUsage(Path.Combine(runDir, "experts.png"), usage.Experts, $"expert usage at step {s.Step}");
            }
            if (test != null) WriteTest(test);
            bool save = final || interrupted || (cfg.CheckpointEvery > 0 && s.Step % cfg.CheckpointEvery == 0);
            if (save)
            {
                VisionCheckpoint.Save(trainer, runDir);
                lastCheckpoint = s.Step;
            }
            report(row, line);
        }
        return test;
    }

    void WriteMetrics(IEnumerable<VisionMetricRow> rows)
    {
        var sb = new StringBuilder(VisionMetricRow.Header).Append('\n');
        foreach (var r in rows) sb.Append(r.ToCsv()).Append('\n');
        AtomicFile.WriteAllText(metricsPath, sb.ToString());
    }

    void WriteTest(VisionEvalResult test)
    {
        var classes = trainer.Data.Classes;
        var doc = new Dictionary<string, object>
        {
            ["step"] = trainer.StepCount,
            ["images"] = test.Images,
            ["accuracy"] = test.Accuracy,
            ["loss"] = test.Loss,
            ["flip_averaged"] = test.FlipAveraged,
            ["class_accuracy"] = classes.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => test.ClassAccuracy[p.i]),
        };
        if (testAlone != null) doc["accuracy_images_alone"] = testAlone.Accuracy;
        AtomicFile.WriteAllText(Path.Combine(runDir, "test.json"), JsonSerializer.Serialize(doc, ModelConfig.Json));
    }

    // Training accuracy (per step, a running mean over 20 steps) and validation accuracy against the step.
    static void AccuracyPlot(string path, IReadOnlyList<VisionMetricRow> rows)
    {
        var plot = new Plot();
        if (rows.Count > 0)
        {
            var smooth = rows.Select((r, i) => rows.Skip(Math.Max(0, i - 19)).Take(Math.Min(20, i + 1)).Average(x => x.Accuracy)).ToArray();
            var train = plot.Add.ScatterLine(rows.Select(r => (double)r.Step).ToArray(), smooth);
            train.LegendText = "training accuracy (mean of 20 steps)";
            var evals = rows.Where(r => r.ValAccuracy.HasValue).ToArray();
            if (evals.Length > 0)
            {
                var val = plot.Add.Scatter(evals.Select(r => (double)r.Step).ToArray(), evals.Select(r => r.ValAccuracy!.Value).ToArray());
                val.LegendText = "validation accuracy";
                val.LineWidth = 2;
                val.MarkerSize = 6;
            }
            if (rows[^1].TestAccuracy is { } t)
            {
                var line = plot.Add.HorizontalLine(t);
                line.LinePattern = LinePattern.Dashed;
                line.LegendText = $"test accuracy at the end ({t:P2})";
            }
        }
        plot.Title("accuracy");
        plot.XLabel("step");
        plot.YLabel("fraction correct");
        plot.ShowLegend(Alignment.LowerRight);
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 900, 540));
    }
}
