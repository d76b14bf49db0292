// A synthetic image task built so that a PEER layer's experts must specialise by class: each of the 10 classes owns its
// own 6 pixels of an 8x8 image (disjoint sets), where an image of that class carries the class's fixed pattern times a
// random sign; every other pixel is weak noise. The mean image of every class is flat (the sign flips the pattern), so no
// linear function of the pixels separates the classes: the model needs its non-linear layers, and the classes' tokens lie
// in disjoint subspaces, which a PEER layer's retrieval can tell apart. Written as the four IDX files of a dataset folder.
using Peer.Training;

namespace Peer.Tests;

static class SyntheticImages
{
    public const int Size = 8, Classes = 10, PixelsPerClass = 6;

    /// <summary>Pixel p's class owner, or -1 (4 of the 64 pixels belong to no class).</summary>
    static int Owner(int p) => p < Classes * PixelsPerClass ? p / PixelsPerClass : -1;

    /// <summary>Writes <paramref name="train"/> training and <paramref name="test"/> test images (labels cycling over the classes) to <paramref name="dir"/>.</summary>
    public static void Write(string dir, int train, int test, int seed = 1)
    {
        var rng = new Random(seed);
        var pattern = Enumerable.Range(0, Size * Size).Select(_ => rng.NextDouble() < 0.5 ? -1.0 : 1.0).ToArray();
        foreach (var (prefix, count) in new[] { ("train", train), ("t10k", test) })
        {
            var pixels = new byte[count * Size * Size];
            var labels = new byte[count];
            for (int i = 0; i < count; i++)
            {
                int c = i % Classes;
                labels[i] = (byte)c;
                double sign = rng.NextDouble() < 0.5 ? -1 : 1;
                for (int p = 0; p < Size * Size; p++)
                {
                    double v = 0.12 * (rng.NextDouble() * 2 - 1) + (Owner(p) == c ? 0.8 * sign * pattern[p] : 0);
                    pixels[i * Size * Size + p] = (byte)Math.Clamp(Math.Round(127.5 + 127.5 * v), 0, 255);
                }
            }
            Idx.Write(Path.Combine(dir, $"{prefix}-images-idx3-ubyte.gz"), new IdxArray([count, Size, Size], pixels), gzip: true);
            Idx.Write(Path.Combine(dir, $"{prefix}-labels-idx1-ubyte.gz"), new IdxArray([count], labels), gzip: true);
        }
    }

    /// <summary>
    /// One block, width 16, with the whole image as one patch: attention over one token is a linear map, so besides LayerNorm the
    /// PEER feed-forward layer (16² experts) is the model's only non-linearity and has to tell the classes apart.
    /// </summary>
    public static VisionRunConfig Config(int steps, int validation, ulong seed = 3) => new()
    {
        Model = new VisionModelConfig
        {
            ImageSize = Size, PatchSize = Size, Classes = Classes, DModel = 16, Layers = 1, Heads = 2, Blocks = ["peer"],
            Peer = new PeerConfig { Experts = 16 * 16, Heads = 2, TopK = 4, QueryDim = 8 },
        },
        Train = new VisionTrainConfig
        {
            Validation = validation, Steps = steps, BatchSize = 32, LearningRate = 1e-2f, WarmupSteps = Math.Min(20, steps / 5),
            WeightDecay = 0f, EvalEvery = 0, CheckpointEvery = 0, Seed = seed, Device = "cpu",
        },
    };
}
