// The n-gram baselines an evaluation reports beside the model's loss: interpolated Kneser–Ney models of
// order 3 and 5 (see KneserNey) fitted on the training split and scored on exactly the evaluation's windows,
// each token conditioning only on the tokens of its own window before it, as the model's does. The fit is
// made once per Dataset, on first use; scores are cached in a small JSON file (a run's baselines.json) under
// a SHA-256 of the training tokens, the tokenizer and the windows, so a resumed run or `peer eval` reads them
// back without refitting. A cache file that cannot be read is ignored and rewritten, atomically.
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Peer.Training;

/// <summary>Mean losses of the n-gram baselines on an evaluation's windows, in nats per scored token (the model's unit).</summary>
/// <param name="Trigram">Interpolated modified Kneser–Ney of order 3.</param>
/// <param name="FiveGram">Interpolated modified Kneser–Ney of order 5.</param>
public sealed record BaselineLosses(double Trigram, double FiveGram);

/// <summary>The Kneser–Ney baselines of a <see cref="Dataset"/>: fitted on its training split on first use, scored on any windows, cached.</summary>
/// <example><code>
/// var data = Dataset.Create(Corpus.Load(null), new ByteTokenizer(), context: 64);
/// int[][] windows = BatchSampler.Tile(data.Validation, context: 64);
/// BaselineLosses b = data.Baselines.Score(windows); // b.Trigram, b.FiveGram in nats per token
/// </code></example>
public sealed class NGramBaselines
{
    /// <summary>The highest order fitted (the 5-gram).</summary>
    public const int MaxOrder = 5;
    // Part of every cache key: a change to the model's definition must not read old figures.
    const string Format = "peer-ngram-baselines-1 (interpolated modified Kneser-Ney, orders 3 and 5)";

    readonly Dataset data;
    readonly Lazy<KneserNey> model;
    readonly Lazy<byte[]> trainHash;

    internal NGramBaselines(Dataset data)
    {
        this.data = data;
        model = new(() => KneserNey.Fit(data.Train, data.Tokenizer.VocabSize, MaxOrder));
        trainHash = new(() => SHA256.HashData(MemoryMarshal.AsBytes(data.Train.AsSpan())));
    }

    /// <summary>The JSON file where scores are cached (a run's <c>baselines.json</c>); null (the default) keeps them in memory only.</summary>
    public string? CacheFile { get; set; }

    /// <summary>The model of order <see cref="MaxOrder"/> fitted on the training split (fitted now if it was not yet).</summary>
    public KneserNey Model => model.Value;

    /// <summary>The trigram and 5-gram losses on <paramref name="windows"/>: each window's tokens after its first are scored given the tokens of
    /// that window before them; the mean is over all scored tokens. Read from <see cref="CacheFile"/> when it holds these windows.</summary>
    /// <exception cref="ArgumentException">No window has two tokens, or a token is outside the vocabulary.</exception>
    public BaselineLosses Score(IReadOnlyList<int[]> windows)
    {
        ArgumentNullException.ThrowIfNull(windows);
        long scored = windows.Sum(w => (long)Math.Max(0, w.Length - 1));
        if (scored == 0) throw new ArgumentException($"windows: {windows.Count} windows hold no token to score; expected windows of at least 2 tokens", nameof(windows));
        string key = Key(windows);
        var cache = ReadCache();
        if (cache.TryGetValue(key, out var cached)) return cached;
        double tri = 0, five = 0;
        foreach (var w in windows)
        {
            tri += Model.NegativeLogLikelihood(w, 3);
            five += Model.NegativeLogLikelihood(w, 5);
        }
        var result = new BaselineLosses(tri / scored, five / scored);
        if (CacheFile != null)
        {
            cache[key] = result;
            WriteCache(cache);
        }
        return result;
    }

    string Key(IReadOnlyList<int[]> windows)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(Encoding.UTF8.GetBytes($"{Format}\n{data.Tokenizer.Name}\n{data.Tokenizer.VocabSize}\n{data.Train.Length}\n{windows.Count}\n"));
        h.AppendData(trainHash.Value);
        foreach (var w in windows)
        {
            h.AppendData(BitConverter.GetBytes(w.Length));
            h.AppendData(MemoryMarshal.AsBytes(w.AsSpan()));
        }
        return Convert.ToHexString(h.GetHashAndReset()).ToLowerInvariant();
    }

    Dictionary<string, BaselineLosses> ReadCache()
    {
        var entries = new Dictionary<string, BaselineLosses>();
        if (CacheFile == null || !File.Exists(CacheFile)) return entries;
        try
        {
            // Anything unexpected (a torn or edited file, another format) reads as no entry: recomputed, and the file rewritten.
            using var doc = JsonDocument.Parse(File.ReadAllText(CacheFile));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.String
                || format.GetString() != Format || !root.TryGetProperty("entries", out var all) || all.ValueKind != JsonValueKind.Object)
                return entries;
            foreach (var entry in all.EnumerateObject())
                if (Loss(entry.Value, "trigram") is { } tri && Loss(entry.Value, "five_gram") is { } five)
                    entries[entry.Name] = new BaselineLosses(tri, five);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
        }
        return entries;
    }

    static double? Loss(JsonElement entry, string name) =>
        entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number
        && v.TryGetDouble(out double x) && double.IsFinite(x) && x > 0 ? x : null;

    void WriteCache(Dictionary<string, BaselineLosses> entries)
    {
        var all = new JsonObject();
        foreach (var (key, b) in entries) all[key] = new JsonObject { ["trigram"] = b.Trigram, ["five_gram"] = b.FiveGram };
        var root = new JsonObject { ["format"] = Format, ["corpus"] = data.CorpusName, ["tokenizer"] = data.Tokenizer.Name, ["entries"] = all };
        try
        {
            AtomicFile.WriteAllText(CacheFile!, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A cache that cannot be written only costs a refit next time.
        }
    }
}
