// The PNG figures of `peer inspect`: the selections of every expert sorted (log scale), selection count against the norm
// of the expert's output vector, the class x expert shares of the most used experts (a heatmap), and image tiles (ScottPlot
// for plots, SkiaSharp, which ScottPlot draws with, for the tiles). Every file is written atomically.
using ScottPlot;
using SkiaSharp;

namespace Peer.Training;

static class InspectPlots
{
    /// <summary>Each layer's selection counts sorted in decreasing order against the rank, both on log10 scales.</summary>
    public static void SortedSelections(string path, IReadOnlyList<(string Layer, long[] Counts)> layers)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var (layer, counts) in layers)
        {
            var sorted = counts.Where(c => c > 0).OrderByDescending(c => c).ToArray();
            if (sorted.Length == 0) continue;
            var line = plot.Add.ScatterLine(Enumerable.Range(1, sorted.Length).Select(r => Math.Log10(r)).ToArray(), sorted.Select(c => Math.Log10(c)).ToArray());
            line.LegendText = $"{layer}: {sorted.Length:N0} of {counts.Length:N0} experts selected";
            line.Color = palette.GetColor(i++);
            line.LineWidth = 2;
        }
        plot.Title("selections per expert, most selected first");
        plot.XLabel("log10 rank");
        plot.YLabel("log10 selections");
        plot.ShowLegend(Alignment.UpperRight);
        Save(plot, path);
    }

    /// <summary>log10(1 + selections) of every expert against the norm of its output vector <c>||v_i||</c>.</summary>
    public static void CountVersusNorm(string path, string layer, long[] counts, double[] norms, double pearson, double spearman)
    {
        var plot = new Plot();
        var dots = plot.Add.ScatterPoints(norms, counts.Select(c => Math.Log10(1 + c)).ToArray());
        dots.MarkerSize = 3;
        dots.LegendText = $"{counts.Length:N0} experts: Pearson {pearson:F3}, Spearman {spearman:F3}";
        plot.Title($"{layer}: selections against output norm");
        plot.XLabel("||v_i|| (norm of the expert's row of experts.up)");
        plot.YLabel("log10(1 + selections)");
        plot.ShowLegend(Alignment.UpperLeft);
        Save(plot, path);
    }

    /// <summary>Rows: experts; columns: classes; cells: the class's share of the expert's router weight.</summary>
    public static void ClassShares(string path, string layer, ClassExpertMatrix m, int[] experts, IReadOnlyList<string> classes)
    {
        var shares = new double[experts.Length, m.Classes];
        for (int r = 0; r < experts.Length; r++)
        {
            double t = m.Total(experts[r]);
            for (int c = 0; c < m.Classes; c++) shares[r, c] = t > 0 ? m.Weight[experts[r], c] / t : 0;
        }
        var plot = new Plot();
        var map = plot.Add.Heatmap(shares);
        map.Colormap = new ScottPlot.Colormaps.Viridis();
        map.FlipVertically = true;
        plot.Add.ColorBar(map);
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, m.Classes).Select(c => (double)c).ToArray(), classes.ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        // Rotated labels hang below the axis: room for the longest, or ScottPlot cuts them at the figure's edge.
        plot.Axes.Bottom.MinimumSize = 12 + 6 * classes.Max(c => c.Length);
        plot.Axes.Left.SetTicks(Enumerable.Range(0, experts.Length).Select(r => (double)r).ToArray(), experts.Select(e => e.ToString()).ToArray());
        plot.Title($"{layer}: share of each class in the router weight of the {experts.Length} most used experts");
        plot.YLabel("expert (most used at the top)");
        Save(plot, path, 900, 160 + 18 * experts.Length);
    }

    /// <summary>
    /// A grid of grey-scale images (rows of <c>tiles[r]</c>), each scaled by <paramref name="scale"/>, with an optional red square
    /// around a patch (<c>Mark</c>: top-left pixel and side, in image pixels), and a label column on the left.
    /// </summary>
    public static void Tiles(string path, IReadOnlyList<(string Label, IReadOnlyList<(byte[] Pixels, int Size, (int X, int Y, int Side)? Mark)> Images)> rows, int scale = 2)
    {
        int size = rows.SelectMany(r => r.Images).Select(i => i.Size).DefaultIfEmpty(28).Max();
        int cell = size * scale + 4, label = 120, cols = rows.Select(r => r.Images.Count).DefaultIfEmpty(1).Max();
        using var bitmap = new SKBitmap(label + cols * cell, Math.Max(1, rows.Count) * cell);
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(SKColors.White);
        using var text = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        using var font = new SKFont { Size = 12 };
        using var red = new SKPaint { Color = SKColors.Red, IsStroke = true, StrokeWidth = 1.5f };
        using var grey = new SKPaint();
        for (int r = 0; r < rows.Count; r++)
        {
            canvas.DrawText(rows[r].Label, 4, r * cell + cell / 2f + 4, SKTextAlign.Left, font, text);
            for (int c = 0; c < rows[r].Images.Count; c++)
            {
                var (pixels, n, mark) = rows[r].Images[c];
                int x0 = label + c * cell + 2, y0 = r * cell + 2;
                for (int y = 0; y < n; y++)
                    for (int x = 0; x < n; x++)
                    {
                        byte v = pixels[y * n + x];
                        grey.Color = new SKColor(v, v, v);
                        canvas.DrawRect(x0 + x * scale, y0 + y * scale, scale, scale, grey);
                    }
                if (mark is { } m) canvas.DrawRect(x0 + m.X * scale, y0 + m.Y * scale, m.Side * scale, m.Side * scale, red);
            }
        }
        using var image = SKImage.FromBitmap(bitmap);
        using var png = image.Encode(SKEncodedImageFormat.Png, 100);
        AtomicFile.Write(path, tmp => File.WriteAllBytes(tmp, png.ToArray()));
    }

    static void Save(Plot plot, string path, int width = 900, int height = 540) => AtomicFile.Write(path, tmp => plot.SavePng(tmp, width, height));
}
