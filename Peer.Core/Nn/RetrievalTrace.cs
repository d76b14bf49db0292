// Looking inside PEER layers: a trace subscribes to layers' Retrieved event and keeps, on the host, every (sample, position,
// layer, head, expert, weight) they retrieve while attached, in compact per-forward arrays (8 bytes a selection: a test set of
// 10,000 images of 49 tokens through h = 4, k = 8 costs about 125 MB per layer). The caller announces each forward it wants
// recorded and how its rows map to samples and positions (BeginBatch; a model keeps rows sample-major, as [B*P, d]); forwards
// nobody announced are not recorded, so a trace left attached does not mix other evaluations into its records.
namespace Peer.Nn;

/// <summary>One retrieval: at <paramref name="Position"/> of sample <paramref name="Sample"/>, head <paramref name="Head"/> of layer
/// <paramref name="Layer"/> selected <paramref name="Expert"/> with router weight <paramref name="Weight"/>.</summary>
public readonly record struct ExpertSelection(int Sample, int Position, string Layer, int Head, int Expert, float Weight);

/// <summary>The retrievals of one layer recorded by a <see cref="RetrievalTrace"/>.</summary>
public sealed class LayerRetrievals
{
    internal sealed record Chunk(int FirstSample, int Positions, int[] Experts, float[] Weights);
    internal readonly List<Chunk> Chunks = new();

    /// <summary>The layer's dotted name.</summary>
    public string Name { get; }
    /// <summary>Heads h.</summary>
    public int Heads { get; }
    /// <summary>Experts kept per head k.</summary>
    public int TopK { get; }
    /// <summary>Experts N.</summary>
    public int Experts { get; }

    internal LayerRetrievals(string name, PeerLayer layer)
    {
        Name = name;
        Heads = layer.Options.Heads;
        TopK = layer.Options.TopK;
        Experts = layer.Options.Experts;
    }

    /// <summary>Selections recorded.</summary>
    public long Count => Chunks.Sum(c => (long)c.Experts.Length);

    /// <summary>Every selection, in the order recorded (forward, then row, head, rank within the head).</summary>
    public IEnumerable<ExpertSelection> Selections()
    {
        int per = Heads * TopK;
        foreach (var c in Chunks)
            for (int i = 0; i < c.Experts.Length; i++)
            {
                int row = i / per, slot = i - row * per;
                yield return new ExpertSelection(c.FirstSample + row / c.Positions, row % c.Positions, Name, slot / TopK, c.Experts[i], c.Weights[i]);
            }
    }

    /// <summary>Every recorded row (one position of one sample) with its <c>h * k</c> expert ids and router weights, head-major.</summary>
    public IEnumerable<(int Sample, int Position, ArraySegment<int> Experts, ArraySegment<float> Weights)> Rows()
    {
        int per = Heads * TopK;
        foreach (var c in Chunks)
            for (int row = 0; row < c.Experts.Length / per; row++)
                yield return (c.FirstSample + row / c.Positions, row % c.Positions, new ArraySegment<int>(c.Experts, row * per, per),
                    new ArraySegment<float>(c.Weights, row * per, per));
    }

    /// <summary>How many times each expert was selected (<c>[N]</c>).</summary>
    public long[] SelectionCounts()
    {
        var counts = new long[Experts];
        foreach (var c in Chunks) foreach (int e in c.Experts) counts[e]++;
        return counts;
    }

    /// <summary>The router-weight sum <c>z'_i</c> of each expert (<c>[N]</c>), in double.</summary>
    public double[] WeightSums()
    {
        var sums = new double[Experts];
        foreach (var c in Chunks)
            for (int i = 0; i < c.Experts.Length; i++) sums[c.Experts[i]] += c.Weights[i];
        return sums;
    }
}

/// <summary>
/// Records the retrievals of the given PEER layers in the forwards announced with <see cref="BeginBatch"/> while it is attached
/// (from construction to <see cref="Dispose"/>): for each selection its sample, position, layer, head, expert and router weight.
/// </summary>
/// <example><code>
/// using var trace = new RetrievalTrace(model.PeerLayers());
/// trace.BeginBatch(firstSample: 0, samples: 32, positions: 49);   // the next forward's rows are 32 images x 49 patches
/// model.Forward(images);
/// foreach (var s in trace["blocks.1.ffw"].Selections()) ...
/// </code></example>
public sealed class RetrievalTrace : IDisposable
{
    readonly List<(PeerLayer Layer, LayerRetrievals Log)> layers = new();
    readonly HashSet<PeerLayer> armed = new(ReferenceEqualityComparer.Instance);
    int firstSample, samples, positions;
    bool disposed;

    /// <summary>Attaches to <paramref name="layers"/> (name, layer).</summary>
    /// <exception cref="ArgumentException">Two layers share a name.</exception>
    public RetrievalTrace(IEnumerable<(string Name, PeerLayer Layer)> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        foreach (var (name, layer) in layers)
        {
            Check.That(this.layers.All(l => l.Log.Name != name), nameof(layers), name, "distinct layer names");
            this.layers.Add((layer, new LayerRetrievals(name, layer)));
        }
        foreach (var (layer, _) in this.layers) layer.Retrieved += OnRetrieved;
    }

    /// <summary>The traced layers' names, in the order given.</summary>
    public IReadOnlyList<string> LayerNames => layers.Select(l => l.Log.Name).ToArray();

    /// <summary>The retrievals of the layer named <paramref name="layer"/>.</summary>
    /// <exception cref="KeyNotFoundException">No traced layer has that name.</exception>
    public LayerRetrievals this[string layer] =>
        layers.FirstOrDefault(l => l.Log.Name == layer).Log ?? throw new KeyNotFoundException($"layer '{layer}' is not traced; traced: {string.Join(", ", LayerNames)}");

    /// <summary>Every layer's retrievals.</summary>
    public IEnumerable<LayerRetrievals> Layers => layers.Select(l => l.Log);

    /// <summary>Forwards of traced layers that ran without an announcement and so were not recorded.</summary>
    public int Unannounced { get; private set; }

    /// <summary>
    /// Announces the next forward of every traced layer: its rows are <paramref name="samples"/> samples of
    /// <paramref name="positions"/> positions each, sample-major, numbered from <paramref name="firstSample"/>. Each layer records
    /// its next forward under this announcement; forwards without one are not recorded (<see cref="Unannounced"/> counts them).
    /// </summary>
    /// <exception cref="ArgumentException">A negative first sample, or samples or positions below 1.</exception>
    public void BeginBatch(int firstSample, int samples, int positions)
    {
        Check.That(firstSample >= 0, nameof(firstSample), firstSample, "a non-negative sample number");
        Check.Positive(samples, nameof(samples));
        Check.Positive(positions, nameof(positions));
        this.firstSample = firstSample;
        this.samples = samples;
        this.positions = positions;
        foreach (var (layer, _) in layers) armed.Add(layer);
    }

    /// <summary>Every selection of every layer (layer by layer, each in recorded order).</summary>
    public IEnumerable<ExpertSelection> Selections() => layers.SelectMany(l => l.Log.Selections());

    void OnRetrieved(PeerLayer layer, Tensor indices, Tensor weights)
    {
        if (!armed.Remove(layer))
        {
            Unannounced++;
            return;
        }
        var log = layers.First(l => ReferenceEquals(l.Layer, layer)).Log;
        int rows = indices.Shape[0];
        if (rows != samples * positions)
            throw new InvalidOperationException($"RetrievalTrace: layer {log.Name} ran on {rows} rows but BeginBatch announced {samples} samples x {positions} positions");
        log.Chunks.Add(new LayerRetrievals.Chunk(firstSample, positions, indices.ToIntArray(), weights.ToArray()));
    }

    /// <summary>Detaches from the layers (the records stay readable).</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var (layer, _) in layers) layer.Retrieved -= OnRetrieved;
    }
}
