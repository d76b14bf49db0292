// The image classifier: square grey-scale images cut into p x p patches (one token each; a token may embed a larger
// window centred on its patch, overlapping its neighbours: Ops.PatchWindows; an optional convolutional stem of one
// k x k convolution + GELU gives every pixel C features first), a linear patch embedding plus learned position
// embeddings, pre-norm blocks of token mixing (non-causal multi-head self-attention as in ViT, or an MLP across the
// tokens as in MLP-Mixer) and a feed-forward layer of any kind (Peer.Nn's FeedForwardFactory), a final LayerNorm, mean
// pooling over the tokens and a linear head.
// Shapes: B images of H x W pixels, P = (H/p)(W/p) tokens of width d; activations are kept as [B*P, d] rows.
// Initialisation (ours): position embeddings N(0, 0.02); linear maps U(-1/sqrt(in), 1/sqrt(in)) as PyTorch's Linear,
// the output projection of each block's token mixing scaled by 1/sqrt(2 * layers) as in GPT-2.
using Peer.Nn;

namespace Peer.Training;

/// <summary>A ViT- or Mixer-style image classifier (see <see cref="VisionModelConfig"/>).</summary>
public sealed class VisionModel : Module
{
    readonly Tensor? stemWeight, stemBias;    // [C, k*k], [C]
    readonly Tensor patchWeight, patchBias;   // [d, w*w*C], [d]
    readonly Tensor positionEmbedding;        // [P, d]
    readonly VisionBlock[] blocks;
    readonly Tensor normWeight, normBias;     // [d]
    readonly Tensor headWeight, headBias;     // [C, d], [C]

    /// <summary>The configuration the model was built from.</summary>
    public VisionModelConfig Config { get; }

    /// <summary>Builds the model with weights drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ConfigException">The configuration is invalid.</exception>
    public VisionModel(Device device, VisionModelConfig config, ulong seed) : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        ulong s = seed * 1000;
        int d = config.DModel, patch = config.WindowSize * config.WindowSize * config.PixelFeatures;
        if (config.StemChannels > 0)
        {
            int k2 = config.StemKernel * config.StemKernel;
            stemWeight = Parameter("stem.weight", LanguageModel.LinearWeight(device, s + 5, config.StemChannels, k2));
            stemBias = Parameter("stem.bias", LanguageModel.LinearBias(device, s + 6, config.StemChannels, k2));
        }
        patchWeight = Parameter("patch_embed.weight", LanguageModel.LinearWeight(device, s + 1, d, patch));
        patchBias = Parameter("patch_embed.bias", LanguageModel.LinearBias(device, s + 2, d, patch));
        positionEmbedding = Parameter("pos_emb.weight", Ops.Normal(device, s + 3, 0f, 0.02f, config.Tokens, d));
        var kinds = config.BlockKinds();
        blocks = new VisionBlock[config.Layers];
        for (int i = 0; i < config.Layers; i++)
            blocks[i] = Child($"blocks.{i}", new VisionBlock(device, config, kinds[i], s + 10 + 10 * (ulong)i));
        normWeight = Parameter("norm.weight", Tensor.Full(device, 1f, d));
        normBias = Parameter("norm.bias", Tensor.Zeros(device, d));
        headWeight = Parameter("head.weight", LanguageModel.LinearWeight(device, s + 4, config.Classes, d));
        headBias = Parameter("head.bias", Tensor.Zeros(device, config.Classes));
    }

    /// <summary>The PEER layers with their dotted names.</summary>
    public IEnumerable<(string Name, PeerLayer Layer)> PeerLayers()
    {
        for (int i = 0; i < blocks.Length; i++)
            if (blocks[i].Ffw is PeerLayer p) yield return ($"blocks.{i}.ffw", p);
    }

    /// <summary>The tokens <c>[B*P, w*w*C]</c> of images F32 <c>[B, H*W]</c>: the w x w pixel window centred on patch <c>(gy, gx)</c> of
    /// image b (w = <see cref="VisionModelConfig.WindowSize"/>, the patch itself by default) is row <c>b P + gy (W/p) + gx</c>, its pixels
    /// row-major, 0 outside the image (<see cref="Ops.PatchWindows"/>); each pixel is its grey level (C = 1) or, with a convolutional
    /// stem, the stem's C features of it. Differentiable in the stem's weights only (images are data).</summary>
    /// <exception cref="ArgumentException">The images are not F32 [B, H*W] for this model's image size.</exception>
    public Tensor Patches(Tensor images)
    {
        int size = Config.ImageSize;
        var pixels = images.Detach(); // the first PatchWindows checks it is F32 [B, size * size]
        if (stemWeight is not null)
        {
            // The convolution: the k x k window around every pixel, then one Linear + GELU over it; rows are pixels, so the
            // result read as [B, H*W*C] is the feature map channels last.
            var around = Ops.PatchWindows(pixels, size, size, 1, Config.StemKernel);                        // [B*H*W, k*k]
            pixels = Ops.LinearGelu(around, stemWeight, stemBias!).Reshape(images.Shape[0], size * size * Config.StemChannels);
        }
        return Ops.PatchWindows(pixels, size, size, Config.PatchSize, Config.WindowSize, 0f, Config.PixelFeatures);
    }

    /// <summary>Class logits F32 <c>[B, classes]</c> of images F32 <c>[B, H*W]</c> (normalised pixels, row-major).</summary>
    /// <exception cref="ArgumentException">The images are not F32 [B, H*W] for this model's image size.</exception>
    public Tensor Forward(Tensor images)
    {
        int tokens = Config.Tokens, d = Config.DModel;
        var patches = Patches(images);
        int b = images.Shape[0];
        var positions = new int[b * tokens];
        for (int i = 0; i < positions.Length; i++) positions[i] = i % tokens;
        // Every residual add runs fused with the LayerNorm that reads its sum: the first block's norm1 after the position
        // embedding, each block's norm2 after its token mixing, the next block's norm1 (the final norm after the last block)
        // after its feed-forward layer. Only the normed rows h go on; the sums x carry the residual stream.
        var (w0, b0) = NormBefore(0);
        var (x, h) = Ops.AddLayerNorm(Ops.Linear(patches, patchWeight, patchBias),
            Ops.Embedding(Tensor.FromArray(Device, positions, b * tokens), positionEmbedding, sparseGrad: false), w0, b0); // [B*P, d]
        for (int i = 0; i < blocks.Length; i++)
        {
            var (w, bias) = NormBefore(i + 1);
            (x, h) = blocks[i].Forward(x, h, b, tokens, w, bias);
        }
        var pooled = Ops.MeanLastDim(Ops.Transpose(h.Reshape(b, tokens, d))); // [B, d]
        return Ops.Linear(pooled, headWeight, headBias);                       // [B, C]
    }

    // The LayerNorm that reads the stream before block i: its norm1, or after the last block the final norm.
    (Tensor Weight, Tensor Bias) NormBefore(int i) => i < blocks.Length ? blocks[i].Norm1 : (normWeight, normBias);

    /// <summary>Mean cross-entropy of <paramref name="images"/> F32 <c>[B, H*W]</c> against <paramref name="labels"/> I32 <c>[B]</c>,
    /// with the labels smoothed by <paramref name="smoothing"/> ε (the target is 1 - ε on the label plus ε / C on every class, so the
    /// loss is (1 - ε) CE + ε times the mean over classes of -log p), plus the weighted auxiliary losses of top-k MoE blocks; also
    /// returns the logits.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes that do not fit, or ε outside [0, 1).</exception>
    public (Tensor Loss, Tensor Logits) Loss(Tensor images, Tensor labels, float smoothing = 0f)
    {
        Check.That(smoothing is >= 0f and < 1f, nameof(smoothing), smoothing, "a label smoothing in [0, 1)");
        var logits = Forward(images);
        var loss = Ops.CrossEntropy(logits, labels);
        if (smoothing > 0f)
            loss = Ops.Add(Ops.Scale(loss, 1f - smoothing), Ops.Scale(Ops.Mean(Ops.LogSoftmax(logits)), -smoothing));
        foreach (var block in blocks)
            if (block.Ffw.AuxiliaryLoss is { } aux && Config.Moe.AuxLossWeight > 0) loss = Ops.Add(loss, Ops.Scale(aux, Config.Moe.AuxLossWeight));
        return (loss, logits);
    }
}

/// <summary>One block: <c>x += mix(LN(x))</c>, <c>x += ffw(LN(x))</c>, each add fused with the LayerNorm after it.</summary>
internal sealed class VisionBlock : Module
{
    readonly Tensor norm1Weight, norm1Bias, norm2Weight, norm2Bias; // [d]
    readonly Tensor mixInWeight, mixInBias;   // attention: qkv [3d, d], [3d]; mlp: [Th, P], [Th]
    readonly Tensor mixOutWeight, mixOutBias; // attention: [d, d], [d]; mlp: [P, Th], [P]
    readonly bool attention;
    readonly int heads;

    public FeedForwardLayer Ffw { get; }

    public VisionBlock(Device device, VisionModelConfig c, string kind, ulong seed) : base(device)
    {
        int d = c.DModel;
        attention = c.TokenMixing == "attention";
        heads = c.Heads;
        norm1Weight = Parameter("norm1.weight", Tensor.Full(device, 1f, d));
        norm1Bias = Parameter("norm1.bias", Tensor.Zeros(device, d));
        float outScale = 1f / MathF.Sqrt(2f * c.Layers);
        if (attention)
        {
            mixInWeight = Parameter("attn.qkv.weight", LanguageModel.LinearWeight(device, seed + 1, 3 * d, d));
            mixInBias = Parameter("attn.qkv.bias", LanguageModel.LinearBias(device, seed + 2, 3 * d, d));
            mixOutWeight = Parameter("attn.out.weight", LanguageModel.LinearWeight(device, seed + 3, d, d, outScale));
            mixOutBias = Parameter("attn.out.bias", Tensor.Zeros(device, d));
        }
        else
        {
            int p = c.Tokens, th = c.TokenHiddenWidth;
            mixInWeight = Parameter("token_mlp.fc1.weight", LanguageModel.LinearWeight(device, seed + 1, th, p));
            mixInBias = Parameter("token_mlp.fc1.bias", LanguageModel.LinearBias(device, seed + 2, th, p));
            mixOutWeight = Parameter("token_mlp.fc2.weight", LanguageModel.LinearWeight(device, seed + 3, p, th, outScale));
            mixOutBias = Parameter("token_mlp.fc2.bias", Tensor.Zeros(device, p));
        }
        norm2Weight = Parameter("norm2.weight", Tensor.Full(device, 1f, d));
        norm2Bias = Parameter("norm2.bias", Tensor.Zeros(device, d));
        var keys = kind == "pkm" ? c.Pkm : c.Peer;
        bool moe = ModelConfig.IsMoe(kind);
        Ffw = Child("ffw", FeedForwardFactory.Create(device, kind, new FeedForwardOptions
        {
            Dim = d, Hidden = c.HiddenWidth, Seed = seed + 5,
            Experts = moe ? c.Moe.Experts : keys.Experts,
            Heads = keys.Heads, QueryDim = keys.QueryDim, QueryNorm = keys.ToOptions(0).QueryNorm,
            TopK = moe ? c.Moe.TopK : keys.TopK,
            CapacityFactor = c.Moe.CapacityFactor,
            SlotsPerExpert = c.Moe.SlotsPerExpert,
            Causal = false,
        }));
    }

    /// <summary>The first norm's weight and bias, which the residual add before this block runs fused with.</summary>
    public (Tensor Weight, Tensor Bias) Norm1 => (norm1Weight, norm1Bias);

    // x: [B*P, d] the residual stream, h = norm1(x) -> the stream after the block and its next norm (nextWeight, nextBias) [B*P, d]
    public (Tensor X, Tensor H) Forward(Tensor x, Tensor h, int b, int tokens, Tensor nextWeight, Tensor nextBias)
    {
        int d = x.Shape[1];
        var (mid, h2) = Ops.AddLayerNorm(x, attention ? Attend(h, b, tokens, d) : MixTokens(h, b, tokens, d), norm2Weight, norm2Bias);
        return Ops.AddLayerNorm(mid, Ffw.Forward(h2), nextWeight, nextBias);
    }

    // Non-causal multi-head self-attention over the P tokens of each image: one Linear for q, k, v, the fused attention
    // kernel (Ops.Attention, which never stores the [P, P] scores), the heads joined and the output Linear.
    Tensor Attend(Tensor h, int b, int tokens, int d)
    {
        int dh = d / heads;
        var qkv = Ops.Permute(Ops.Linear(h, mixInWeight, mixInBias).Reshape(b, tokens, 3 * heads, dh), 0, 2, 1, 3); // [B, 3H, P, Dh]
        var q = Ops.Slice(qkv, 1, 0, heads);                                                                      // [B, H, P, Dh]
        var k = Ops.Slice(qkv, 1, heads, heads);
        var v = Ops.Slice(qkv, 1, 2 * heads, heads);
        var attended = Ops.Permute(Ops.Attention(q, k, v, causal: false), 0, 2, 1, 3).Reshape(b * tokens, d);      // [B*P, d]
        return Ops.Linear(attended, mixOutWeight, mixOutBias);
    }

    // MLP-Mixer token mixing: the same two-layer MLP across the tokens of every channel.
    Tensor MixTokens(Tensor h, int b, int tokens, int d)
    {
        var channels = Ops.Transpose(h.Reshape(b, tokens, d));                                                  // [B, d, P]
        var mixed = Ops.Linear(Ops.Gelu(Ops.Linear(channels, mixInWeight, mixInBias)), mixOutWeight, mixOutBias); // [B, d, P]
        return Ops.Transpose(mixed).Reshape(b * tokens, d);
    }
}
