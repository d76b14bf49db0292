// The Kneser–Ney baseline against a brute-force reference written from the definition (strings of token
// ids as dictionary keys, counts and sets of left neighbours recounted from the text, the recursion done
// literally): per-token probabilities agree to 1e-12 relative; distributions sum to 1; order 1 is the
// discounted unigram interpolated with the uniform distribution; the window start cuts the context.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class KneserNeyTests
{
    const double Relative = 1e-12;

    static int[] Bytes(string text) => new ByteTokenizer().Encode(text);

    static int[] SmallText => Bytes(TrainingFixtures.SmallCorpus.Text[..6000]);

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(5)]
    public void ProbabilitiesMatchBruteForce(int order)
    {
        int[] all = SmallText;
        int[] train = all[..5000];
        var kn = KneserNey.Fit(train, 256, maxOrder: 5);
        var reference = new BruteForceKneserNey(train, 256, 5);
        // Held-out windows (some tokens and contexts never seen in training) and one from the training text itself.
        var windows = new[] { all[5000..5040], all[5500..5530], train[100..140], Bytes("\u00e9\u00e8 zzqx the, The"), new[] { 65 } };
        foreach (var window in windows)
        {
            var p = new double[window.Length];
            kn.Probabilities(window, order, p);
            for (int i = 1; i < window.Length; i++)
            {
                double expected = reference.Probability(window[..i], window[i], order);
                Assert.That(p[i], Is.EqualTo(expected).Within(Relative * expected), $"order {order}, position {i}");
            }
            double nll = Enumerable.Range(1, window.Length - 1).Sum(i => -Math.Log(reference.Probability(window[..i], window[i], order)));
            Assert.That(kn.NegativeLogLikelihood(window, order), Is.EqualTo(nll).Within(1e-10 * Math.Max(1, nll)));
        }
    }

    [Test]
    public void DiscountsComeFromCountOfCountsWhereDefined()
    {
        int[] train = SmallText[..5000];
        var kn = KneserNey.Fit(train, 256, maxOrder: 5);
        var reference = new BruteForceKneserNey(train, 256, 5);
        for (int k = 1; k <= 5; k++)
        {
            Assert.That(kn.Discounts(k, false), Is.EqualTo(reference.Discounts(k, false)), $"level {k}, counts");
            if (k < 5) Assert.That(kn.Discounts(k, true), Is.EqualTo(reference.Discounts(k, true)), $"level {k}, continuation counts");
        }
        // On 5000 bytes of prose the count-of-counts estimate holds at the middle levels (the comparison above is not only of fallbacks).
        Assert.That(kn.Discounts(3, false), Is.Not.EqualTo((0.5, 1.0, 1.5)));
        Assert.That(kn.Discounts(3, true), Is.Not.EqualTo((0.5, 1.0, 1.5)));
        Assert.That(KneserNey.DiscountsFrom(10, 4, 2, 1), Is.EqualTo((1 - 2 * (10.0 / 18) * 4 / 10, 2 - 3 * (10.0 / 18) * 2 / 4, 3 - 4 * (10.0 / 18) * 1 / 2)));
        Assert.That(KneserNey.DiscountsFrom(10, 4, 0, 1), Is.EqualTo((0.5, 1.0, 1.5)), "n3 = 0: the fallback");
        Assert.That(KneserNey.DiscountsFrom(2, 1, 9, 1), Is.EqualTo((0.5, 1.0, 1.5)), "D2 < 0: the fallback");
    }

    [Test]
    public void TinyTextUsesTheFallbackAndStillMatches()
    {
        int[] train = Bytes("abracadabra cadabra");
        var kn = KneserNey.Fit(train, 256, maxOrder: 3);
        var reference = new BruteForceKneserNey(train, 256, 3);
        Assert.That(kn.Discounts(2, false), Is.EqualTo((0.5, 1.0, 1.5)));
        int[] window = Bytes("abra cazb");
        for (int i = 1; i < window.Length; i++)
        {
            double expected = reference.Probability(window[..i], window[i], 3);
            Assert.That(kn.Probability(window[..i], window[i], 3), Is.EqualTo(expected).Within(Relative * expected), $"position {i}");
        }
    }

    [TestCase("byte", 256)]
    [TestCase("gpt2", 50257)]
    public void DistributionsSumToOneAndArePositive(string tokenizer, int vocab)
    {
        var t = Tokenizers.Create(tokenizer);
        int[] train = t.Encode(TrainingFixtures.SmallCorpus.Text[..20000]);
        var kn = KneserNey.Fit(train, vocab, maxOrder: 5);
        int[][] contexts = [[], train[..1], train[200..204], train[1000..1010], t.Encode("zzqx \u00e9 never seen"), [vocab - 1, vocab - 1, 0]];
        foreach (var context in contexts)
            for (int order = 1; order <= 5; order++)
            {
                // Compensated (Neumaier) summation: a plain sum of 50257 terms near 2e-5 drifts by about 1e-12 on its own.
                double sum = 0, carry = 0, min = 1;
                for (int w = 0; w < vocab; w++)
                {
                    double p = kn.Probability(context, w, order), s = sum + p;
                    carry += Math.Abs(sum) >= p ? sum - s + p : p - s + sum;
                    sum = s;
                    min = Math.Min(min, p);
                }
                Assert.That(sum + carry, Is.EqualTo(1).Within(1e-13), $"order {order}, context of {context.Length}");
                Assert.That(min, Is.GreaterThan(0));
            }
    }

    [Test]
    public void OrderOneIsTheDiscountedUnigramOverUniform()
    {
        int[] train = SmallText;
        var kn = KneserNey.Fit(train, 256, maxOrder: 1);
        var counts = new long[256];
        foreach (int b in train) counts[b]++;
        var n = new long[5];
        foreach (long c in counts) if (c is >= 1 and <= 4) n[c]++;
        double y = n[1] / (n[1] + 2.0 * n[2]);
        double[] d = n[1] * n[2] * n[3] * n[4] > 0 ? [0, 1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3]] : [0, 0.5, 1, 1.5];
        double D(long c) => d[Math.Min(c, 3)];
        double mass = counts.Where(c => c > 0).Sum(D);
        for (int w = 0; w < 256; w++)
        {
            double expected = (Math.Max(counts[w] - (counts[w] > 0 ? D(counts[w]) : 0), 0) + mass / 256) / train.Length;
            Assert.That(kn.Probability([], w, 1), Is.EqualTo(expected).Within(Relative * expected), $"token {w}");
            Assert.That(kn.Probability(train[..7], w, 1), Is.EqualTo(kn.Probability([], w, 1)), "order 1 ignores the context");
        }
        Assert.That(counts.Count(c => c == 0), Is.GreaterThan(0), "some bytes never occur and still get probability");
    }

    [Test]
    public void TheWindowStartCutsTheContext()
    {
        int[] all = SmallText;
        var kn = KneserNey.Fit(all[..5000], 256, maxOrder: 5);
        var reference = new BruteForceKneserNey(all[..5000], 256, 5);
        int[] longer = all[5200..5240], cut = longer[6..];
        var pLong = new double[longer.Length];
        var pCut = new double[cut.Length];
        kn.Probabilities(longer, 5, pLong);
        kn.Probabilities(cut, 5, pCut);
        for (int i = 1; i < cut.Length; i++)
        {
            // In the cut window token i sees only the i tokens before it in that window.
            Assert.That(pCut[i], Is.EqualTo(reference.Probability(cut[..i], cut[i], 5)).Within(Relative * pCut[i]));
            if (i >= 4) Assert.That(pCut[i], Is.EqualTo(pLong[i + 6]), $"position {i} has its whole 4-token history inside the window");
        }
        for (int i = 1; i < 4; i++) Assert.That(pCut[i], Is.Not.EqualTo(pLong[i + 6]).Within(1e-9 * pCut[i]), $"position {i}'s history is cut");
        Assert.That(kn.NegativeLogLikelihood(cut, 5), Is.Not.EqualTo(pLong[7..].Sum(p => -Math.Log(p))).Within(1e-9));
        Assert.That(kn.Probability(longer[..10], longer[10], 5), Is.EqualTo(kn.Probability(longer[6..10], longer[10], 5)), "only the last order - 1 tokens matter");
    }

    [Test]
    public void BadInputIsRefusedWithTheArgument()
    {
        Assert.That(() => KneserNey.Fit([1, 2, 256], 256, 3), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("token 2 is outside [0, 256)"));
        Assert.That(() => KneserNey.Fit([], 256, 3), Throws.ArgumentException.With.Message.Contains("empty"));
        Assert.That(() => KneserNey.Fit([1], 256, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("maxOrder"));
        var kn = KneserNey.Fit([1, 2, 3, 1, 2], 256, 3);
        Assert.That(() => kn.Probability([1], 2, 4), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("expected 1 to 3"));
        Assert.That(() => kn.Probability([1], -1, 2), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("outside [0, 256)"));
        Assert.That(() => kn.Discounts(3, continuation: true), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void StreamsShorterThanTheOrderStillScore()
    {
        var kn = KneserNey.Fit([7, 8], 16, maxOrder: 5);
        double sum = Enumerable.Range(0, 16).Sum(w => kn.Probability([7, 8, 7, 8], w, 5));
        Assert.That(sum, Is.EqualTo(1).Within(1e-12));
        Assert.That(kn.Probability([7], 8, 2), Is.GreaterThan(kn.Probability([7], 9, 2)));
    }

    /// <summary>Interpolated modified Kneser–Ney from its definition, with no shared code: every quantity recounted from the text.</summary>
    sealed class BruteForceKneserNey
    {
        readonly int vocab;
        // followers[k][history as "a,b,"][token]: count (top level) and continuation count (lower levels) of history + token.
        readonly Dictionary<string, Dictionary<int, long>>[] raw, cont;
        readonly (double, double, double)[] rawD, contD;

        public BruteForceKneserNey(int[] text, int vocab, int maxOrder)
        {
            this.vocab = vocab;
            raw = new Dictionary<string, Dictionary<int, long>>[maxOrder + 1];
            cont = new Dictionary<string, Dictionary<int, long>>[maxOrder + 1];
            rawD = new (double, double, double)[maxOrder + 1];
            contD = new (double, double, double)[maxOrder + 1];
            for (int k = 1; k <= maxOrder; k++)
            {
                var counts = new Dictionary<string, Dictionary<int, long>>();
                var left = new Dictionary<string, Dictionary<int, HashSet<int>>>();
                for (int i = 0; i + k <= text.Length; i++)
                {
                    string h = Key(text.AsSpan(i, k - 1));
                    int w = text[i + k - 1];
                    var f = counts.TryGetValue(h, out var x) ? x : counts[h] = new();
                    f[w] = f.GetValueOrDefault(w) + 1;
                    if (i > 0)
                    {
                        var l = left.TryGetValue(h, out var y) ? y : left[h] = new();
                        (l.TryGetValue(w, out var s) ? s : l[w] = new()).Add(text[i - 1]);
                    }
                }
                raw[k] = counts;
                cont[k] = left.ToDictionary(e => e.Key, e => e.Value.ToDictionary(v => v.Key, v => (long)v.Value.Count));
                rawD[k] = Estimate(raw[k]);
                contD[k] = Estimate(cont[k]);
            }
        }

        static string Key(ReadOnlySpan<int> tokens) => string.Concat(tokens.ToArray().Select(t => t + ","));

        static (double, double, double) Estimate(Dictionary<string, Dictionary<int, long>> level)
        {
            var all = level.Values.SelectMany(f => f.Values).ToArray();
            long n1 = all.Count(c => c == 1), n2 = all.Count(c => c == 2), n3 = all.Count(c => c == 3), n4 = all.Count(c => c == 4);
            if (n1 == 0 || n2 == 0 || n3 == 0 || n4 == 0) return (0.5, 1, 1.5);
            double y = (double)n1 / (n1 + 2 * n2);
            double d1 = 1 - 2 * y * n2 / n1, d2 = 2 - 3 * y * n3 / n2, d3 = 3 - 4 * y * n4 / n3;
            bool ok = d1 > 0 && d1 <= 1 && d2 > 0 && d2 <= 2 && d3 > 0 && d3 <= 3;
            return ok ? (d1, d2, d3) : (0.5, 1, 1.5);
        }

        public (double, double, double) Discounts(int k, bool continuation) => continuation ? contD[k] : rawD[k];

        /// <summary>P(w | context) under the model of the given order; the top level is min(order, |context| + 1).</summary>
        public double Probability(int[] context, int w, int order)
        {
            int top = Math.Min(order, context.Length + 1);
            return Level(context[(context.Length - (top - 1))..], w, top, isTop: true);
        }

        double Level(int[] history, int w, int k, bool isTop)
        {
            if (k == 0) return 1.0 / vocab;
            double lower = Level(history.Length > 0 ? history[1..] : history, w, k - 1, isTop: false);
            var followers = (isTop ? raw : cont)[k].GetValueOrDefault(Key(history)) ?? new Dictionary<int, long>();
            long sum = followers.Values.Sum();
            if (sum == 0) return lower;
            var (d1, d2, d3) = isTop ? rawD[k] : contD[k];
            double D(long c) => c == 0 ? 0 : c == 1 ? d1 : c == 2 ? d2 : d3;
            double gamma = followers.Values.Sum(D);
            long cw = followers.GetValueOrDefault(w);
            return (Math.Max(cw - D(cw), 0) + gamma * lower) / sum;
        }
    }
}
