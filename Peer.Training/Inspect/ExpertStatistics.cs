// What the experts of a PEER layer do, computed from a RetrievalTrace: how much router weight each expert takes from each
// class (class x expert matrix), each expert's class purity and entropy against a random-routing baseline (the same
// retrievals with the samples' labels shuffled, so each expert keeps its amount of use and only the link to the class is
// cut), the experts most specific to a class, each expert's top-activating (sample, position) pairs, and how much the
// heads retrieve the same experts.
using Peer.Nn;

namespace Peer.Training;

/// <summary>Router weight taken by each expert of one layer from each class: <c>Weight[i, c]</c>, summed over the selections of class-c samples.</summary>
public sealed class ClassExpertMatrix
{
    /// <summary>The layer's name.</summary>
    public string Layer { get; }
    /// <summary>Weights <c>[N, classes]</c>.</summary>
    public double[,] Weight { get; }
    /// <summary>Experts N.</summary>
    public int Experts => Weight.GetLength(0);
    /// <summary>Classes.</summary>
    public int Classes => Weight.GetLength(1);

    ClassExpertMatrix(string layer, double[,] weight) => (Layer, Weight) = (layer, weight);

    /// <summary>Sums the selections of <paramref name="log"/> by the class <paramref name="labels"/>[sample] of their sample.</summary>
    /// <exception cref="ArgumentException">A selection's sample has no label, or a label is outside [0, classes).</exception>
    public static ClassExpertMatrix From(LayerRetrievals log, IReadOnlyList<int> labels, int classes)
    {
        var w = new double[log.Experts, classes];
        foreach (var s in log.Selections())
        {
            Check.That(s.Sample < labels.Count, nameof(labels), $"{labels.Count} labels", $"a label for sample {s.Sample}");
            int c = labels[s.Sample];
            Check.That(c >= 0 && c < classes, nameof(labels), c, $"a class in [0, {classes})");
            w[s.Expert, c] += s.Weight;
        }
        return new ClassExpertMatrix(log.Name, w);
    }

    /// <summary>The random-routing baseline: the same selections with the labels shuffled over the samples (seeded).</summary>
    public static ClassExpertMatrix Shuffled(LayerRetrievals log, IReadOnlyList<int> labels, int classes, int seed)
    {
        var permuted = labels.ToArray();
        new Random(seed).Shuffle(permuted);
        return From(log, permuted, classes);
    }

    /// <summary>Total weight of expert <paramref name="i"/>.</summary>
    public double Total(int i)
    {
        double t = 0;
        for (int c = 0; c < Classes; c++) t += Weight[i, c];
        return t;
    }

    /// <summary>The largest share of expert <paramref name="i"/>'s weight that one class takes (NaN for an unused expert).</summary>
    public double Purity(int i)
    {
        double t = Total(i), m = 0;
        for (int c = 0; c < Classes; c++) m = Math.Max(m, Weight[i, c]);
        return t > 0 ? m / t : double.NaN;
    }

    /// <summary>The entropy, in bits, of expert <paramref name="i"/>'s weight over the classes (NaN for an unused expert).</summary>
    public double Entropy(int i)
    {
        double t = Total(i), h = 0;
        if (t <= 0) return double.NaN;
        for (int c = 0; c < Classes; c++)
            if (Weight[i, c] > 0) h -= Weight[i, c] / t * Math.Log2(Weight[i, c] / t);
        return h;
    }

    /// <summary>The class that takes most of expert <paramref name="i"/>'s weight.</summary>
    public int Dominant(int i)
    {
        int best = 0;
        for (int c = 1; c < Classes; c++) if (Weight[i, c] > Weight[i, best]) best = c;
        return best;
    }

    /// <summary>Purity and entropy averaged over the experts, each weighted by its total weight (so they describe a typical selection).</summary>
    public (double Purity, double Entropy) WeightedMeans()
    {
        double sum = 0, p = 0, h = 0;
        for (int i = 0; i < Experts; i++)
        {
            double t = Total(i);
            if (t <= 0) continue;
            sum += t;
            p += t * Purity(i);
            h += t * Entropy(i);
        }
        return sum > 0 ? (p / sum, h / sum) : (double.NaN, double.NaN);
    }

    /// <summary>
    /// The <paramref name="count"/> experts most specific to class <paramref name="cls"/>: ranked by <c>w_ic * (w_ic / w_i)</c>, the class's
    /// weight on the expert times the share of the expert's weight it is, so an expert ranks high when the class uses it much and
    /// other classes little. Experts the class never used are not returned.
    /// </summary>
    public int[] MostSpecific(int cls, int count)
    {
        Check.That(cls >= 0 && cls < Classes, nameof(cls), cls, $"a class in [0, {Classes})");
        return Enumerable.Range(0, Experts).Where(i => Weight[i, cls] > 0)
            .OrderByDescending(i => Weight[i, cls] * Weight[i, cls] / Total(i)).ThenBy(i => i).Take(count).ToArray();
    }
}

/// <summary>Per-expert and per-head summaries of one traced layer.</summary>
public static class ExpertStatistics
{
    /// <summary>For each of <paramref name="experts"/>, its <paramref name="top"/> selections of largest router weight (ties: earlier first).</summary>
    public static Dictionary<int, ExpertSelection[]> TopSelections(LayerRetrievals log, IReadOnlyCollection<int> experts, int top)
    {
        var wanted = experts.ToHashSet();
        var heaps = wanted.ToDictionary(e => e, _ => new PriorityQueue<ExpertSelection, (float, long)>());
        long order = 0;
        foreach (var s in log.Selections())
        {
            order++;
            if (!wanted.Contains(s.Expert)) continue;
            var heap = heaps[s.Expert];
            // Min-heap on (weight, -order): the weakest, latest selection leaves first, so ties keep the earlier ones.
            heap.Enqueue(s, (s.Weight, -order));
            if (heap.Count > top) heap.Dequeue();
        }
        return heaps.ToDictionary(p => p.Key, p =>
        {
            var list = new List<(ExpertSelection S, (float, long) P)>();
            while (p.Value.TryDequeue(out var s, out var pr)) list.Add((s, pr));
            return list.OrderByDescending(x => x.P).Select(x => x.S).ToArray();
        });
    }

    /// <summary>
    /// How much heads <c>a</c> and <c>b</c> retrieve the same experts: <c>[a, b]</c> is the mean, over the positions, of the fraction of head a's
    /// k experts that head b also retrieved at that position (1 on the diagonal).
    /// </summary>
    public static double[,] HeadOverlap(LayerRetrievals log)
    {
        int h = log.Heads, k = log.TopK;
        var shared = new double[h, h];
        long rows = 0;
        var sets = new HashSet<int>[h];
        for (int j = 0; j < h; j++) sets[j] = new HashSet<int>();
        foreach (var (_, _, experts, _) in log.Rows())
        {
            rows++;
            for (int j = 0; j < h; j++)
            {
                sets[j].Clear();
                for (int m = 0; m < k; m++) sets[j].Add(experts[j * k + m]);
            }
            for (int a = 0; a < h; a++)
                for (int b = 0; b < h; b++)
                    shared[a, b] += (double)sets[a].Count(sets[b].Contains) / k;
        }
        for (int a = 0; a < h; a++) for (int b = 0; b < h; b++) shared[a, b] = rows > 0 ? shared[a, b] / rows : double.NaN;
        return shared;
    }

    /// <summary>The fraction of all distinct experts retrieved by each head that no other head retrieved anywhere.</summary>
    public static double[] ExclusiveExperts(LayerRetrievals log)
    {
        int h = log.Heads, k = log.TopK;
        var byHead = Enumerable.Range(0, h).Select(_ => new HashSet<int>()).ToArray();
        foreach (var (_, _, experts, _) in log.Rows())
            for (int i = 0; i < experts.Count; i++) byHead[i / k].Add(experts[i]);
        return byHead.Select((set, j) => set.Count == 0 ? double.NaN
            : (double)set.Count(e => !byHead.Where((_, o) => o != j).Any(other => other.Contains(e))) / set.Count).ToArray();
    }

    /// <summary>Pearson correlation of two samples (NaN when either is constant).</summary>
    public static double Pearson(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        int n = x.Count;
        double mx = x.Average(), my = y.Average(), sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++)
        {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
            syy += (y[i] - my) * (y[i] - my);
        }
        return sxx > 0 && syy > 0 ? sxy / Math.Sqrt(sxx * syy) : double.NaN;
    }

    /// <summary>Spearman rank correlation (average ranks for ties).</summary>
    public static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y) => Pearson(Ranks(x), Ranks(y));

    static double[] Ranks(IReadOnlyList<double> v)
    {
        var order = Enumerable.Range(0, v.Count).OrderBy(i => v[i]).ToArray();
        var ranks = new double[v.Count];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && v[order[j + 1]] == v[order[i]]) j++;
            for (int m = i; m <= j; m++) ranks[order[m]] = (i + j) / 2.0;
            i = j + 1;
        }
        return ranks;
    }
}
