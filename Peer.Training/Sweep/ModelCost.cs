// Compute accounting of a whole language model for equal-FLOP sweeps: forward multiply-adds per token of the
// attention projections, the attention scores, each block's feed-forward layer (counted by the layer's own
// FeedForwardCost, built through FeedForwardFactory exactly as the model builds it) and the output head.
// Training FLOPs per token are taken as 6 x these multiply-adds (forward 2, backward 4), the usual 6 N rule
// with N the "active parameters per token" (for dense layers the multiply-adds per token equal the weights).
using Peer.Nn;

namespace Peer.Training;

/// <summary>Per-token compute and size of a <see cref="ModelConfig"/>.</summary>
/// <param name="ForwardMacsPerToken">
/// <c>A = L (4 d² + d (T + 1)) + sum over blocks of the feed-forward multiply-adds + d V</c>: per block the qkv and output
/// projections (<c>4 d²</c>) and the causal attention scores and weighted sum (<c>d (T + 1)</c>: each of the two products
/// reads on average <c>(T + 1) / 2</c> positions of width d); then the output head <c>d V</c>.
/// Embedding lookups, norms, softmax and activations are not counted (as in the layers' accounting).</param>
/// <param name="FeedForwardMacsPerToken">The feed-forward layers' share of <paramref name="ForwardMacsPerToken"/>.</param>
/// <param name="TotalParameters">Every parameter element of the model (equals <see cref="Module.ParameterCount"/>).</param>
public sealed record ModelCost(long ForwardMacsPerToken, long FeedForwardMacsPerToken, long TotalParameters)
{
    /// <summary>Training FLOPs per token: <c>6 A</c>.</summary>
    public long TrainFlopsPerToken => 6 * ForwardMacsPerToken;

    /// <summary>Training tokens that spend <paramref name="budget"/> FLOPs: <c>budget / (6 A)</c>.</summary>
    public double TokensFor(double budget) => budget / TrainFlopsPerToken;

    /// <summary>The cost of <paramref name="config"/>, building each distinct feed-forward layer once on <paramref name="device"/> to read its cost.</summary>
    /// <exception cref="ConfigException">The configuration is invalid.</exception>
    public static ModelCost Of(Device device, ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        long d = config.DModel, t = config.Context, v = config.VocabSize, layers = config.Layers;
        long macs = layers * (4 * d * d + d * (t + 1)) + d * v;
        long parameters = v * d + t * d                       // token and position embeddings
            + layers * (4 * d * d + 4 * d + 4 * d)              // qkv, out (weights and biases), two LayerNorms
            + 2 * d                                             // final LayerNorm
            + (config.TiedHead ? 0 : v * d);
        long ffwMacs = 0;
        var costs = new Dictionary<string, FeedForwardCost>();
        foreach (var kind in config.BlockKinds())
        {
            if (!costs.TryGetValue(kind, out var cost))
            {
                using var layer = FeedForwardFactory.Create(device, kind, OptionsFor(config, kind));
                costs[kind] = cost = layer.Cost;
            }
            ffwMacs += cost.MacsPerToken;
            parameters += cost.TotalParameters;
        }
        return new ModelCost(macs + ffwMacs, ffwMacs, parameters);
    }

    // The options LanguageModel's blocks pass to the factory (the seed does not change the cost).
    internal static FeedForwardOptions OptionsFor(ModelConfig c, string kind)
    {
        bool moe = ModelConfig.IsMoe(kind);
        var keys = kind == "pkm" ? c.Pkm : c.Peer;
        return new FeedForwardOptions
        {
            Dim = c.DModel, Hidden = c.HiddenWidth,
            Experts = moe ? c.Moe.Experts : keys.Experts,
            Heads = keys.Heads, QueryDim = keys.QueryDim, QueryNorm = keys.ToOptions(0).QueryNorm,
            TopK = moe ? c.Moe.TopK : keys.TopK,
            CapacityFactor = c.Moe.CapacityFactor,
            SlotsPerExpert = c.Moe.SlotsPerExpert, Causal = true, AllowNonCausal = c.Moe.AllowNonCausal,
        };
    }
}
