// The registry of feed-forward kinds: names as a model configuration writes them ("ffw", "peer", "pkm",
// "moe-ec", "moe-topk", "soft-moe"), parsing with a clear error, and one factory from a flat options record.
namespace Peer.Nn;

/// <summary>The feed-forward layers a block can use.</summary>
public enum FeedForwardKind
{
    /// <summary>"ffw": <see cref="DenseFfw"/>.</summary>
    Ffw,
    /// <summary>"peer": <see cref="PeerLayer"/>.</summary>
    Peer,
    /// <summary>"pkm": <see cref="ProductKeyMemory"/>.</summary>
    Pkm,
    /// <summary>"moe-ec": <see cref="ExpertChoiceMoe"/>.</summary>
    MoeEc,
    /// <summary>"moe-topk": <see cref="TopKMoe"/>.</summary>
    MoeTopK,
    /// <summary>"soft-moe": <see cref="SoftMoe"/>.</summary>
    SoftMoe,
}

/// <summary>
/// Configuration of any feed-forward kind; each kind reads the fields it needs (listed per field). Zero in
/// <see cref="Experts"/> or <see cref="TopK"/> means the kind's paper default.
/// </summary>
public sealed record FeedForwardOptions
{
    /// <summary>Model width d (all kinds). Required.</summary>
    public int Dim { get; init; }
    /// <summary>Hidden width of the dense FFW and of each MoE expert (ffw, moe-ec, moe-topk, soft-moe). Required for those.</summary>
    public int Hidden { get; init; }
    /// <summary>Activation (all kinds except pkm).</summary>
    public PeerActivation Activation { get; init; } = PeerActivation.Gelu;
    /// <summary>N for peer and pkm (default 1024²), E for the MoEs (default 128, the paper's MoE baseline).</summary>
    public int Experts { get; init; }
    /// <summary>Retrieval heads h (peer, pkm).</summary>
    public int Heads { get; init; } = 8;
    /// <summary>k: kept per head for peer (default 16) and pkm (default 32); experts per token for moe-topk (default 2).</summary>
    public int TopK { get; init; }
    /// <summary>Query size per head dq (peer, pkm).</summary>
    public int QueryDim { get; init; } = 128;
    /// <summary>Query normalisation (peer, pkm).</summary>
    public PeerQueryNorm QueryNorm { get; init; } = PeerQueryNorm.BatchNorm;
    /// <summary>Capacity factor (moe-ec: slots = factor T / E; moe-topk: factor k T / E).</summary>
    public double CapacityFactor { get; init; } = 1.0;
    /// <summary>moe-topk: renormalise gates over each token's k choices.</summary>
    public bool RenormalizeGates { get; init; }
    /// <summary>soft-moe: slots per expert S.</summary>
    public int SlotsPerExpert { get; init; } = 1;
    /// <summary>soft-moe: whether the model is causal (a language model, the default).</summary>
    public bool Causal { get; init; } = true;
    /// <summary>soft-moe: must be true to build Soft MoE into a causal model (it mixes positions).</summary>
    public bool AllowNonCausal { get; init; }
    /// <summary>soft-moe: tokens per forward assumed by the per-token cost; 0 means E*S.</summary>
    public int AccountingTokens { get; init; }
    /// <summary>Initialisation seed.</summary>
    public ulong Seed { get; init; }
    /// <summary>peer: split the expert tables by columns between ranks (expert parallelism, see <see cref="PeerLayer(Device, int, PeerOptions?, ColumnShard?)"/>); null keeps them whole.</summary>
    public ColumnShard? ExpertShard { get; init; }
}

/// <summary>Names, parsing and construction of the feed-forward kinds.</summary>
public static class FeedForwardFactory
{
    static readonly (FeedForwardKind Kind, string Name)[] names =
    [
        (FeedForwardKind.Ffw, "ffw"), (FeedForwardKind.Peer, "peer"), (FeedForwardKind.Pkm, "pkm"),
        (FeedForwardKind.MoeEc, "moe-ec"), (FeedForwardKind.MoeTopK, "moe-topk"), (FeedForwardKind.SoftMoe, "soft-moe"),
    ];

    /// <summary>Every kind's configuration name, in enum order.</summary>
    public static IReadOnlyList<string> Names { get; } = names.Select(n => n.Name).ToArray();

    /// <summary>The configuration name of <paramref name="kind"/> ("ffw", "peer", "pkm", "moe-ec", "moe-topk", "soft-moe").</summary>
    /// <exception cref="ArgumentException">An undefined kind.</exception>
    public static string Name(FeedForwardKind kind)
    {
        foreach (var (k, n) in names) if (k == kind) return n;
        throw new ArgumentException($"kind = {kind}: expected one of {string.Join(", ", Enum.GetNames<FeedForwardKind>())}.", nameof(kind));
    }

    /// <summary>Parses a configuration name (case-sensitive, exactly as <see cref="Names"/>).</summary>
    /// <exception cref="ArgumentException">An unknown name; the message lists the known ones.</exception>
    public static FeedForwardKind Parse(string name)
    {
        foreach (var (k, n) in names) if (n == name) return k;
        throw new ArgumentException($"name = '{name}': expected a feed-forward kind, one of {string.Join(", ", Names)}.", nameof(name));
    }

    /// <summary>Builds a layer of <paramref name="kind"/> from <paramref name="options"/> (see each field for the kinds that read it).</summary>
    /// <exception cref="ArgumentException">Options the kind's constructor rejects (the message names the value), e.g. soft-moe
    /// for a causal model without <see cref="FeedForwardOptions.AllowNonCausal"/>.</exception>
    public static FeedForwardLayer Create(Device device, FeedForwardKind kind, FeedForwardOptions options)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        var o = options;
        int moeExperts = o.Experts > 0 ? o.Experts : 128;
        return kind switch
        {
            FeedForwardKind.Ffw => new DenseFfw(device, o.Dim, o.Hidden, o.Activation, o.Seed),
            FeedForwardKind.Peer => new PeerLayer(device, o.Dim, new PeerOptions
            {
                Experts = o.Experts > 0 ? o.Experts : 1024 * 1024, Heads = o.Heads, TopK = o.TopK > 0 ? o.TopK : 16,
                QueryDim = o.QueryDim, Activation = o.Activation, QueryNorm = o.QueryNorm, Seed = o.Seed,
            }, o.ExpertShard),
            FeedForwardKind.Pkm => new ProductKeyMemory(device, o.Dim, o.Experts > 0 ? o.Experts : 1024 * 1024, o.Heads,
                o.TopK > 0 ? o.TopK : 32, o.QueryDim, o.QueryNorm, o.Seed),
            FeedForwardKind.MoeEc => new ExpertChoiceMoe(device, o.Dim, o.Hidden, moeExperts, o.CapacityFactor, o.Activation, o.Seed),
            FeedForwardKind.MoeTopK => new TopKMoe(device, o.Dim, o.Hidden, moeExperts, o.TopK > 0 ? o.TopK : 2, o.CapacityFactor,
                o.RenormalizeGates, o.Activation, o.Seed),
            FeedForwardKind.SoftMoe => new SoftMoe(device, o.Dim, o.Hidden, moeExperts, o.SlotsPerExpert, o.Causal, o.AllowNonCausal,
                o.AccountingTokens, o.Activation, o.Seed),
            _ => throw new ArgumentException($"kind = {kind}: expected one of {string.Join(", ", Enum.GetNames<FeedForwardKind>())}.", nameof(kind)),
        };
    }

    /// <summary>Builds a layer from a configuration name (see <see cref="Parse"/>).</summary>
    /// <exception cref="ArgumentException">An unknown name, or options the kind rejects.</exception>
    public static FeedForwardLayer Create(Device device, string kind, FeedForwardOptions options) => Create(device, Parse(kind), options);
}
