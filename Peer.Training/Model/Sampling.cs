// Text generation: the model reads the last `context` tokens, and the next token is drawn from its last
// row of logits divided by the temperature, restricted to the top-k, with a seeded SplitMix64 stream, so
// the same seed gives the same text. Temperature 0 is greedy (ties go to the smaller id).
namespace Peer.Training;

/// <summary>Sampling of continuations from a <see cref="LanguageModel"/>.</summary>
public static class Sampling
{
    /// <summary>Continues <paramref name="prompt"/> by <paramref name="length"/> tokens; returns only the new tokens.</summary>
    /// <param name="model">The model (run in evaluation mode, without recording gradients; each module is then left in the mode it was in).</param>
    /// <param name="prompt">Token ids to continue (at least one).</param>
    /// <param name="length">Tokens to generate.</param>
    /// <param name="temperature">Divides the logits; 0 picks the most likely token.</param>
    /// <param name="topK">Only the <paramref name="topK"/> most likely tokens are drawn from; 0 means all.</param>
    /// <param name="seed">Seed of the draws.</param>
    /// <exception cref="ArgumentException">Negative length, temperature or top-k, an empty prompt, or a prompt id outside the vocabulary.</exception>
    public static int[] Generate(this LanguageModel model, int[] prompt, int length, float temperature = 1f, int topK = 0, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        int vocab = model.Config.VocabSize;
        Check.That(length >= 0, nameof(length), length, "a non-negative token count");
        Check.That(temperature >= 0 && float.IsFinite(temperature), nameof(temperature), temperature, "0 (greedy) or a positive temperature");
        Check.That(topK >= 0, nameof(topK), topK, "0 (all tokens) or a positive count");
        Check.That(prompt.Length > 0 && prompt.All(i => i >= 0 && i < vocab), nameof(prompt), $"{prompt.Length} ids", $"at least one token id, each in [0, {vocab})");
        var tokens = new List<int>(prompt);
        int start = tokens.Count;
        using var mode = new EvalMode(model);
        ulong state = seed;
        using (model.Device.Tape.NoGrad())
        {
            for (int n = 0; n < length; n++)
            {
                float[] row;
                using (Scope.Begin())
                {
                    int t = Math.Min(model.Config.Context, tokens.Count);
                    using var input = Tensor.FromArray(model.Device, tokens.GetRange(tokens.Count - t, t).ToArray(), 1, t);
                    var logits = model.Forward(input); // [t, V]
                    row = logits.ToArray()[((t - 1) * vocab)..];
                }
                tokens.Add(Pick(row, temperature, topK, ref state));
            }
        }
        return tokens.GetRange(start, tokens.Count - start).ToArray();
    }

    /// <summary>Draws one id from <paramref name="logits"/> with the temperature and top-k rules of <see cref="Generate"/>.</summary>
    public static int Pick(float[] logits, float temperature, int topK, ref ulong state)
    {
        int v = logits.Length;
        // Order by logit descending, then id ascending: the ranking (and the greedy pick) is deterministic.
        var order = Enumerable.Range(0, v).OrderByDescending(i => logits[i]).ThenBy(i => i).ToArray();
        if (temperature == 0) return order[0];
        int keep = topK == 0 ? v : Math.Min(topK, v);
        double max = logits[order[0]] / (double)temperature;
        var weights = new double[keep];
        double total = 0;
        for (int j = 0; j < keep; j++) total += weights[j] = Math.Exp(logits[order[j]] / (double)temperature - max);
        double u = (BatchSampler.Next(ref state) >> 11) * (1.0 / (1UL << 53)) * total;
        for (int j = 0; j < keep; j++)
        {
            u -= weights[j];
            if (u < 0) return order[j];
        }
        return order[keep - 1];
    }
}
