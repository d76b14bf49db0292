// The language model's inspection: validation windows through the model with a RetrievalTrace, the shared per-layer
// sections, the most used experts' top-activating contexts (the text before the token, the token that selected the expert
// marked ⟦so⟧), and, when experts are switched off, the change in loss per context: on the positions where an edited layer
// had retrieved a switched-off expert, and on the rest.
using System.Text;
using Peer.Nn;

namespace Peer.Training;

public static partial class Inspector
{
    /// <summary>
    /// Runs <paramref name="model"/> over up to <paramref name="windows"/> validation windows of <paramref name="data"/>, recording every
    /// retrieval, and writes <c>report.md</c> and its figures to <paramref name="dir"/>; with <paramref name="disable"/> (layer name to
    /// expert ids) it then switches those experts off, runs the windows again and reports the change in loss per context.
    /// </summary>
    /// <returns>The report's path.</returns>
    public static string Language(LanguageModel model, Dataset data, int windows, string dir, InspectOptions? options = null,
        IReadOnlyDictionary<string, SortedSet<int>>? disable = null)
    {
        options ??= new InspectOptions();
        Check.Positive(windows, nameof(windows));
        Directory.CreateDirectory(dir);
        int context = model.Config.Context, w = context + 1;
        var flat = BatchSampler.Windows(data.Validation, context, windows, out int count);
        if (count == 0) throw new CorpusException($"corpus: the validation split ({data.Validation.Length} tokens) is shorter than one window of {w}");
        var layers = model.PeerLayers().ToArray();
        double[] before;
        LayerRetrievals[] logs;
        using (var trace = new RetrievalTrace(layers))
        {
            before = TokenLosses(model, flat, count, trace);
            logs = trace.Layers.ToArray();
        }
        var tok = data.Tokenizer;
        var md = new StringBuilder();
        md.AppendLine("# Inspection of a language model").AppendLine();
        md.AppendLine($"d = {model.Config.DModel}, {model.Config.Layers} blocks [{string.Join(", ", model.Config.BlockKinds())}], context {context}, "
            + $"{model.ParameterCount:N0} parameters. Inspected on {count} validation windows ({count * context:N0} tokens) of {data.CorpusName} "
            + $"({tok.Name} tokens): loss {before.Average():F4} nats per token.").AppendLine();
        if (layers.Length == 0)
        {
            md.AppendLine("The model has no PEER layer: there are no experts to inspect.");
            return WriteReport(dir, md);
        }
        string Context(ExpertSelection s)
        {
            int start = s.Sample * w;
            int from = Math.Max(0, s.Position - 24);
            string left = tok.Decode(flat[(start + from)..(start + s.Position)]);
            string mid = tok.Decode([flat[start + s.Position]]);
            string right = tok.Decode(flat[(start + s.Position + 1)..(start + Math.Min(w, s.Position + 6))]);
            return Escape(left[Math.Max(0, left.Length - 40)..]) + "⟦" + Escape(mid) + "⟧" + Escape(right);
        }

        var all = new List<(string, long[])>();
        md.AppendLine("## PEER layers").AppendLine();
        foreach (var ((name, layer), log) in layers.Zip(logs))
        {
            var counts = LayerBasics(md, dir, name, layer, log);
            all.Add((name, counts));
            var top = MostUsed(counts, options.TopExperts);
            var best = ExpertStatistics.TopSelections(log, top, options.TopContexts);
            md.AppendLine($"**Most used experts.** The {top.Length} most selected experts with the contexts where they took the largest router weight "
                + "(the text before the token, the token that selected the expert marked ⟦so⟧, and a few tokens after it):").AppendLine();
            md.AppendLine(Row("expert", "selections", "top-activating contexts (router weight)"));
            md.AppendLine(Row("---", "---", "---"));
            foreach (int e in top)
                md.AppendLine(Row(e, counts[e].ToString("N0", Inv), string.Join("<br>", best[e].Select(s => $"`{Context(s)}` ({s.Weight:F2})"))));
            md.AppendLine();
        }
        SelectionsFigure(md, dir, all);
        if (disable is { Count: > 0 }) EditSection(md, model, layers, logs, disable, flat, count, before, Context);
        return WriteReport(dir, md);
    }

    // Text for a Markdown code span inside a table: no line breaks, pipes or backticks.
    static string Escape(string s) => s.Replace("\r", "").Replace("\n", "⏎").Replace("|", "¦").Replace("`", "'");

    // Per-token cross-entropy (nats) of every window's last `context` tokens, in evaluation mode without gradients, announcing each
    // batch to the trace (sample = window, position = token).
    static double[] TokenLosses(LanguageModel model, int[] flat, int count, RetrievalTrace? trace)
    {
        int context = model.Config.Context, w = context + 1, v = model.Config.VocabSize, batch = 16;
        var losses = new double[count * context];
        using var mode = new EvalMode(model);
        using var noGrad = model.Device.Tape.NoGrad();
        for (int first = 0; first < count; first += batch)
        {
            int n = Math.Min(batch, count - first);
            var inputs = new int[n * context];
            for (int i = 0; i < n; i++) Array.Copy(flat, (first + i) * w, inputs, i * context, context);
            trace?.BeginBatch(first, n, context);
            float[] logits;
            using (Scope.Begin()) logits = model.Forward(Tensor.FromArray(model.Device, inputs, n, context)).ToArray();
            for (int r = 0; r < n * context; r++)
            {
                int target = flat[(first + r / context) * w + r % context + 1];
                double max = double.NegativeInfinity, sum = 0;
                for (int c = 0; c < v; c++) max = Math.Max(max, logits[r * v + c]);
                for (int c = 0; c < v; c++) sum += Math.Exp(logits[r * v + c] - max);
                losses[first * context + r] = max + Math.Log(sum) - logits[r * v + target];
            }
        }
        return losses;
    }

    static void EditSection(StringBuilder md, LanguageModel model, (string Name, PeerLayer Layer)[] layers, LayerRetrievals[] logs,
        IReadOnlyDictionary<string, SortedSet<int>> disable, int[] flat, int count, double[] before, Func<ExpertSelection, string> context)
    {
        int ctx = model.Config.Context;
        // The positions where some head of an edited layer retrieved a switched-off expert before the edit.
        var affected = new bool[count * ctx];
        foreach (var log in logs)
            if (disable.TryGetValue(log.Name, out var off))
                foreach (var (sample, position, experts, _) in log.Rows())
                    if (experts.Any(off.Contains)) affected[sample * ctx + position] = true;
        double[] after;
        try
        {
            ExpertEditing.Apply(layers, disable);
            after = TokenLosses(model, flat, count, null);
        }
        finally
        {
            ExpertEditing.Apply(layers, new Dictionary<string, SortedSet<int>>());
        }
        static string Mean(IEnumerable<double> v) => v.Any() ? v.Average().ToString("F4", Inv) : "–";
        var hit = Enumerable.Range(0, affected.Length).Where(i => affected[i]).ToArray();
        var rest = Enumerable.Range(0, affected.Length).Where(i => !affected[i]).ToArray();
        md.AppendLine("## Editing: experts switched off").AppendLine();
        md.AppendLine(string.Join("; ", disable.Select(p => $"{p.Key}: {p.Value.Count} experts ({string.Join(", ", p.Value.Take(16))}{(p.Value.Count > 16 ? ", ..." : "")})"))
            + ". Retrieval then takes each head's next best experts, so every edited layer is exactly a PEER layer over the experts left.").AppendLine();
        md.AppendLine(Row("positions", "tokens", "loss before", "loss after", "change"));
        md.AppendLine(Row("---", "---", "---", "---", "---"));
        foreach (var (label, set) in new[] { ("all", Enumerable.Range(0, affected.Length).ToArray()), ("where a switched-off expert had been retrieved", hit), ("the others", rest) })
            md.AppendLine(Row(label, set.Length.ToString("N0", Inv), Mean(set.Select(i => before[i])), Mean(set.Select(i => after[i])),
                set.Length == 0 ? "–" : set.Average(i => after[i] - before[i]).ToString("+0.0000;-0.0000", Inv)));
        md.AppendLine();
        var worst = hit.OrderByDescending(i => after[i] - before[i]).Take(8).ToArray();
        if (worst.Length > 0)
        {
            md.AppendLine("The contexts whose next-token loss rose most (the token whose retrieval changed marked; loss before → after):").AppendLine();
            foreach (int i in worst)
                md.AppendLine($"- `{context(new ExpertSelection(i / ctx, i % ctx, "", 0, 0, 0))}` {before[i]:F2} → {after[i]:F2}");
            md.AppendLine();
        }
    }
}
