// PNG plots of a run with ScottPlot: the loss curves (training, validation, and the unigram baseline a
// context-free model would reach) and the expert-usage histogram of each PEER layer.
using ScottPlot;

namespace Peer.Training;

/// <summary>Draws a run's plots.</summary>
public static class Plots
{
    /// <summary>Writes the loss curves to <paramref name="path"/> (PNG, atomically).</summary>
    /// <param name="path">Output file.</param>
    /// <param name="rows">The metrics so far.</param>
    /// <param name="unigram">The unigram entropy of the training tokens in nats, drawn as a baseline; null omits it.</param>
    /// <param name="title">Plot title.</param>
    public static void LossCurves(string path, IReadOnlyList<MetricRow> rows, double? unigram, string title)
    {
        var plot = new Plot();
        if (rows.Count > 0)
        {
            var train = plot.Add.ScatterLine(rows.Select(r => (double)r.Step).ToArray(), rows.Select(r => r.Loss).ToArray());
            train.LegendText = "training loss";
            var evals = rows.Where(r => r.ValLoss.HasValue).ToArray();
            if (evals.Length > 0)
            {
                var val = plot.Add.Scatter(evals.Select(r => (double)r.Step).ToArray(), evals.Select(r => r.ValLoss!.Value).ToArray());
                val.LegendText = "validation loss";
                val.LineWidth = 2;
                val.MarkerSize = 6;
            }
        }
        if (unigram is { } u)
        {
            var line = plot.Add.HorizontalLine(u);
            line.LinePattern = LinePattern.Dashed;
            line.LegendText = $"unigram baseline ({u:F2})";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (nats per token)");
        plot.ShowLegend(Alignment.UpperRight);
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 900, 540));
    }

    /// <summary>Writes a histogram of per-expert usage relative to uniform (<c>N z_i</c>; 1 is perfectly even) for each PEER layer.</summary>
    public static void ExpertUsage(string path, IReadOnlyList<LayerUsage> layers, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var layer in layers)
        {
            float[] sums = layer.WeightSums;
            double total = sums.Sum(z => Math.Abs((double)z));
            double[] relative = sums.Select(z => total > 0 ? Math.Abs(z) * sums.Length / total : 0).ToArray();
            double max = Math.Max(1e-9, relative.Max());
            const int binCount = 50;
            double width = max / binCount;
            var counts = new double[binCount];
            foreach (var r in relative) counts[Math.Min(binCount - 1, (int)(r / width))]++;
            var bars = plot.Add.Bars(Enumerable.Range(0, binCount).Select(b => (b + 0.5) * width).ToArray(), counts);
            bars.LegendText = $"{layer.Layer}: usage {layer.Usage:P1}, unevenness {layer.Unevenness:F3}";
            foreach (var bar in bars.Bars) { bar.FillColor = palette.GetColor(i).WithAlpha(0.6); bar.Size = width; bar.LineWidth = 0; }
            i++;
        }
        plot.Title(title);
        plot.XLabel("expert usage relative to uniform (N z_i)");
        plot.YLabel("experts");
        plot.ShowLegend(Alignment.UpperRight);
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 900, 540));
    }
}
