// The run's PNG plots (ScottPlot), written atomically into the output folder; each function returns the file name
// that results.md links to.
using ScottPlot;
using Peer.Training;

namespace Peer.Bench;

internal static class Plots
{
    /// <summary>
    /// PEER step time against N (x: sqrt N on a log2 axis) relative to the smallest N run alternately with it (the goal's
    /// figure), beside the FLOPs ratio and the goal's 1.25 x FLOPs ratio.
    /// </summary>
    public static string PeerScaling(string folder, string file, IReadOnlyList<(int N, double TimeRatio, double FlopsRatio)> points, string title)
    {
        var plot = new Plot();
        double[] xs = points.Select(p => Math.Log2(Math.Sqrt(p.N))).ToArray();
        var measured = plot.Add.Scatter(xs, points.Select(p => p.TimeRatio).ToArray());
        measured.LegendText = "measured step time / step time at the smallest N (run alternately)";
        measured.LineWidth = 2;
        measured.MarkerSize = 8;
        var flops = plot.Add.Scatter(xs, points.Select(p => p.FlopsRatio).ToArray());
        flops.LegendText = "FLOPs ratio (forward + backward)";
        flops.LinePattern = LinePattern.Dashed;
        var goal = plot.Add.Scatter(xs, points.Select(p => 1.25 * p.FlopsRatio).ToArray());
        goal.LegendText = "goal: at most 1.25 x the FLOPs ratio";
        goal.LinePattern = LinePattern.Dotted;
        plot.Axes.Bottom.SetTicks(xs, points.Select(p => $"{Fmt.Experts(p.N)}").ToArray());
        plot.Axes.SetLimitsY(0, 1.15 * points.Max(p => Math.Max(p.TimeRatio, 1.25 * p.FlopsRatio)));
        plot.Title(title);
        plot.XLabel("experts N");
        plot.YLabel("relative step time");
        plot.ShowLegend(Alignment.UpperLeft);
        return Save(plot, folder, file);
    }

    /// <summary>Step time and peak memory of the two designs at each N, side by side.</summary>
    public static string Ablation(string folder, string file, IReadOnlyList<(int N, double Fused, double Naive, long FusedPeak, long NaivePeak)> points, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var bars = new List<Bar>();
        var ticks = new List<Tick>();
        for (int i = 0; i < points.Count; i++)
        {
            var p = points[i];
            double x = 3 * i;
            bars.Add(new Bar { Position = x, Value = p.Naive / p.Fused, FillColor = palette.GetColor(0), Size = 0.9 });
            bars.Add(new Bar { Position = x + 1, Value = (double)p.NaivePeak / p.FusedPeak, FillColor = palette.GetColor(1), Size = 0.9 });
            ticks.Add(new Tick(x + 0.5, $"N = {Fmt.Experts(p.N)}"));
        }
        plot.Add.Bars(bars);
        var three = plot.Add.HorizontalLine(3);
        three.LinePattern = LinePattern.Dashed;
        three.LegendText = "goal: 3x";
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "speed-up (naive step time / fused step time)", FillColor = palette.GetColor(0) });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "memory saving (naive peak / fused peak)", FillColor = palette.GetColor(1) });
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.ToArray());
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel("naive / fused (higher is better for fused)");
        plot.ShowLegend(Alignment.UpperLeft);
        return Save(plot, folder, file);
    }

    /// <summary>One bar per label.</summary>
    public static string Bars(string folder, string file, string[] labels, double[] values, string yLabel, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        plot.Add.Bars(values.Select((v, i) => new Bar { Position = i, Value = v, FillColor = palette.GetColor(i), Size = 0.8 }).ToList());
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(labels.Select((l, i) => new Tick(i, l)).ToArray());
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel(yLabel);
        return Save(plot, folder, file);
    }

    static string Save(Plot plot, string folder, string file)
    {
        Directory.CreateDirectory(folder);
        AtomicFile.Write(Path.Combine(folder, file), tmp => plot.SavePng(tmp, 900, 540));
        return file;
    }
}
