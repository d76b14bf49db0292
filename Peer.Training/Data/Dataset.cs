// Token streams for training and validation, and the seeded sampler of random windows. The split is by
// position: the last 5% of the tokens (at least one window) validate, the rest train, so it depends only
// on the corpus and the tokenizer. The sampler's whole state is one 64-bit word, saved in checkpoints.
namespace Peer.Training;

/// <summary>A tokenized corpus split into training and validation streams.</summary>
public sealed class Dataset
{
    /// <summary>Fraction of the tokens, taken from the end, that validate.</summary>
    public const double ValidationFraction = 0.05;

    /// <summary>Training tokens.</summary>
    public int[] Train { get; }
    /// <summary>Validation tokens.</summary>
    public int[] Validation { get; }
    /// <summary>The corpus name.</summary>
    public string CorpusName { get; }
    /// <summary>The tokenizer used.</summary>
    public ITokenizer Tokenizer { get; }
    /// <summary>The Kneser–Ney n-gram baselines fitted on <see cref="Train"/> (on first use).</summary>
    public NGramBaselines Baselines { get; }

    Dataset(string corpusName, ITokenizer tokenizer, int[] train, int[] validation)
    {
        CorpusName = corpusName;
        Tokenizer = tokenizer;
        Train = train;
        Validation = validation;
        Baselines = new NGramBaselines(this);
    }

    /// <summary>Tokenizes <paramref name="corpus"/> and splits it so that each part holds at least one window of <paramref name="context"/> + 1 tokens.</summary>
    /// <exception cref="CorpusException">The corpus is too small for a training and a validation window.</exception>
    public static Dataset Create(Corpus corpus, ITokenizer tokenizer, int context)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokenizer);
        int[] tokens = tokenizer.Encode(corpus.Text);
        int window = context + 1;
        if (tokens.Length < 2 * window)
            throw new CorpusException($"corpus: {corpus.Name} has {tokens.Length} tokens ({tokenizer.Name}); need at least {2 * window} (one window of context {context} + 1 for training and one for validation)");
        int val = Math.Max(window, (int)(tokens.Length * ValidationFraction));
        return new Dataset(corpus.Name, tokenizer, tokens[..^val], tokens[^val..]);
    }

    /// <summary>The unigram entropy of the training tokens in nats: the loss of a model that ignores context.</summary>
    public double UnigramEntropy()
    {
        var counts = new Dictionary<int, long>();
        foreach (int t in Train) counts[t] = counts.GetValueOrDefault(t) + 1;
        double n = Train.Length, h = 0;
        foreach (long c in counts.Values) h -= c / n * Math.Log(c / n);
        return h;
    }
}

/// <summary>Draws random windows <c>[B, T + 1]</c> from a token stream with a SplitMix64 generator whose state can be saved.</summary>
public sealed class BatchSampler
{
    readonly int[] tokens;
    readonly int context;

    /// <summary>The generator state; restoring it replays the same batches.</summary>
    public ulong State { get; set; }

    /// <summary>A sampler over <paramref name="tokens"/> of windows of <paramref name="context"/> + 1 tokens.</summary>
    /// <exception cref="CorpusException">The stream is shorter than one window.</exception>
    public BatchSampler(int[] tokens, int context, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Length < context + 1) throw new CorpusException($"corpus: {tokens.Length} tokens is smaller than one window of {context + 1}");
        this.tokens = tokens;
        this.context = context;
        State = seed;
    }

    /// <summary>The next 64-bit value of SplitMix64.</summary>
    public static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next batch: <paramref name="batch"/> windows, row-major <c>[batch, context + 1]</c>.</summary>
    public int[] NextBatch(int batch)
    {
        int w = context + 1;
        var result = new int[batch * w];
        ulong positions = (ulong)(tokens.Length - w + 1);
        ulong s = State;
        for (int b = 0; b < batch; b++)
        {
            int start = (int)(Next(ref s) % positions);
            Array.Copy(tokens, start, result, b * w, w);
        }
        State = s;
        return result;
    }

    /// <summary>Every token of <paramref name="tokens"/> after the first, scored once: windows of <paramref name="context"/> + 1 tokens starting every
    /// <paramref name="context"/> tokens (each window's first token is the last of the one before, and only conditions), then one shorter window
    /// for the tail when tokens remain.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The context is less than 1.</exception>
    public static int[][] Tile(int[] tokens, int context)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (context < 1) throw new ArgumentOutOfRangeException(nameof(context), context, "expected at least 1");
        var windows = new List<int[]>(tokens.Length / context + 1);
        for (int start = 0; start < tokens.Length - 1; start += context)
            windows.Add(tokens[start..Math.Min(tokens.Length, start + context + 1)]);
        return windows.ToArray();
    }

    /// <summary>At most <paramref name="maxWindows"/> windows spread evenly over <paramref name="tokens"/>: a fixed evaluation set,
    /// row-major <c>[count, context + 1]</c>.</summary>
    public static int[] Windows(int[] tokens, int context, int maxWindows, out int count)
    {
        int w = context + 1;
        count = Math.Max(0, Math.Min(maxWindows, tokens.Length / w));
        var result = new int[count * w];
        if (count == 0) return result;
        long stride = (tokens.Length - w) / Math.Max(1, count - 1);
        for (int i = 0; i < count; i++) Array.Copy(tokens, i * stride, result, i * w, w);
        return result;
    }
}
