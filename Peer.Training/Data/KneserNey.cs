// Interpolated modified Kneser–Ney n-gram model over token ids (Chen & Goodman, "An Empirical Study of
// Smoothing Techniques for Language Modeling", 1998, as KenLM builds it): the count table a trained model
// should beat. Level k holds every k-gram of the training stream with its count and its continuation count
// (how many distinct tokens precede it). A model of order n scores a token with level n's counts and the
// lower levels' continuation counts, each level with three discounts D1, D2, D3+ from its count-of-counts,
// and interpolates down to the uniform distribution over the vocabulary, so every token has non-zero
// probability. A token preceded by only m < n - 1 tokens of its window is scored by the model of order
// m + 1 (counts at level m + 1), so, like the language model, nothing conditions across a window start.
namespace Peer.Training;

/// <summary>An interpolated modified Kneser–Ney n-gram model of every order up to <see cref="MaxOrder"/>, fitted on a token stream.</summary>
/// <remarks>
/// For a history <c>h</c> of <c>k - 1</c> tokens and a token <c>w</c>, level <c>k</c> gives
/// <c>p_k(w | h) = (max(c(hw) - D(c(hw)), 0) + (D1 N1(h) + D2 N2(h) + D3 N3+(h)) p_(k-1)(w | h')) / sum_x c(hx)</c>, where
/// <c>h'</c> drops the oldest token of <c>h</c>, <c>Nj(h)</c> counts the tokens <c>x</c> with <c>c(hx) = j</c> (<c>N3+</c>: at least 3),
/// <c>p_0 = 1 / V</c>, and an unseen history (<c>sum_x c(hx) = 0</c>) passes <c>p_(k-1)</c> through. <c>c</c> is the count at the top
/// level and the continuation count <c>|{x : c(xhw) &gt; 0}|</c> below it. The discounts of each level and kind come from its
/// count-of-counts <c>n1..n4</c>: <c>Y = n1 / (n1 + 2 n2)</c>, <c>Dj = j - (j + 1) Y n(j+1) / nj</c>; where some <c>nj</c> is 0 or some
/// <c>Dj</c> falls outside <c>(0, j]</c>, that level uses 0.5, 1, 1.5 (KenLM's <c>--discount_fallback</c>).
/// </remarks>
/// <example><code>
/// var kn = KneserNey.Fit(data.Train, data.Tokenizer.VocabSize, maxOrder: 5);
/// double nats = kn.NegativeLogLikelihood(window, order: 3) / (window.Length - 1);
/// </code></example>
public sealed class KneserNey
{
    /// <summary>The largest order <see cref="Fit"/> accepts.</summary>
    public const int OrderLimit = 16;

    readonly LongIntMap[] index;   // [k]: (node of the (k-1)-gram prefix) * V + last token -> node of the k-gram; level 0 is the root, node 0
    readonly int[][] count;        // [k][node]: occurrences of the k-gram in the training stream
    readonly int[][] continuation; // [k][node]: distinct tokens seen before the k-gram (k < MaxOrder)
    readonly int[][] total;        // [j][node of a j-gram as a history]: sum of the counts of its followers at level j + 1
    readonly double[][] backoff;   // [j][node]: D1 N1 + D2 N2 + D3 N3+ of those counts
    readonly int[][] totalCont;    // the same over continuation counts (j < MaxOrder - 1)
    readonly double[][] backoffCont;
    readonly double[,,] discounts; // [k, continuation ? 1 : 0, j - 1]: Dj

    /// <summary>Vocabulary size <c>V</c>: every token id is in <c>[0, V)</c>.</summary>
    public int VocabSize { get; }
    /// <summary>The highest order fitted; any order from 1 to it can score.</summary>
    public int MaxOrder { get; }

    KneserNey(int vocabSize, int maxOrder)
    {
        VocabSize = vocabSize;
        MaxOrder = maxOrder;
        index = new LongIntMap[maxOrder + 1];
        count = new int[maxOrder + 1][];
        continuation = new int[maxOrder + 1][];
        total = new int[maxOrder][];
        backoff = new double[maxOrder][];
        totalCont = new int[maxOrder][];
        backoffCont = new double[maxOrder][];
        discounts = new double[maxOrder + 1, 2, 3];
    }

    /// <summary>Counts every k-gram (k = 1..<paramref name="maxOrder"/>) of <paramref name="tokens"/> and estimates the discounts.</summary>
    /// <exception cref="ArgumentException">The stream is empty, a token is outside <c>[0, vocabSize)</c>, or an argument is out of range.</exception>
    public static KneserNey Fit(ReadOnlySpan<int> tokens, int vocabSize, int maxOrder)
    {
        if (vocabSize < 1) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "expected at least 1");
        if (maxOrder is < 1 or > OrderLimit) throw new ArgumentOutOfRangeException(nameof(maxOrder), maxOrder, $"expected 1 to {OrderLimit}");
        if (tokens.IsEmpty) throw new ArgumentException("tokens: the training stream is empty; expected at least one token", nameof(tokens));
        for (int i = 0; i < tokens.Length; i++)
            if ((uint)tokens[i] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"token {i} is outside [0, {vocabSize})");

        var kn = new KneserNey(vocabSize, maxOrder);
        int n = tokens.Length;
        var histories = new int[maxOrder + 1][];
        // prev[i]: node of the (k-1)-gram ending at position i (the root at level 0); a level-k pass reads the prefix of the
        // k-gram ending at i at prev[i - 1] and its suffix, whose continuation count a new k-gram raises, at prev[i].
        int[] prev = new int[n], cur = new int[n];
        for (int k = 1; k <= maxOrder && k <= n; k++)
        {
            int bound = n - k + 1;
            var map = new LongIntMap(k == 1 ? Math.Min(n, vocabSize) : Math.Min(bound, kn.count[k - 1].Length));
            var counts = new int[bound];
            var hist = new int[bound];
            int[]? suffixCont = k > 1 ? kn.continuation[k - 1] = new int[kn.count[k - 1].Length] : null;
            for (int i = k - 1; i < n; i++)
            {
                int h = k == 1 ? 0 : prev[i - 1];
                int id = map.GetOrAdd((long)h * vocabSize + tokens[i], out bool added);
                if (added)
                {
                    hist[id] = h;
                    if (suffixCont != null) suffixCont[prev[i]]++;
                }
                counts[id]++;
                cur[i] = id;
            }
            kn.index[k] = map;
            kn.count[k] = counts[..map.Count];
            histories[k] = hist[..map.Count];
            (prev, cur) = (cur, prev);
        }
        for (int k = 1; k <= maxOrder; k++)
        {
            if (kn.count[k] == null) { kn.index[k] = new LongIntMap(1); kn.count[k] = []; histories[k] = []; } // stream shorter than k
            int parents = k == 1 ? 1 : kn.count[k - 1].Length;
            kn.Summarise(k, continuation: false, kn.count[k], histories[k], parents, out kn.total[k - 1], out kn.backoff[k - 1]);
            if (k < maxOrder)
            {
                kn.continuation[k] ??= new int[kn.count[k].Length];
                kn.Summarise(k, continuation: true, kn.continuation[k], histories[k], parents, out kn.totalCont[k - 1], out kn.backoffCont[k - 1]);
            }
        }
        return kn;
    }

    // Discounts of level k from its count-of-counts, then each history's total and backoff numerator over its followers.
    void Summarise(int k, bool continuation, int[] counts, int[] hist, int parents, out int[] totals, out double[] numerators)
    {
        Span<long> n = stackalloc long[5];
        foreach (int c in counts) if (c is >= 1 and <= 4) n[c]++;
        var d = DiscountsFrom(n[1], n[2], n[3], n[4]);
        int kind = continuation ? 1 : 0;
        discounts[k, kind, 0] = d.D1;
        discounts[k, kind, 1] = d.D2;
        discounts[k, kind, 2] = d.D3;
        totals = new int[parents];
        numerators = new double[parents];
        for (int node = 0; node < counts.Length; node++)
        {
            int c = counts[node];
            if (c == 0) continue;
            totals[hist[node]] += c;
            numerators[hist[node]] += c == 1 ? d.D1 : c == 2 ? d.D2 : d.D3;
        }
    }

    /// <summary>Chen and Goodman's discounts from the count-of-counts <c>n1..n4</c>, or KenLM's fallback 0.5, 1, 1.5 where they are undefined or out of <c>(0, j]</c>.</summary>
    public static (double D1, double D2, double D3) DiscountsFrom(long n1, long n2, long n3, long n4)
    {
        if (n1 > 0 && n2 > 0 && n3 > 0 && n4 > 0)
        {
            double y = n1 / (n1 + 2.0 * n2);
            double d1 = 1 - 2 * y * n2 / n1, d2 = 2 - 3 * y * n3 / n2, d3 = 3 - 4 * y * n4 / n3;
            if (d1 is > 0 and <= 1 && d2 is > 0 and <= 2 && d3 is > 0 and <= 3) return (d1, d2, d3);
        }
        return (0.5, 1, 1.5);
    }

    /// <summary>The discounts D1, D2, D3+ of level <paramref name="order"/>: of its counts (the top level of a model of that order) or of its continuation counts (a lower level).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The order is not 1..MaxOrder, or 1..MaxOrder - 1 for continuation counts.</exception>
    public (double D1, double D2, double D3) Discounts(int order, bool continuation)
    {
        int highest = continuation ? MaxOrder - 1 : MaxOrder;
        if (order < 1 || order > highest) throw new ArgumentOutOfRangeException(nameof(order), order, $"expected 1 to {highest}");
        int kind = continuation ? 1 : 0;
        return (discounts[order, kind, 0], discounts[order, kind, 1], discounts[order, kind, 2]);
    }

    /// <summary>The probability of <paramref name="token"/> after <paramref name="context"/> under the model of order <paramref name="order"/>
    /// (only the last <c>order - 1</c> tokens of the context matter; a shorter context is scored by the model of order <c>context.Length + 1</c>).</summary>
    /// <exception cref="ArgumentException">The order is not 1..MaxOrder, or a token is outside the vocabulary.</exception>
    public double Probability(ReadOnlySpan<int> context, int token, int order)
    {
        CheckOrder(order);
        int m = Math.Min(order - 1, context.Length);
        var window = new int[m + 1];
        context[^m..].CopyTo(window);
        window[m] = token;
        Span<double> p = stackalloc double[m + 1];
        Probabilities(window, order, p);
        return p[m];
    }

    /// <summary>Fills <c>result[p]</c> with the probability of <c>window[p]</c> given the tokens of the window before it (none for <c>p = 0</c>)
    /// under the model of order <paramref name="order"/>.</summary>
    /// <exception cref="ArgumentException">The order is not 1..MaxOrder, the result is shorter than the window, or a token is outside the vocabulary.</exception>
    public void Probabilities(ReadOnlySpan<int> window, int order, Span<double> result)
    {
        CheckOrder(order);
        if (result.Length < window.Length) throw new ArgumentException($"result: length {result.Length}; expected at least the window's {window.Length}", nameof(result));
        // prev[k] / cur[k]: node of the k-gram ending at the previous / current position, -1 where unseen or cut by the window start.
        Span<int> prev = stackalloc int[order + 1], cur = stackalloc int[order + 1];
        prev.Fill(-1);
        prev[0] = cur[0] = 0;
        for (int p = 0; p < window.Length; p++)
        {
            int w = window[p];
            if ((uint)w >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(window), w, $"token {p} is outside [0, {VocabSize})");
            for (int k = 1; k <= order; k++)
                cur[k] = prev[k - 1] >= 0 && k <= p + 1 ? index[k].Get((long)prev[k - 1] * VocabSize + w) : -1;
            result[p] = Interpolate(prev, cur, Math.Min(order, p + 1));
            cur.CopyTo(prev);
        }
    }

    /// <summary>The sum over p = 1..window.Length - 1 of <c>-ln P(window[p] | window[..p])</c> under the model of order <paramref name="order"/>, in nats.</summary>
    /// <exception cref="ArgumentException">The order is not 1..MaxOrder, or a token is outside the vocabulary.</exception>
    public double NegativeLogLikelihood(ReadOnlySpan<int> window, int order)
    {
        Span<double> p = window.Length <= 1024 ? stackalloc double[window.Length] : new double[window.Length];
        Probabilities(window, order, p);
        double sum = 0;
        for (int i = 1; i < window.Length; i++) sum -= Math.Log(p[i]);
        return sum;
    }

    // history[k - 1]: node of the k - 1 tokens before w (-1: unseen); gram[k]: node of those tokens and w (-1: unseen).
    double Interpolate(ReadOnlySpan<int> history, ReadOnlySpan<int> gram, int top)
    {
        double p = 1.0 / VocabSize;
        for (int k = 1; k <= top; k++)
        {
            int h = history[k - 1];
            if (h < 0) break; // an unseen history has only unseen extensions
            bool isTop = k == top;
            int sum = (isTop ? total : totalCont)[k - 1][h];
            if (sum == 0) continue;
            int node = gram[k];
            int c = node < 0 ? 0 : (isTop ? count : continuation)[k][node];
            int kind = isTop ? 0 : 1;
            double discounted = c == 0 ? 0 : Math.Max(c - discounts[k, kind, Math.Min(c, 3) - 1], 0);
            p = (discounted + (isTop ? backoff : backoffCont)[k - 1][h] * p) / sum;
        }
        return p;
    }

    void CheckOrder(int order)
    {
        if (order < 1 || order > MaxOrder) throw new ArgumentOutOfRangeException(nameof(order), order, $"expected 1 to {MaxOrder} (the fitted maximum order)");
    }
}

/// <summary>Open-addressing hash map from non-negative 64-bit keys to dense ids 0, 1, 2, ... in order of insertion.</summary>
sealed class LongIntMap
{
    const long Empty = -1;
    long[] keys;
    int[] values;
    int shift;

    public int Count { get; private set; }

    public LongIntMap(int expected)
    {
        int bits = Math.Max(4, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)Math.Max(1, expected) * 2));
        keys = new long[1 << bits];
        values = new int[1 << bits];
        Array.Fill(keys, Empty);
        shift = 64 - bits;
    }

    int Slot(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> shift);

    /// <summary>The id of <paramref name="key"/>, or -1.</summary>
    public int Get(long key)
    {
        int mask = keys.Length - 1;
        for (int i = Slot(key); ; i = (i + 1) & mask)
        {
            long k = keys[i];
            if (k == key) return values[i];
            if (k == Empty) return -1;
        }
    }

    /// <summary>The id of <paramref name="key"/>, giving it the next id if it is new.</summary>
    public int GetOrAdd(long key, out bool added)
    {
        int mask = keys.Length - 1;
        int i = Slot(key);
        for (; ; i = (i + 1) & mask)
        {
            long k = keys[i];
            if (k == key) { added = false; return values[i]; }
            if (k == Empty) break;
        }
        keys[i] = key;
        int id = values[i] = Count++;
        added = true;
        if (2 * Count > keys.Length) Grow();
        return id;
    }

    void Grow()
    {
        long[] oldKeys = keys;
        int[] oldValues = values;
        keys = new long[oldKeys.Length * 2];
        values = new int[oldKeys.Length * 2];
        Array.Fill(keys, Empty);
        shift--;
        int mask = keys.Length - 1;
        for (int j = 0; j < oldKeys.Length; j++)
        {
            if (oldKeys[j] == Empty) continue;
            int i = Slot(oldKeys[j]);
            while (keys[i] != Empty) i = (i + 1) & mask;
            keys[i] = oldKeys[j];
            values[i] = oldValues[j];
        }
    }
}
