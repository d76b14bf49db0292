// The decoder-only transformer: token and learned position embeddings (or rotary positions on the attention
// queries and keys instead), pre-norm blocks of causal multi-head attention and a feed-forward layer chosen per block (dense or PEER), a final LayerNorm and
// an output head tied to the token embedding or separate. Shapes: B sequences of T tokens, width d,
// H heads of Dh = d / H; activations are kept as [B*T, d] rows between blocks.
// The feed-forward layers come from Peer.Nn's FeedForwardFactory (ffw, peer, pkm, moe-ec, moe-topk, soft-moe).
// Initialisation (ours): embeddings N(0, 0.02); attention weights and biases U(-1/sqrt(in), 1/sqrt(in)) as
// PyTorch's Linear, with the attention output projection scaled by 1/sqrt(2 * layers) as in GPT-2.
using Peer.Distributed;
using Peer.Nn;

namespace Peer.Training;

/// <summary>A decoder-only transformer language model (see <see cref="ModelConfig"/>).</summary>
public sealed class LanguageModel : Module
{
    readonly Tensor tokenEmbedding;    // [V, d]
    readonly Tensor? positionEmbedding; // [context, d] when positions are learned
    readonly Block[] blocks;
    readonly Tensor normWeight, normBias; // [d]
    readonly Tensor? head;             // [V, d] when untied

    /// <summary>The configuration the model was built from.</summary>
    public ModelConfig Config { get; }

    /// <summary>Builds the model with weights drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ConfigException">The configuration is invalid.</exception>
    public LanguageModel(Device device, ModelConfig config, ulong seed) : this(device, config, seed, null) { }

    /// <summary>
    /// Builds the model for one rank of a distributed run (null: one process): the query BatchNorm of PEER and PKM layers takes its
    /// statistics over every rank's tokens, and with <see cref="ParallelMode.Experts"/> each PEER layer holds its rank's columns of the
    /// expert tables (drawn as the one-process model draws them). All ranks must then run every forward and backward together.
    /// </summary>
    /// <exception cref="ConfigException">The configuration is invalid.</exception>
    public LanguageModel(Device device, ModelConfig config, ulong seed, Distribution? distribution) : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        ulong s = seed * 1000;
        int d = config.DModel;
        tokenEmbedding = Parameter("tok_emb.weight", Ops.Normal(device, s + 1, 0f, 0.02f, config.VocabSize, d));
        if (config.Positions == "learned")
            positionEmbedding = Parameter("pos_emb.weight", Ops.Normal(device, s + 2, 0f, 0.02f, config.Context, d));
        var kinds = config.BlockKinds();
        blocks = new Block[config.Layers];
        for (int i = 0; i < config.Layers; i++)
            blocks[i] = Child($"blocks.{i}", new Block(device, config, kinds[i], s + 10 + 10 * (ulong)i, distribution));
        normWeight = Parameter("norm.weight", Tensor.Full(device, 1f, d));
        normBias = Parameter("norm.bias", Tensor.Zeros(device, d));
        if (!config.TiedHead) head = Parameter("head.weight", LinearWeight(device, s + 3, config.VocabSize, d));
    }

    internal static Tensor LinearWeight(Device device, ulong seed, int outFeatures, int inFeatures, float scale = 1f)
    {
        float bound = scale / MathF.Sqrt(inFeatures);
        return Ops.Uniform(device, seed, -bound, bound, outFeatures, inFeatures);
    }

    internal static Tensor LinearBias(Device device, ulong seed, int outFeatures, int inFeatures)
    {
        float bound = 1f / MathF.Sqrt(inFeatures);
        return Ops.Uniform(device, seed, -bound, bound, outFeatures);
    }

    /// <summary>The parameters split by columns between ranks (expert parallelism), with how; empty otherwise.</summary>
    public IReadOnlyDictionary<string, ColumnShard> ShardedParameters()
    {
        var result = new Dictionary<string, ColumnShard>();
        foreach (var (name, layer) in PeerLayers())
            if (layer.Shard is { } shard)
            {
                result[$"{name}.experts.down"] = shard;
                result[$"{name}.experts.up"] = shard;
            }
        return result;
    }

    /// <summary>The PEER layers with their dotted names.</summary>
    public IEnumerable<(string Name, PeerLayer Layer)> PeerLayers()
    {
        for (int i = 0; i < blocks.Length; i++)
            if (blocks[i].Peer is { } p) yield return ($"blocks.{i}.ffw", p);
    }

    /// <summary>Next-token logits <c>[B*T, V]</c> of <paramref name="tokens"/> I32 <c>[B, T]</c>, T at most the context.</summary>
    /// <exception cref="ArgumentException">Not I32 rank 2, or longer than the context.</exception>
    public Tensor Forward(Tensor tokens)
    {
        Check.DType(tokens, DType.I32, nameof(tokens));
        Check.That(tokens.Rank == 2 && tokens.Shape[1] >= 1 && tokens.Shape[1] <= Config.Context, nameof(tokens), tokens.Shape, $"[B, T] with 1 <= T <= context = {Config.Context}");
        int b = tokens.Shape[0], t = tokens.Shape[1];
        // Dense table gradients: the vocabulary and context are small, and the tied head adds a dense gradient anyway.
        var x = Ops.Embedding(tokens.Reshape(b * t), tokenEmbedding, sparseGrad: false); // [B*T, d]
        // Each residual add runs fused with the norm that reads its sum (Ops.AddLayerNorm): h is the next norm's output.
        var (firstWeight, firstBias) = NormAfter(-1);
        Tensor h;
        if (positionEmbedding != null)
        {
            var positions = new int[b * t];
            for (int i = 0; i < positions.Length; i++) positions[i] = i % t;
            var pos = Ops.Embedding(Tensor.FromArray(Device, positions, b * t), positionEmbedding, sparseGrad: false);
            (x, h) = Ops.AddLayerNorm(x, pos, firstWeight, firstBias);
        }
        else h = Ops.LayerNorm(x, firstWeight, firstBias);
        for (int i = 0; i < blocks.Length; i++)
        {
            var (nextWeight, nextBias) = NormAfter(i);
            (x, h) = blocks[i].Forward(x, h, b, t, nextWeight, nextBias);
        }
        return Ops.MatMul(h, head ?? tokenEmbedding, transB: true); // [B*T, V]
    }

    // The parameters of the norm that reads the residual stream after block i (i = -1: the embeddings): the next block's first norm, or the final norm.
    (Tensor Weight, Tensor Bias) NormAfter(int i) => i + 1 < blocks.Length ? blocks[i + 1].Norm1 : (normWeight, normBias);

    /// <summary>Mean next-token cross-entropy (plus weighted auxiliary losses of top-k MoE blocks) of windows I32 <c>[B, T + 1]</c> given row-major (inputs are the first T tokens of each, targets the last T).</summary>
    /// <exception cref="ArgumentException">The windows do not split into <paramref name="batch"/> rows of 2 to context + 1 tokens.</exception>
    public Tensor Loss(int[] windows, int batch)
    {
        ArgumentNullException.ThrowIfNull(windows);
        Check.That(batch >= 1 && windows.Length % batch == 0 && windows.Length / batch >= 2, nameof(windows), windows.Length, $"batch = {batch} rows of at least 2 tokens");
        int w = windows.Length / batch, t = w - 1;
        var inputs = new int[batch * t];
        var targets = new int[batch * t];
        for (int i = 0; i < batch; i++)
        {
            Array.Copy(windows, i * w, inputs, i * t, t);
            Array.Copy(windows, i * w + 1, targets, i * t, t);
        }
        var x = Tensor.FromArray(Device, inputs, batch, t);
        var y = Tensor.FromArray(Device, targets, batch * t);
        var loss = Ops.CrossEntropy(Forward(x), y);
        // Load-balancing losses of top-k MoE blocks (weighted), as docs/layers.md defines them (moe-topk).
        foreach (var block in blocks)
            if (block.AuxiliaryLoss is { } aux && Config.Moe.AuxLossWeight > 0) loss = Ops.Add(loss, Ops.Scale(aux, Config.Moe.AuxLossWeight));
        return loss;
    }

    sealed class Block : Module
    {
        readonly Tensor norm1Weight, norm1Bias, norm2Weight, norm2Bias;  // [d]
        readonly Tensor qkvWeight, qkvBias;                              // [3d, d], [3d]
        readonly Tensor outWeight, outBias;                              // [d, d], [d]
        readonly FeedForwardLayer ffw;                                   // [rows, d] -> [rows, d]
        readonly int heads;
        readonly bool rotary;

        public PeerLayer? Peer => ffw as PeerLayer;
        public Tensor? AuxiliaryLoss => ffw.AuxiliaryLoss;

        public Block(Device device, ModelConfig c, string kind, ulong seed, Distribution? distribution) : base(device)
        {
            int d = c.DModel;
            heads = c.Heads;
            rotary = c.Positions == "rotary";
            norm1Weight = Parameter("norm1.weight", Tensor.Full(device, 1f, d));
            norm1Bias = Parameter("norm1.bias", Tensor.Zeros(device, d));
            qkvWeight = Parameter("attn.qkv.weight", LinearWeight(device, seed + 1, 3 * d, d));
            qkvBias = Parameter("attn.qkv.bias", LinearBias(device, seed + 2, 3 * d, d));
            outWeight = Parameter("attn.out.weight", LinearWeight(device, seed + 3, d, d, 1f / MathF.Sqrt(2f * c.Layers)));
            outBias = Parameter("attn.out.bias", Tensor.Zeros(device, d));
            norm2Weight = Parameter("norm2.weight", Tensor.Full(device, 1f, d));
            norm2Bias = Parameter("norm2.bias", Tensor.Zeros(device, d));
            var keys = kind == "pkm" ? c.Pkm : c.Peer;
            var options = new FeedForwardOptions
            {
                Dim = d, Hidden = c.HiddenWidth, Seed = seed + 5,
                Experts = ModelConfig.IsMoe(kind) ? c.Moe.Experts : keys.Experts,
                Heads = keys.Heads, QueryDim = keys.QueryDim, QueryNorm = keys.ToOptions(0).QueryNorm,
                TopK = ModelConfig.IsMoe(kind) ? c.Moe.TopK : keys.TopK,
                CapacityFactor = c.Moe.CapacityFactor,
                SlotsPerExpert = c.Moe.SlotsPerExpert,
                Causal = true,
                AllowNonCausal = c.Moe.AllowNonCausal,
                ExpertShard = distribution is { Mode: ParallelMode.Experts } && kind == "peer" ? new ColumnShard(distribution.Group, d) : null,
            };
            ffw = Child("ffw", FeedForwardFactory.Create(device, kind, options));
            var group = distribution is { Group.Size: > 1 } ? distribution.Group : null;
            if (ffw is PeerLayer peer) peer.BatchGroup = group;
            else if (ffw is ProductKeyMemory pkm) pkm.BatchGroup = group;
        }

        /// <summary>The first norm's weight and bias, which the residual add before this block runs fused with.</summary>
        public (Tensor Weight, Tensor Bias) Norm1 => (norm1Weight, norm1Bias);

        // x: [B*T, d] the residual stream, h = norm1(x) -> the stream after the block and its next norm (nextWeight, nextBias) [B*T, d]
        public (Tensor X, Tensor H) Forward(Tensor x, Tensor h, int b, int t, Tensor nextWeight, Tensor nextBias)
        {
            int d = x.Shape[1], dh = d / heads;
            var qkv = Ops.Permute(Ops.Linear(h, qkvWeight, qkvBias).Reshape(b, t, 3 * heads, dh), 0, 2, 1, 3); // [B, 3H, T, Dh]
            var q = Ops.Slice(qkv, 1, 0, heads);                                                             // [B, H, T, Dh]
            var k = Ops.Slice(qkv, 1, heads, heads);
            if (rotary) (q, k) = (Ops.Rotary(q), Ops.Rotary(k));
            var v = Ops.Slice(qkv, 1, 2 * heads, heads);
            var attended = Ops.Permute(Ops.CausalAttention(q, k, v), 0, 2, 1, 3).Reshape(b * t, d);          // [B*T, d]
            var (mid, h2) = Ops.AddLayerNorm(x, Ops.Linear(attended, outWeight, outBias), norm2Weight, norm2Bias);
            return Ops.AddLayerNorm(mid, ffw.Forward(h2), nextWeight, nextBias);
        }
    }
}
