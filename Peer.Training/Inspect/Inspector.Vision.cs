// The image classifier's inspection: accuracy on the images inspected, the shared per-layer sections, the most used experts'
// top-activating images (the patch that selected the expert framed in red), and the class x expert specialisation: each
// expert's class purity and entropy, weighted by use, against the same retrievals with the labels shuffled over the images.
using System.Text;
using Peer.Nn;

namespace Peer.Training;

public static partial class Inspector
{
    /// <summary>
    /// Runs <paramref name="trainer"/>'s model over <paramref name="split"/> (named <paramref name="splitName"/> in the report), recording
    /// every retrieval, and writes <c>report.md</c> and its figures to <paramref name="dir"/>.
    /// </summary>
    /// <param name="trainer">The trained classifier and its data.</param>
    /// <param name="split">The images inspected.</param>
    /// <param name="splitName">Their name in the report (test, validation).</param>
    /// <param name="dir">The report's folder (created).</param>
    /// <param name="options">What to show; null: the defaults.</param>
    /// <param name="disable">Experts to switch off afterwards (layer name to ids): the report then gives the change in accuracy per class.</param>
    /// <returns>The report's path.</returns>
    public static string Vision(VisionTrainer trainer, ImageSplit split, string splitName, string dir, InspectOptions? options = null,
        IReadOnlyDictionary<string, SortedSet<int>>? disable = null)
    {
        options ??= new InspectOptions();
        Directory.CreateDirectory(dir);
        var cfg = trainer.Config.Model;
        var classes = trainer.Data.Classes;
        var layers = trainer.Model.PeerLayers().ToArray();
        using var trace = new RetrievalTrace(layers);
        var eval = trainer.Evaluate(split, trace);
        var labels = split.Labels.Select(l => (int)l).ToArray();

        var md = new StringBuilder();
        md.AppendLine($"# Inspection of an image classifier at step {trainer.StepCount}").AppendLine();
        md.AppendLine($"{cfg.TokenMixing} model, d = {cfg.DModel}, {cfg.Layers} blocks [{string.Join(", ", cfg.BlockKinds())}], {cfg.Tokens} patches of "
            + $"{cfg.PatchSize}x{cfg.PatchSize} pixels per image, {trainer.Model.ParameterCount:N0} parameters. Inspected on the {split.Count:N0} {splitName} "
            + $"images of {trainer.Data.Name}: accuracy {eval.Accuracy:P2}, loss {eval.Loss:F4}"
            + (trainer.Config.Train.EvalFlip ? " on the images alone (the run's own evaluation, eval_flip, averages each image with its mirror)." : ".")).AppendLine();
        md.AppendLine(Row(["class", .. classes]));
        md.AppendLine(Row(Enumerable.Repeat((object)"---", classes.Length + 1).ToArray()));
        md.AppendLine(Row(["accuracy", .. eval.ClassAccuracy.Select(a => (object)a.ToString("P1", Inv))])).AppendLine();
        if (layers.Length == 0)
        {
            md.AppendLine("The model has no PEER layer: there are no experts to inspect.");
            return WriteReport(dir, md);
        }

        var all = new List<(string, long[])>();
        md.AppendLine("## PEER layers").AppendLine();
        foreach (var (name, layer) in layers)
        {
            var log = trace[name];
            var counts = LayerBasics(md, dir, name, layer, log);
            all.Add((name, counts));
            var matrix = ClassExpertMatrix.From(log, labels, classes.Length);
            var top = MostUsed(counts, options.TopExperts);
            ClassSection(md, dir, name, matrix, ClassExpertMatrix.Shuffled(log, labels, classes.Length, options.Seed), counts, classes);
            TopImages(md, dir, name, log, top, counts, matrix, split, cfg, classes, options.TopContexts);
        }
        SelectionsFigure(md, dir, all);
        if (disable is { Count: > 0 }) VisionEditSection(md, trainer, layers, split, eval, disable);
        return WriteReport(dir, md);
    }

    static void VisionEditSection(StringBuilder md, VisionTrainer trainer, (string Name, PeerLayer Layer)[] layers, ImageSplit split,
        VisionEvalResult before, IReadOnlyDictionary<string, SortedSet<int>> disable)
    {
        VisionEvalResult after;
        try
        {
            ExpertEditing.Apply(layers, disable);
            after = trainer.Evaluate(split, flip: false); // as the traced evaluation before it: the images alone
        }
        finally
        {
            ExpertEditing.Apply(layers, new Dictionary<string, SortedSet<int>>());
        }
        var classes = trainer.Data.Classes;
        md.AppendLine("## Editing: experts switched off").AppendLine();
        md.AppendLine(string.Join("; ", disable.Select(p => $"{p.Key}: {p.Value.Count} experts ({string.Join(", ", p.Value.Take(16))}{(p.Value.Count > 16 ? ", ..." : "")})"))
            + $". Accuracy {before.Accuracy:P2} → {after.Accuracy:P2}.").AppendLine();
        md.AppendLine(Row("class", "before", "after", "change (points)"));
        md.AppendLine(Row("---", "---", "---", "---"));
        for (int c = 0; c < classes.Length; c++)
            md.AppendLine(Row(classes[c], before.ClassAccuracy[c].ToString("P1", Inv), after.ClassAccuracy[c].ToString("P1", Inv),
                (100 * (after.ClassAccuracy[c] - before.ClassAccuracy[c])).ToString("+0.0;-0.0", Inv)));
        md.AppendLine();
    }

    static string WriteReport(string dir, StringBuilder md)
    {
        string path = Path.Combine(dir, "report.md");
        AtomicFile.WriteAllText(path, md.ToString());
        return path;
    }

    static void ClassSection(StringBuilder md, string dir, string name, ClassExpertMatrix m, ClassExpertMatrix baseline, long[] counts, string[] classes)
    {
        var (purity, entropy) = m.WeightedMeans();
        var (basePurity, baseEntropy) = baseline.WeightedMeans();
        // Experts with enough selections for their purity to mean something, compared expert by expert with the baseline.
        const int minSelections = 50;
        var solid = Enumerable.Range(0, m.Experts).Where(i => counts[i] >= minSelections).ToArray();
        int purer = solid.Count(i => m.Purity(i) > baseline.Purity(i));
        var byClass = solid.GroupBy(m.Dominant).ToDictionary(g => g.Key, g => g.Count());
        md.AppendLine($"**Class specialisation.** Each expert's purity (the largest share of its router weight one class takes) and entropy over the "
            + $"{classes.Length} classes (bits; {Math.Log2(classes.Length):F2} is no preference), averaged over experts weighted by their router weight, "
            + "against a random-routing baseline: the same retrievals with the images' labels shuffled, so every expert keeps its amount of use and "
            + "loses only its link to the class.").AppendLine();
        md.AppendLine(Row("", "weighted purity", "weighted entropy (bits)"));
        md.AppendLine(Row("---", "---", "---"));
        md.AppendLine(Row("trained routing", purity.ToString("F3", Inv), entropy.ToString("F3", Inv)));
        md.AppendLine(Row("random-routing baseline", basePurity.ToString("F3", Inv), baseEntropy.ToString("F3", Inv))).AppendLine();
        md.AppendLine($"Of the {solid.Length:N0} experts selected at least {minSelections} times, {purer:N0} are purer than under the baseline. Their dominant "
            + "classes: " + string.Join(", ", Enumerable.Range(0, classes.Length).Select(c => $"{classes[c]} {byClass.GetValueOrDefault(c)}")) + ".").AppendLine();
        var shown = MostUsed(counts, 40);
        string png = $"classes-{Slug(name)}.png";
        InspectPlots.ClassShares(Path.Combine(dir, png), name, m, shown, classes);
        md.AppendLine($"![class shares of the most used experts]({png})").AppendLine();
        md.AppendLine("The experts most specific to each class (ranked by the class's weight on the expert times the share of the expert's weight it is; "
            + "`peer vision eval --disable-class CLASS` switches them off):").AppendLine();
        md.AppendLine(Row("class", "most specific experts (purity)"));
        md.AppendLine(Row("---", "---"));
        for (int c = 0; c < classes.Length; c++)
            md.AppendLine(Row(classes[c], string.Join(", ", m.MostSpecific(c, 6).Select(i => $"{i} ({m.Purity(i):F2})"))));
        md.AppendLine();
    }

    static void TopImages(StringBuilder md, string dir, string name, LayerRetrievals log, int[] top, long[] counts, ClassExpertMatrix m,
        ImageSplit split, VisionModelConfig cfg, string[] classes, int perExpert)
    {
        var best = ExpertStatistics.TopSelections(log, top, perExpert);
        int grid = cfg.ImageSize / cfg.PatchSize;
        var rows = top.Select(e => ($"expert {e}", (IReadOnlyList<(byte[], int, (int, int, int)?)>)best[e].Select(s =>
        {
            var pixels = split.Pixels.AsSpan(s.Sample * split.Size, split.Size).ToArray();
            (int, int, int)? mark = ((s.Position % grid) * cfg.PatchSize, (s.Position / grid) * cfg.PatchSize, cfg.PatchSize);
            return (pixels, cfg.ImageSize, mark);
        }).ToList())).ToList();
        string png = $"top-{Slug(name)}.png";
        InspectPlots.Tiles(Path.Combine(dir, png), rows);
        md.AppendLine($"**Most used experts.** The {top.Length} most selected experts, each with the {perExpert} images where it took the largest router "
            + "weight (the patch that selected it framed in red):").AppendLine();
        md.AppendLine(Row("expert", "selections", "dominant class (share)", "entropy (bits)", "classes of its top images"));
        md.AppendLine(Row("---", "---", "---", "---", "---"));
        foreach (int e in top)
            md.AppendLine(Row(e, counts[e].ToString("N0", Inv), $"{classes[m.Dominant(e)]} ({m.Purity(e):F2})", m.Entropy(e).ToString("F2", Inv),
                string.Join(", ", best[e].Select(s => classes[split.Labels[s.Sample]]))));
        md.AppendLine().AppendLine($"![top-activating images]({png})").AppendLine();
    }
}
