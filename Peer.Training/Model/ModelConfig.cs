// The model's shape as one record with a JSON form (snake_case keys), the presets, and validation that
// turns a contradiction into one line naming the setting. The feed-forward kind is chosen per block;
// by default PEER replaces the middle block's feed-forward layer, as in the paper.
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Text.Json.Serialization;
using Peer.Nn;

namespace Peer.Training;

/// <summary>Settings of the PEER layers of a model (see docs/peer-spec.md and <see cref="PeerOptions"/>).</summary>
public sealed record PeerConfig
{
    /// <summary>Query normalisations accepted by <see cref="QueryNorm"/>.</summary>
    public static readonly string[] QueryNorms = ["batch", "layer", "none"];

    /// <summary>Experts <c>N</c>, a perfect square <c>n*n</c>.</summary>
    public int Experts { get; init; } = 64 * 64;
    /// <summary>Retrieval heads <c>h</c>.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Experts kept per head <c>k</c>.</summary>
    public int TopK { get; init; } = 8;
    /// <summary>Query size <c>dq</c> per head (even).</summary>
    public int QueryDim { get; init; } = 32;
    /// <summary>Query normalisation: <c>batch</c> (BatchNorm, the paper's default), <c>layer</c> or <c>none</c>.</summary>
    public string QueryNorm { get; init; } = "batch";

    /// <summary>The layer options with parameters drawn from <paramref name="seed"/>.</summary>
    public PeerOptions ToOptions(ulong seed) => new()
    {
        Experts = Experts, Heads = Heads, TopK = TopK, QueryDim = QueryDim, Seed = seed,
        QueryNorm = QueryNorm switch { "layer" => PeerQueryNorm.LayerNorm, "none" => PeerQueryNorm.None, _ => PeerQueryNorm.BatchNorm },
    };

    /// <summary>Checks the settings with the layer's own rules.</summary>
    /// <param name="section">The key the settings sit under (<c>peer</c> or <c>pkm</c>), named in messages.</param>
    /// <exception cref="ConfigException">A setting breaks a rule; the message names it.</exception>
    public void Validate(string section = "peer")
    {
        ModelConfig.Require(QueryNorms.Contains(QueryNorm), $"{section}.query_norm = '{QueryNorm}': expected one of {string.Join(", ", QueryNorms)}");
        try
        {
            ToOptions(0).Validate();
        }
        catch (ArgumentException e)
        {
            // The layer names its options as C# properties; the configuration file writes them in snake_case.
            string message = PeerCli.ForPeople(e);
            message = Regex.Replace(message, @"\b(Experts|Heads|TopK|QueryDim)\b", m => $"{section}.{OptionKeys[m.Value]}");
            throw new ConfigException("config: " + message);
        }
    }

    static readonly Dictionary<string, string> OptionKeys = new() { ["Experts"] = "experts", ["Heads"] = "heads", ["TopK"] = "top_k", ["QueryDim"] = "query_dim" };
}

/// <summary>Settings of the mixture-of-experts baselines (<c>moe-ec</c>, <c>moe-topk</c>, <c>soft-moe</c>); each expert is a dense FFW of the model's hidden width.</summary>
public sealed record MoeConfig
{
    /// <summary>Experts E.</summary>
    public int Experts { get; init; } = 8;
    /// <summary>Experts per token for moe-topk.</summary>
    public int TopK { get; init; } = 2;
    /// <summary>Capacity factor (expert-choice slots = factor * T / E; top-k: factor * k * T / E).</summary>
    public double CapacityFactor { get; init; } = 1.0;
    /// <summary>Weight of moe-topk's load-balancing loss added to the language-model loss.</summary>
    public float AuxLossWeight { get; init; } = 0.01f;
    /// <summary>Slots per expert of soft-moe.</summary>
    public int SlotsPerExpert { get; init; } = 1;
    /// <summary>
    /// Lets a <c>soft-moe</c> block into this causal language model. Soft MoE mixes every token of the batch into every
    /// slot, so a position sees later positions (and other sequences): its loss is not a causal language-model loss.
    /// Off by default; a configuration naming soft-moe without it is refused.
    /// </summary>
    public bool AllowNonCausal { get; init; }

    /// <summary>Checks ranges.</summary>
    /// <exception cref="ConfigException">A setting is out of range.</exception>
    public void Validate()
    {
        ModelConfig.Require(Experts >= 1, $"moe.experts = {Experts}: expected at least 1");
        ModelConfig.Require(TopK >= 1 && TopK <= Experts, $"moe.top_k = {TopK}: expected 1..moe.experts ({Experts})");
        ModelConfig.Require(CapacityFactor > 0 && double.IsFinite(CapacityFactor), $"moe.capacity_factor = {CapacityFactor}: expected a positive number");
        ModelConfig.Require(AuxLossWeight >= 0 && float.IsFinite(AuxLossWeight), $"moe.aux_loss_weight = {AuxLossWeight}: expected 0 or more");
        ModelConfig.Require(SlotsPerExpert >= 1, $"moe.slots_per_expert = {SlotsPerExpert}: expected at least 1");
    }
}

/// <summary>Shape of the decoder-only transformer.</summary>
public sealed record ModelConfig
{
    /// <summary>Feed-forward kinds a block may use.</summary>
    public static readonly string[] FeedForwardKinds = ["ffw", "peer", "pkm", "moe-ec", "moe-topk", "soft-moe"];

    /// <summary>Whether a feed-forward kind takes its settings from <see cref="Moe"/>.</summary>
    public static bool IsMoe(string kind) => kind is "moe-ec" or "moe-topk" or "soft-moe";

    /// <summary>Vocabulary size (set from the tokenizer).</summary>
    public int VocabSize { get; init; } = 256;
    /// <summary>Model width <c>d</c>.</summary>
    public int DModel { get; init; } = 64;
    /// <summary>Number of transformer blocks.</summary>
    public int Layers { get; init; } = 3;
    /// <summary>Attention heads; must divide <see cref="DModel"/>.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Context length <c>T</c> in tokens.</summary>
    public int Context { get; init; } = 64;
    /// <summary>Hidden width of dense feed-forward layers (0 means 4 * d).</summary>
    public int FfwHidden { get; init; }
    /// <summary>Feed-forward kind of each block (<c>ffw</c>, <c>peer</c>, <c>pkm</c>, <c>moe-ec</c>, <c>moe-topk</c>, <c>soft-moe</c> (non-causal: needs
    /// <c>moe.allow_non_causal</c>)); null means PEER in the middle block and dense elsewhere.</summary>
    public string[]? Blocks { get; init; }
    /// <summary>Settings of the PEER layers.</summary>
    public PeerConfig Peer { get; init; } = new();
    /// <summary>Settings of the PKM layers (product-key memory: N values, h heads, k per head, query size, query norm).</summary>
    public PeerConfig Pkm { get; init; } = new() { TopK = 16 };
    /// <summary>Settings of the MoE layers.</summary>
    public MoeConfig Moe { get; init; } = new();
    /// <summary>Whether the output head shares the token embedding's weights.</summary>
    public bool TiedHead { get; init; } = true;
    /// <summary>Position encodings accepted by <see cref="Positions"/>.</summary>
    public static readonly string[] PositionKinds = ["learned", "rotary"];
    /// <summary>How tokens learn their positions: <c>learned</c> (a position embedding added to the token embedding) or <c>rotary</c>
    /// (attention queries and keys turned by position, <see cref="Ops.Rotary"/>; no position embedding).</summary>
    public string Positions { get; init; } = "learned";

    /// <summary>The feed-forward kind of every block, with the default resolved.</summary>
    public string[] BlockKinds() => Blocks ?? Enumerable.Range(0, Layers).Select(i => i == Layers / 2 ? "peer" : "ffw").ToArray();

    /// <summary>The dense hidden width in effect.</summary>
    public int HiddenWidth => FfwHidden > 0 ? FfwHidden : 4 * DModel;

    /// <summary>Checks the settings agree with each other.</summary>
    /// <exception cref="ConfigException">A setting is out of range or contradicts another; the message names it.</exception>
    public void Validate()
    {
        Require(VocabSize >= 2, $"vocab_size = {VocabSize}: expected at least 2");
        Require(DModel >= 1, $"d_model = {DModel}: expected a positive width");
        Require(Layers >= 1, $"layers = {Layers}: expected at least 1");
        Require(Heads >= 1 && DModel % Heads == 0, $"heads = {Heads} does not divide d_model = {DModel}");
        Require(Context >= 1, $"context = {Context}: expected at least 1 token");
        Require(PositionKinds.Contains(Positions), $"positions = '{Positions}': expected one of {string.Join(", ", PositionKinds)}");
        Require(Positions != "rotary" || DModel % Heads != 0 || DModel / Heads % 2 == 0,
            $"positions = 'rotary' turns pairs of each head's coordinates, but d_model / heads = {DModel} / {Heads} = {DModel / Math.Max(1, Heads)} is odd");
        Require(FfwHidden >= 0, $"ffw_hidden = {FfwHidden}: expected 0 (4 * d_model) or a positive width");
        if (Blocks != null)
            Require(Blocks.Length == Layers, $"blocks lists {Blocks.Length} kinds but layers = {Layers}");
        foreach (var kind in BlockKinds())
            Require(FeedForwardKinds.Contains(kind), $"blocks: '{kind}' is not a feed-forward kind; expected one of {string.Join(", ", FeedForwardKinds)}");
        if (BlockKinds().Contains("peer")) Peer.Validate();
        if (BlockKinds().Contains("pkm")) Pkm.Validate("pkm");
        if (BlockKinds().Any(IsMoe)) Moe.Validate();
        if (BlockKinds().Contains("soft-moe"))
            Require(Moe.AllowNonCausal, "blocks: 'soft-moe' mixes information across positions (a token sees later tokens), so it is refused in this causal language model; set moe.allow_non_causal = true to build it anyway");
    }

    internal static void Require(bool ok, string message)
    {
        if (!ok) throw new ConfigException("config: " + message);
    }

    /// <summary>The named preset: <c>tiny</c> (the default run, minutes on a 2-core CPU), <c>small</c> (about half an hour), or <c>paper</c> (the paper's PEER layer settings).
/// The record's own defaults (width 64, learned positions) are not a preset: they stay as they were so that older configuration files mean what they meant.</summary>
    /// <exception cref="ConfigException">Unknown name.</exception>
    public static ModelConfig Preset(string name) => name switch
    {
        // Tuned on the built-in corpus (Peer.Training/docs/tuning.md): rotary positions and width 128 beat the learned
        // positions and width 64 of the record's defaults by far at the same tokens.
        "tiny" => new ModelConfig { DModel = 128, Layers = 3, Heads = 4, Context = 64, Positions = "rotary" },
        "small" => new ModelConfig { DModel = 128, Layers = 3, Heads = 4, Context = 128, Positions = "rotary" },
        "paper" => new ModelConfig
        {
            DModel = 768, Layers = 12, Heads = 12, Context = 1024,
            Peer = new PeerConfig { Experts = 1024 * 1024, Heads = 8, TopK = 16, QueryDim = 128 },
        },
        _ => throw new ConfigException($"config: preset '{name}' is unknown; expected one of {string.Join(", ", PresetNames)}"),
    };

    /// <summary>Names accepted by <see cref="Preset"/>.</summary>
    public static readonly string[] PresetNames = ["tiny", "small", "paper"];

    /// <summary>Serializer settings of every configuration file (snake_case keys, indented, unknown keys rejected).</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The JSON form.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads the JSON form and validates it.</summary>
    /// <exception cref="ConfigException">Malformed JSON or invalid settings.</exception>
    public static ModelConfig FromJson(string json) => ConfigJson.Parse<ModelConfig>(json, "model config", c => c.Validate());
}

/// <summary>A configuration the user can fix; its message is one line.</summary>
public sealed class ConfigException(string message) : Exception(message);

static class ConfigJson
{
    public static T Parse<T>(string json, string what, Action<T> validate) where T : class
    {
        var value = StrictJson.Read<T>(json, problem => new ConfigException($"config: {what}: {problem}"));
        validate(value);
        return value;
    }
}
