// PNG plots of a run with ScottPlot: the loss curves (training, validation, the unigram baseline a
// context-free model would reach, and the Kneser–Ney n-gram baselines) and the expert-usage histogram of
// each PEER layer.
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
    /// <param name="ngram">The n-gram baselines of the latest evaluation, drawn as lines; null omits them.</param>
    public static void LossCurves(string path, IReadOnlyList<MetricRow> rows, double? unigram, string title, BaselineLosses? ngram = null)
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
        if (ngram != null)
            foreach (var (label, loss) in new[] { ("Kneser-Ney trigram", ngram.Trigram), ("Kneser-Ney 5-gram", ngram.FiveGram) })
            {
                var line = plot.Add.HorizontalLine(loss);
                line.LinePattern = LinePattern.Dotted;
                line.LegendText = $"{label} ({loss:F2})";
            }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (nats per token)");
        plot.ShowLegend(Alignment.UpperRight);
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 900, 540));
    }

    /// <summary>Writes a histogram, per PEER layer, of the used experts' usage relative to uniform on a log scale
    /// (<c>log10(N z_i)</c>: 0 is the uniform share, +1 ten times it); the legend gives the fraction used and the unevenness.</summary>
    public static void ExpertUsage(string path, IReadOnlyList<LayerUsage> layers, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        const int binCount = 40;
        const double low = -3, high = 3; // a thousandth to a thousand times the uniform share
        double width = (high - low) / binCount;
        int i = 0;
        foreach (var layer in layers)
        {
            float[] sums = layer.WeightSums;
            double total = sums.Sum(z => Math.Abs((double)z));
            var counts = new double[binCount];
            foreach (var z in sums)
            {
                if (z == 0 || total == 0) continue;
                double r = Math.Log10(Math.Abs(z) * sums.Length / total);
                counts[Math.Clamp((int)Math.Floor((r - low) / width), 0, binCount - 1)]++;
            }
            var bars = plot.Add.Bars(Enumerable.Range(0, binCount).Select(b => low + (b + 0.5) * width).ToArray(), counts);
            int unused = sums.Count(z => z == 0);
            bars.LegendText = $"{layer.Layer}: {sums.Length:N0} experts, usage {layer.Usage:P1} ({unused:N0} unused), unevenness {layer.Unevenness:F3}";
            foreach (var bar in bars.Bars) { bar.FillColor = palette.GetColor(i).WithAlpha(0.6); bar.Size = width; bar.LineWidth = 0; }
            i++;
        }
        var uniform = plot.Add.VerticalLine(0);
        uniform.LinePattern = LinePattern.Dashed;
        uniform.LegendText = "uniform share (1/N)";
        plot.Title(title);
        plot.XLabel("log10 of an expert's share of router weight relative to uniform (used experts)");
        plot.YLabel("experts");
        plot.ShowLegend(Alignment.UpperRight);
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 900, 540));
    }
}
