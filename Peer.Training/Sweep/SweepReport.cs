// A sweep's reports from its results: results.csv (one row per variant and seed), results.md (a Markdown
// table of the means over seeds, with the spread when there are several) and PNG plots with ScottPlot:
// isoflop: validation perplexity against total parameters, one curve per method and budget (the paper's
// isoFLOP curves); experts: perplexity and unevenness against N, with and without query BatchNorm;
// active: perplexity against h k. Every file is written atomically.
using System.Globalization;
using System.Text;
using ScottPlot;

namespace Peer.Training;

/// <summary>Writes a sweep's results.csv, results.md and plots.</summary>
public static class SweepReport
{
    /// <summary>The CSV header.</summary>
    public const string CsvHeader = "name,experiment,kind,budget,seed,d_model,experts,heads,top_k,query_norm,macs_per_token,parameters,steps,tokens,flops,train_loss,val_loss,val_ppl,usage,unevenness,seconds";

    static string F(double? v, string format = "R") => v is { } x ? x.ToString(format, CultureInfo.InvariantCulture) : "";

    /// <summary>One CSV line of <paramref name="r"/>.</summary>
    public static string ToCsv(SweepResult r) => string.Join(",", r.Name, r.Experiment, r.Kind, F(r.Budget, "G4"), r.Seed.ToString(CultureInfo.InvariantCulture),
        r.DModel.ToString(CultureInfo.InvariantCulture), r.Experts.ToString(CultureInfo.InvariantCulture), r.Heads.ToString(CultureInfo.InvariantCulture),
        r.TopK.ToString(CultureInfo.InvariantCulture), r.QueryNorm, r.MacsPerToken.ToString(CultureInfo.InvariantCulture),
        r.Parameters.ToString(CultureInfo.InvariantCulture), r.Steps.ToString(CultureInfo.InvariantCulture), r.Tokens.ToString(CultureInfo.InvariantCulture),
        F(r.Flops, "G4"), F(r.TrainLoss), F(r.ValLoss), F(r.ValPerplexity, "G6"), F(r.Usage, "G6"), F(r.Unevenness, "G6"), F(r.Seconds, "F1"));

    /// <summary>Writes results.csv, results.md and the experiment's plots to <paramref name="outDir"/>.</summary>
    public static void Write(string outDir, IReadOnlyList<SweepResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        var csv = new StringBuilder(CsvHeader).Append('\n');
        foreach (var r in results) csv.Append(ToCsv(r)).Append('\n');
        AtomicFile.WriteAllText(Path.Combine(outDir, "results.csv"), csv.ToString());
        AtomicFile.WriteAllText(Path.Combine(outDir, "results.md"), Markdown(results));
        if (results.Count == 0) return;
        switch (results[0].Experiment)
        {
            case "isoflop": IsoFlopPlot(Path.Combine(outDir, "isoflop.png"), results); break;
            case "experts": ExpertsPlots(outDir, results); break;
            default: ActivePlot(Path.Combine(outDir, "active.png"), results); break;
        }
    }

    /// <summary>Results grouped by variant (the name without its seed), in order of first appearance.</summary>
    public static IEnumerable<IGrouping<string, SweepResult>> BySetting(IEnumerable<SweepResult> results) =>
        results.GroupBy(r => r.Name[..r.Name.LastIndexOf("-s", StringComparison.Ordinal)]);

    static string MeanSpread(IEnumerable<double> values, string format)
    {
        var v = values.ToArray();
        double mean = v.Average();
        if (v.Length == 1) return mean.ToString(format, CultureInfo.InvariantCulture);
        double sd = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1));
        return $"{mean.ToString(format, CultureInfo.InvariantCulture)} ± {sd.ToString(format, CultureInfo.InvariantCulture)}";
    }

    /// <summary>The Markdown table: one row per setting, means over seeds (± sample standard deviation with more than one).</summary>
    public static string Markdown(IReadOnlyList<SweepResult> results)
    {
        var sb = new StringBuilder();
        sb.Append("| variant | kind | budget | d | N | h | k | query norm | A (MACs/token) | parameters | steps | tokens | seeds | val loss | val ppl | usage | unevenness |\n");
        sb.Append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        foreach (var g in BySetting(results))
        {
            var r = g.First();
            var usage = g.Where(x => x.Usage.HasValue).Select(x => x.Usage!.Value).ToArray();
            var uneven = g.Where(x => x.Unevenness.HasValue).Select(x => x.Unevenness!.Value).ToArray();
            sb.Append(CultureInfo.InvariantCulture, $"| {g.Key} | {r.Kind} | {SweepPlan.FormatBudget(r.Budget)} | {r.DModel} | {(r.Experts > 0 ? r.Experts.ToString("N0", CultureInfo.InvariantCulture) : "")} | ")
              .Append(CultureInfo.InvariantCulture, $"{(r.Heads > 0 ? r.Heads : "")} | {(r.TopK > 0 ? r.TopK : "")} | {r.QueryNorm} | {r.MacsPerToken:N0} | {r.Parameters:N0} | {r.Steps} | {r.Tokens:N0} | {g.Count()} | ")
              .Append(CultureInfo.InvariantCulture, $"{MeanSpread(g.Select(x => x.ValLoss), "F4")} | {MeanSpread(g.Select(x => x.ValPerplexity), "F3")} | ")
              .Append(usage.Length > 0 ? MeanSpread(usage.Select(u => 100 * u), "F1") + " %" : "").Append(" | ")
              .Append(uneven.Length > 0 ? MeanSpread(uneven, "F3") : "").Append(" |\n");
        }
        return sb.ToString();
    }

    static void Save(Plot plot, string path, string title, string x, string y)
    {
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.ShowLegend(Edge.Right); // outside the data area: the curves cross where a legend would sit
        AtomicFile.Write(path, tmp => plot.SavePng(tmp, 1000, 500));
    }

    static (double X, double Y)[] Means(IEnumerable<SweepResult> rs, Func<SweepResult, double> x, Func<SweepResult, double?> y) =>
        BySetting(rs).Where(g => g.All(r => y(r).HasValue)).Select(g => (x(g.First()), g.Average(r => y(r)!.Value))).OrderBy(p => p.Item1).ToArray();

    static void Series(Plot plot, (double X, double Y)[] points, string legend, int color, bool dashed = false)
    {
        if (points.Length == 0) return;
        var s = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
        s.LegendText = legend;
        s.Color = new ScottPlot.Palettes.Category10().GetColor(color);
        s.LineWidth = 2;
        s.MarkerSize = 7;
        if (dashed) s.LinePattern = LinePattern.Dashed;
    }

    /// <summary>Perplexity against log10 of total parameters, one curve per method and budget (means over seeds).</summary>
    public static void IsoFlopPlot(string path, IReadOnlyList<SweepResult> results)
    {
        var plot = new Plot();
        string[] kinds = ["ffw", "moe-ec", "pkm", "peer"];
        var budgets = results.Select(r => r.Budget).Distinct().OrderBy(b => b).ToArray();
        for (int b = 0; b < budgets.Length; b++)
            for (int k = 0; k < kinds.Length; k++)
                Series(plot, Means(results.Where(r => r.Budget == budgets[b] && r.Kind == kinds[k]), r => Math.Log10(r.Parameters), r => r.ValPerplexity),
                    $"{kinds[k]} @ {SweepPlan.FormatBudget(budgets[b])} FLOPs", k, dashed: b > 0);
        Save(plot, path, "isoFLOP: validation perplexity vs parameters", "log10(total parameters)", "validation perplexity");
    }

    /// <summary>experts.png (perplexity against log2 N) and unevenness.png (unevenness against log2 N), with and without query BatchNorm.</summary>
    public static void ExpertsPlots(string outDir, IReadOnlyList<SweepResult> results)
    {
        var ppl = new Plot();
        var uneven = new Plot();
        string[] norms = ["batch", "none"];
        for (int i = 0; i < norms.Length; i++)
        {
            var rs = results.Where(r => r.QueryNorm == norms[i]).ToArray();
            string label = norms[i] == "batch" ? "query BatchNorm" : "no query norm";
            Series(ppl, Means(rs, r => Math.Log2(r.Experts), r => r.ValPerplexity), label, i);
            Series(uneven, Means(rs, r => Math.Log2(r.Experts), r => r.Unevenness), label, i);
        }
        Save(ppl, Path.Combine(outDir, "experts.png"), "PEER: validation perplexity vs number of experts (fixed h k)", "log2(N)", "validation perplexity");
        Save(uneven, Path.Combine(outDir, "unevenness.png"), "PEER: unevenness vs number of experts (fixed h k)", "log2(N)", "unevenness (KL from uniform)");
    }

    /// <summary>Perplexity against h k; points at k = 8 joined, other k as separate series.</summary>
    public static void ActivePlot(string path, IReadOnlyList<SweepResult> results)
    {
        var plot = new Plot();
        int i = 0;
        foreach (var g in results.GroupBy(r => r.TopK).OrderBy(g => g.Key))
            Series(plot, Means(g, r => r.Heads * r.TopK, r => r.ValPerplexity), $"k = {g.Key} (h varies)", i++);
        Save(plot, path, "PEER: validation perplexity vs active experts h k", "h k", "validation perplexity");
    }
}
