// The image classifier's configuration (a small vision transformer or MLP-Mixer whose feed-forward layers are any of
// Peer's kinds), the training run's, their presets and validation: the vision counterparts of ModelConfig and
// TrainConfig, with the same JSON form (snake_case keys, unknown keys refused) and one-line errors naming the setting.
using System.Text.Json;
using Peer.Nn;

namespace Peer.Training;

/// <summary>Shape of the image classifier (see <see cref="VisionModel"/>).</summary>
public sealed record VisionModelConfig
{
    /// <summary>Token mixings a block may use: <c>attention</c> (multi-head self-attention, a ViT) or <c>mlp</c> (an MLP over the tokens, MLP-Mixer).</summary>
    public static readonly string[] TokenMixings = ["attention", "mlp"];

    /// <summary>Image height and width in pixels (square, grey-scale; set from the data).</summary>
    public int ImageSize { get; init; } = 28;
    /// <summary>Patch side in pixels; must divide <see cref="ImageSize"/>. Each patch is one token.</summary>
    public int PatchSize { get; init; } = 7;
    /// <summary>Side of the pixel window each token embeds, centred on its patch (0 means the patch itself). A larger window,
    /// by an even number of pixels, makes neighbouring tokens overlap (an overlapping patch embedding); pixels outside the
    /// image read as 0, the mean of the normalised pixels.</summary>
    public int PatchWindow { get; init; }
    /// <summary>Channels of the convolutional stem (0: none, the tokens embed the pixels themselves). With C channels, a
    /// <see cref="StemKernel"/> x <see cref="StemKernel"/> convolution (stride 1, zero padding) and GELU turn every pixel into C
    /// features first, and each token embeds the C features of every pixel of its window.</summary>
    public int StemChannels { get; init; }
    /// <summary>Kernel side of the convolutional stem (odd); read when <see cref="StemChannels"/> is positive.</summary>
    public int StemKernel { get; init; } = 3;
    /// <summary>Number of classes.</summary>
    public int Classes { get; init; } = 10;
    /// <summary>Token width <c>d</c>.</summary>
    public int DModel { get; init; } = 64;
    /// <summary>Number of blocks.</summary>
    public int Layers { get; init; } = 4;
    /// <summary>Token mixing of every block: <c>attention</c> or <c>mlp</c>.</summary>
    public string TokenMixing { get; init; } = "attention";
    /// <summary>Attention heads (must divide <see cref="DModel"/>); read with <c>attention</c> mixing.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Hidden width of the token-mixing MLP (0 means twice the number of tokens); read with <c>mlp</c> mixing.</summary>
    public int TokenHidden { get; init; }
    /// <summary>Hidden width of dense feed-forward layers and MoE experts (0 means 4 * d).</summary>
    public int FfwHidden { get; init; }
    /// <summary>Feed-forward kind of each block (<c>ffw</c>, <c>peer</c>, <c>pkm</c>, <c>moe-ec</c>, <c>moe-topk</c>, <c>soft-moe</c>); null means PEER everywhere.</summary>
    public string[]? Blocks { get; init; }
    /// <summary>Settings of the PEER layers.</summary>
    public PeerConfig Peer { get; init; } = new();
    /// <summary>Settings of the PKM layers.</summary>
    public PeerConfig Pkm { get; init; } = new() { TopK = 16 };
    /// <summary>Settings of the MoE layers (the auxiliary loss weight applies to moe-topk).</summary>
    public MoeConfig Moe { get; init; } = new();

    /// <summary>Patches (tokens) per image.</summary>
    public int Tokens => PatchSize > 0 ? (ImageSize / PatchSize) * (ImageSize / PatchSize) : 0;
    /// <summary>The side of the pixel window each token embeds, with the default resolved.</summary>
    public int WindowSize => PatchWindow > 0 ? PatchWindow : PatchSize;
    /// <summary>Values per pixel the patch embedding reads: the stem's channels, or 1 (the grey level).</summary>
    public int PixelFeatures => StemChannels > 0 ? StemChannels : 1;
    /// <summary>The feed-forward kind of every block, with the default resolved.</summary>
    public string[] BlockKinds() => Blocks ?? Enumerable.Repeat("peer", Layers).ToArray();
    /// <summary>The dense hidden width in effect.</summary>
    public int HiddenWidth => FfwHidden > 0 ? FfwHidden : 4 * DModel;
    /// <summary>The token-mixing hidden width in effect.</summary>
    public int TokenHiddenWidth => TokenHidden > 0 ? TokenHidden : 2 * Tokens;

    /// <summary>Checks the settings agree with each other.</summary>
    /// <exception cref="ConfigException">A setting is out of range or contradicts another; the message names it.</exception>
    public void Validate()
    {
        ModelConfig.Require(ImageSize >= 1, $"image_size = {ImageSize}: expected a positive size");
        ModelConfig.Require(PatchSize >= 1 && ImageSize % PatchSize == 0, $"patch_size = {PatchSize}: expected a positive divisor of image_size = {ImageSize}");
        ModelConfig.Require(PatchWindow == 0 || (PatchWindow >= PatchSize && (PatchWindow - PatchSize) % 2 == 0),
            $"patch_window = {PatchWindow}: expected 0 (the patch itself) or a window of at least patch_size = {PatchSize}, larger by an even number of pixels");
        ModelConfig.Require(StemChannels >= 0, $"stem_channels = {StemChannels}: expected 0 (no stem) or a positive number of channels");
        ModelConfig.Require(StemChannels == 0 || (StemKernel >= 1 && StemKernel % 2 == 1), $"stem_kernel = {StemKernel}: expected a positive odd kernel side");
        ModelConfig.Require(Classes >= 2, $"classes = {Classes}: expected at least 2");
        ModelConfig.Require(DModel >= 1, $"d_model = {DModel}: expected a positive width");
        ModelConfig.Require(Layers >= 1, $"layers = {Layers}: expected at least 1");
        ModelConfig.Require(TokenMixings.Contains(TokenMixing), $"token_mixing = '{TokenMixing}': expected one of {string.Join(", ", TokenMixings)}");
        ModelConfig.Require(TokenMixing != "attention" || (Heads >= 1 && DModel % Heads == 0), $"heads = {Heads} does not divide d_model = {DModel}");
        ModelConfig.Require(TokenHidden >= 0, $"token_hidden = {TokenHidden}: expected 0 (twice the tokens) or a positive width");
        ModelConfig.Require(FfwHidden >= 0, $"ffw_hidden = {FfwHidden}: expected 0 (4 * d_model) or a positive width");
        if (Blocks != null) ModelConfig.Require(Blocks.Length == Layers, $"blocks lists {Blocks.Length} kinds but layers = {Layers}");
        foreach (var kind in BlockKinds())
            ModelConfig.Require(ModelConfig.FeedForwardKinds.Contains(kind), $"blocks: '{kind}' is not a feed-forward kind; expected one of {string.Join(", ", ModelConfig.FeedForwardKinds)}");
        if (BlockKinds().Contains("peer")) Peer.Validate();
        if (BlockKinds().Contains("pkm")) Pkm.Validate();
        if (BlockKinds().Any(ModelConfig.IsMoe)) Moe.Validate();
    }
}

/// <summary>Settings of an image-classifier training run.</summary>
public sealed record VisionTrainConfig
{
    /// <summary>Folder of the four IDX files, or null for Debian's (<see cref="ImageDataset.DebianFolder"/>).</summary>
    public string? Data { get; init; }
    /// <summary>Training images held back (the last of the training file) for interim evaluations.</summary>
    public int Validation { get; init; } = 5000;
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 3500;
    /// <summary>Images per step.</summary>
    public int BatchSize { get; init; } = 128;
    /// <summary>Peak learning rate.</summary>
    public float LearningRate { get; init; } = 2e-3f;
    /// <summary>Final learning rate as a fraction of the peak.</summary>
    public float MinLearningRateFraction { get; init; } = 0.02f;
    /// <summary>Linear warmup steps.</summary>
    public int WarmupSteps { get; init; } = 100;
    /// <summary>AdamW decoupled weight decay.</summary>
    public float WeightDecay { get; init; } = 0.05f;
    /// <summary>Global gradient-norm clip; 0 disables.</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>Augmentation: each training image is translated by up to this many pixels in each direction (uniform, blank
    /// border); 0 disables. The moves are drawn from (seed, step), so a resumed run sees the same ones.</summary>
    public int AugmentShift { get; init; }
    /// <summary>Augmentation: each training image is mirrored left to right with probability 1/2.</summary>
    public bool AugmentFlip { get; init; }
    /// <summary>Label smoothing ε of the training loss: the target puts 1 - ε on the label and ε spread evenly over all classes.</summary>
    public float LabelSmoothing { get; init; }
    /// <summary>Test-time flips: evaluation scores each image by the mean of the class logits of the image and of its left-right
    /// mirror (for models trained with <see cref="AugmentFlip"/>); the loss is the cross-entropy of those mean logits. Off: the
    /// images alone.</summary>
    public bool EvalFlip { get; init; }
    /// <summary>Evaluate on the validation images every this many steps (and on the test images at the end); 0 only at the end.</summary>
    public int EvalEvery { get; init; } = 500;
    /// <summary>Write a checkpoint every this many steps (and at the end); 0 only at the end.</summary>
    public int CheckpointEvery { get; init; } = 500;
    /// <summary>Seed of initialisation and batch order.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Device name: cpu, cuda, opencl or auto.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Checks ranges.</summary>
    /// <exception cref="ConfigException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        ModelConfig.Require(Validation >= 0, $"validation = {Validation}: expected 0 or more images");
        ModelConfig.Require(Steps >= 1, $"steps = {Steps}: expected at least 1");
        ModelConfig.Require(BatchSize >= 2, $"batch_size = {BatchSize}: expected at least 2 (BatchNorm of the PEER query needs two rows)");
        ModelConfig.Require(LearningRate > 0 && float.IsFinite(LearningRate), $"learning_rate = {LearningRate}: expected a positive number");
        ModelConfig.Require(MinLearningRateFraction is >= 0 and <= 1, $"min_learning_rate_fraction = {MinLearningRateFraction}: expected 0..1");
        ModelConfig.Require(WarmupSteps >= 0 && WarmupSteps <= Steps, $"warmup_steps = {WarmupSteps}: expected 0..steps ({Steps})");
        ModelConfig.Require(WeightDecay >= 0, $"weight_decay = {WeightDecay}: expected 0 or more");
        ModelConfig.Require(ClipNorm >= 0, $"clip_norm = {ClipNorm}: expected 0 (off) or a positive norm");
        ModelConfig.Require(AugmentShift >= 0, $"augment_shift = {AugmentShift}: expected 0 (off) or a positive number of pixels");
        ModelConfig.Require(LabelSmoothing is >= 0 and < 1, $"label_smoothing = {LabelSmoothing}: expected 0 (off) up to below 1");
        ModelConfig.Require(EvalEvery >= 0, $"eval_every = {EvalEvery}: expected 0 or more");
        ModelConfig.Require(CheckpointEvery >= 0, $"checkpoint_every = {CheckpointEvery}: expected 0 or more");
        ModelConfig.Require(Device is "cpu" or "cuda" or "opencl" or "auto", $"device = '{Device}': expected one of cpu, cuda, opencl, auto");
    }
}

/// <summary>An image-classifier run's whole configuration: what <c>peer vision train --config</c> reads and its checkpoints store.</summary>
public sealed record VisionRunConfig
{
    /// <summary>The model.</summary>
    public VisionModelConfig Model { get; init; } = new();
    /// <summary>The training run.</summary>
    public VisionTrainConfig Train { get; init; } = new();

    /// <summary>Validates both parts.</summary>
    /// <exception cref="ConfigException">Invalid settings.</exception>
    public void Validate()
    {
        Model.Validate();
        Train.Validate();
    }

    /// <summary>Names accepted by <see cref="Preset"/>.</summary>
    public static readonly string[] PresetNames = ["peer", "dense"];

    /// <summary>
    /// The named preset for Fashion-MNIST: <c>peer</c> (PEER feed-forward layers in every block) or <c>dense</c> (dense
    /// feed-forward layers of about the same forward FLOPs per token, the baseline it is compared with in docs/results.md).
    /// </summary>
    /// <exception cref="ConfigException">Unknown name.</exception>
    public static VisionRunConfig Preset(string name)
    {
        // A ViT of 16 tokens (7x7-pixel patches) after a 3x3 convolutional stem of 16 channels, d = 64, 4 blocks; PEER of 64²
        // experts, h = 4, k = 4: 36,992 forward FLOPs per token, against a dense layer of H = 144 at 36,864. 4,000 steps of 128
        // images with left-right flips are 9.3 epochs of the 55,000 (docs/results.md: the stem and the flips raised validation
        // accuracy for both kinds over the stem-less 3,500-step presets).
        var model = new VisionModelConfig
        {
            PatchSize = 7, StemChannels = 16, StemKernel = 3, DModel = 64, Layers = 4, Heads = 4,
            Peer = new PeerConfig { Experts = 64 * 64, Heads = 4, TopK = 4, QueryDim = 32 },
        };
        var train = new VisionTrainConfig { Steps = 4000, BatchSize = 128, LearningRate = 2e-3f, WarmupSteps = 100, AugmentFlip = true, EvalFlip = true,
            EvalEvery = 500, CheckpointEvery = 500 };
        return name switch
        {
            "peer" => new VisionRunConfig { Model = model with { Blocks = Enumerable.Repeat("peer", model.Layers).ToArray() }, Train = train },
            "dense" => new VisionRunConfig { Model = model with { Blocks = Enumerable.Repeat("ffw", model.Layers).ToArray(), FfwHidden = 144 }, Train = train },
            _ => throw new ConfigException($"config: preset '{name}' is unknown; expected one of {string.Join(", ", PresetNames)}"),
        };
    }

    /// <summary>The JSON form.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ModelConfig.Json);

    /// <summary>Reads the JSON form and validates it.</summary>
    /// <exception cref="ConfigException">Malformed JSON or invalid settings.</exception>
    public static VisionRunConfig FromJson(string json) => ConfigJson.Parse<VisionRunConfig>(json, "vision run config", c => c.Validate());
}
