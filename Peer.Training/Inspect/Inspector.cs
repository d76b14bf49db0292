// `peer inspect` as a library: runs a trained model over evaluation data with a RetrievalTrace and writes report.md with its
// PNG figures into a folder. Per PEER layer: usage and unevenness (docs/peer-spec.md, "Metrics"), the sorted selection counts,
// the most used experts with their top-activating contexts (text with the token marked) or images (the patch framed), the
// correlation between how often an expert is selected and the norm of its output vector ||v_i||, and how much the heads
// overlap; for an image classifier also the class x expert specialisation against a random-routing baseline.
using System.Globalization;
using System.Text;
using Peer.Nn;

namespace Peer.Training;

/// <summary>What <see cref="Inspector"/> shows.</summary>
public sealed record InspectOptions
{
    /// <summary>Most used experts shown per layer.</summary>
    public int TopExperts { get; init; } = 8;
    /// <summary>Top-activating contexts or images shown per expert.</summary>
    public int TopContexts { get; init; } = 8;
    /// <summary>Seed of the label shuffle of the random-routing baseline.</summary>
    public int Seed { get; init; } = 1;
}

/// <summary>Writes inspection reports of trained models.</summary>
public static partial class Inspector
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>One line of a Markdown table.</summary>
    static string Row(params object[] cells) => "| " + string.Join(" | ", cells.Select(c => Convert.ToString(c, Inv))) + " |";

    /// <summary>A file name made of a layer's name.</summary>
    static string Slug(string layer) => layer.Replace('.', '-');

    /// <summary>
    /// The part of a layer's section every model shares: usage, unevenness, concentration, the count-norm correlation (with its
    /// plot) and the head overlap. Returns the selection counts.
    /// </summary>
    static long[] LayerBasics(StringBuilder md, string dir, string name, PeerLayer layer, LayerRetrievals log)
    {
        var counts = log.SelectionCounts();
        var sums = log.WeightSums();
        double total = sums.Sum();
        int used = sums.Count(w => w > 0);
        double uneven = total > 0 ? Math.Log(sums.Length) + sums.Where(w => w > 0).Sum(w => w / total * Math.Log(w / total)) : double.NaN;
        var sorted = counts.OrderByDescending(c => c).ToArray();
        long selections = counts.Sum();
        double top1 = selections == 0 ? 0 : (double)sorted.Take(Math.Max(1, sorted.Length / 100)).Sum() / selections;
        var o = layer.Options;
        md.AppendLine($"### {name}").AppendLine();
        md.AppendLine($"N = {o.Experts:N0} experts (n = {o.SubKeys}), h = {o.Heads} heads, k = {o.TopK} per head; {selections:N0} selections recorded"
            + (layer.DisabledExperts.Count > 0 ? $"; {layer.DisabledExperts.Count} experts switched off" : "") + ".").AppendLine();
        md.AppendLine(Row("usage (experts with router weight > 0)", "unevenness (KL from uniform, nats)", "share of selections taken by the top 1% of experts", "experts never selected"));
        md.AppendLine(Row("---", "---", "---", "---"));
        md.AppendLine(Row($"{(double)used / sums.Length:P2}", uneven.ToString("F3", Inv), $"{top1:P1}", $"{counts.Count(c => c == 0):N0}")).AppendLine();

        // ||v_i||: the norm of each expert's output vector, on the device.
        double[] norms;
        using (Scope.Begin())
        using (layer.Device.Tape.NoGrad())
        {
            var up = layer.StateDict().First(p => p.Name == "experts.up").Tensor;
            norms = Ops.Sqrt(Ops.SumLastDim(Ops.Square(up))).ToArray().Select(v => (double)v).ToArray();
        }
        var logCounts = counts.Select(c => Math.Log(1 + c)).ToArray();
        double pearson = ExpertStatistics.Pearson(logCounts, norms), spearman = ExpertStatistics.Spearman(counts.Select(c => (double)c).ToArray(), norms);
        string normPng = $"norms-{Slug(name)}.png";
        InspectPlots.CountVersusNorm(Path.Combine(dir, normPng), name, counts, norms, pearson, spearman);
        double usedNorm = norms.Where((_, i) => counts[i] > 0).DefaultIfEmpty(double.NaN).Average();
        double unusedNorm = norms.Where((_, i) => counts[i] == 0).DefaultIfEmpty(double.NaN).Average();
        md.AppendLine($"**Selections against output norm.** Correlation of log(1 + selections) with ||v_i||: Pearson {pearson:F3}; rank correlation of "
            + $"selections with ||v_i||: Spearman {spearman:F3}. Mean ||v_i|| of selected experts {usedNorm:F3}, of never-selected ones {unusedNorm:F3} "
            + "(an expert that is never selected receives no gradient, so its norm stays near its initial value, and weight decay only acts on rows the optimizer touches).").AppendLine();
        md.AppendLine($"![selections against norm]({normPng})").AppendLine();

        var overlap = ExpertStatistics.HeadOverlap(log);
        var exclusive = ExpertStatistics.ExclusiveExperts(log);
        md.AppendLine("**Head overlap.** Row a, column b: the mean over positions of the fraction of head a's k experts that head b also retrieved at the same "
            + "position (heads share one set of product keys, so overlap is possible; 0 means the heads always retrieve disjoint experts). Last column: the "
            + "fraction of the distinct experts a head ever retrieved that no other head ever retrieved.").AppendLine();
        md.AppendLine(Row(["head", .. Enumerable.Range(0, o.Heads).Select(j => (object)j), "exclusive experts"]));
        md.AppendLine(Row(Enumerable.Repeat((object)"---", o.Heads + 2).ToArray()));
        for (int a = 0; a < o.Heads; a++)
            md.AppendLine(Row([a, .. Enumerable.Range(0, o.Heads).Select(b => (object)overlap[a, b].ToString("F3", Inv)), exclusive[a].ToString("P1", Inv)]));
        md.AppendLine();
        return counts;
    }

    /// <summary>The <paramref name="count"/> most selected experts (ties: smaller id first).</summary>
    static int[] MostUsed(long[] counts, int count) =>
        Enumerable.Range(0, counts.Length).Where(i => counts[i] > 0).OrderByDescending(i => counts[i]).ThenBy(i => i).Take(count).ToArray();

    /// <summary>The figure of every layer's sorted selection counts, and its paragraph.</summary>
    static void SelectionsFigure(StringBuilder md, string dir, IReadOnlyList<(string Layer, long[] Counts)> layers)
    {
        InspectPlots.SortedSelections(Path.Combine(dir, "selections.png"), layers);
        md.AppendLine("## Distribution of selections over experts").AppendLine();
        md.AppendLine("How often each expert was selected, most selected first, on log scales: a flat line is an even use of all experts, a steep one "
            + "a few experts taking most selections; where a line ends, the remaining experts were never selected.").AppendLine();
        md.AppendLine("![selections per expert](selections.png)").AppendLine();
    }
}
