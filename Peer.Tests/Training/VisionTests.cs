// The image classifier as a library: patches against a host reference, attention that sees every patch (not causal), training
// that learns the synthetic task, a checkpoint that resumes with the identical losses, and the teeth of the inspection: on a
// task built so experts must specialise, class purity well above the random-routing baseline, and switching off one class's
// most specific experts costs that class more accuracy than any other.
using Peer.Nn;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class VisionTests
{
    static readonly Lazy<string> Folder = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("peer-vision-data-").FullName;
        SyntheticImages.Write(dir, train: 2400, test: 600);
        return dir;
    });

    // One trained model shared by the specialisation tests (training it takes a few seconds).
    static readonly Lazy<VisionTrainer> Trained = new(() =>
    {
        var data = ImageDataset.Load(Folder.Value, validation: 400);
        var trainer = new VisionTrainer(Devices.Cpu, SyntheticImages.Config(steps: 400, validation: 400), data);
        while (trainer.StepCount < trainer.Config.Train.Steps) trainer.Step();
        return trainer;
    });

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (Trained.IsValueCreated) Trained.Value.Dispose();
        if (Folder.IsValueCreated) Directory.Delete(Folder.Value, true);
    }

    [Test]
    public void PatchesAreTheImagesTilesRowMajor()
    {
        var cfg = new VisionModelConfig { ImageSize = 6, PatchSize = 3, Classes = 2, DModel = 4, Layers = 1, Heads = 1, Blocks = ["ffw"] };
        using var model = new VisionModel(Devices.Cpu, cfg, 1);
        var px = Enumerable.Range(0, 2 * 36).Select(i => (float)i).ToArray();
        using var s = Scope.Begin();
        var patches = model.Patches(Tensor.FromArray(Devices.Cpu, px, 2, 36)).ToArray();
        // Host reference: image b, patch (gy, gx) is row b*4 + gy*2 + gx; its pixels (y, x) row-major.
        var want = new float[2 * 4 * 9];
        for (int b = 0; b < 2; b++)
            for (int gy = 0; gy < 2; gy++)
                for (int gx = 0; gx < 2; gx++)
                    for (int y = 0; y < 3; y++)
                        for (int x = 0; x < 3; x++)
                            want[((b * 4 + gy * 2 + gx) * 9) + y * 3 + x] = px[b * 36 + (gy * 3 + y) * 6 + gx * 3 + x];
        Assert.That(patches, Is.EqualTo(want));
        Assert.Throws<ArgumentException>(() => model.Patches(Tensor.Zeros(Devices.Cpu, 2, 35)));
    }

    [Test]
    public void APatchWindowEmbedsTheOverlappingPixels()
    {
        // 3x3 patches of a 6x6 image with 5x5 windows: the patch embedding takes 25 inputs, and the first token's window
        // holds the pixel just right of its patch (image column 3), which the plain patch does not.
        var cfg = new VisionModelConfig { ImageSize = 6, PatchSize = 3, PatchWindow = 5, Classes = 2, DModel = 4, Layers = 1, Heads = 1, Blocks = ["ffw"] };
        using var model = new VisionModel(Devices.Cpu, cfg, 1);
        Assert.That(model.NamedParameters().Single(p => p.Name == "patch_embed.weight").Tensor.Shape, Is.EqualTo(new[] { 4, 25 }));
        var px = Enumerable.Range(0, 36).Select(i => (float)i + 1).ToArray();
        using var s = Scope.Begin();
        var first = model.Patches(Tensor.FromArray(Devices.Cpu, px, 1, 36)).ToArray().Take(25).ToArray();
        // Window rows -1..3, columns -1..3 of the image: row -1 and column -1 are outside (0).
        Assert.That(first[0..5], Is.All.EqualTo(0f));
        Assert.That(first[5], Is.EqualTo(0f));
        Assert.That(first[6..10], Is.EqualTo(new[] { px[0], px[1], px[2], px[3] }));
        Assert.That(Assert.Throws<ConfigException>(() => (cfg with { PatchWindow = 4 }).Validate())!.Message, Does.Contain("patch_window = 4"));
        Assert.That(Assert.Throws<ConfigException>(() => (cfg with { PatchWindow = 1 }).Validate())!.Message, Does.Contain("patch_window = 1"));
    }

    [Test]
    public void TheStemIsAConvolutionWithGeluWhoseFeaturesTheTokensEmbed()
    {
        // A 3x3 convolution of 2 channels (zero padding) and GELU on a 4x4 image, then 2x2 patches: token (gy, gx) holds, for
        // each pixel of its patch row-major, the 2 channels. Host reference in double from the stem's weights.
        var cfg = new VisionModelConfig { ImageSize = 4, PatchSize = 2, StemChannels = 2, StemKernel = 3, Classes = 2, DModel = 4, Layers = 1, Heads = 1, Blocks = ["ffw"] };
        using var model = new VisionModel(Devices.Cpu, cfg, 1);
        var named = model.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.ToArray());
        float[] w = named["stem.weight"], bias = named["stem.bias"];
        Assert.That(named["patch_embed.weight"].Length, Is.EqualTo(4 * 2 * 2 * 2), "d x (2x2 pixels x 2 channels)");
        var px = GradCheck.Rand(16, 5);
        using var s = Scope.Begin();
        var tokens = model.Patches(Tensor.FromArray(Devices.Cpu, px, 1, 16)).ToArray();
        Assert.That(tokens.Length, Is.EqualTo(4 * 8));
        for (int gy = 0; gy < 2; gy++)
            for (int gx = 0; gx < 2; gx++)
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        for (int c = 0; c < 2; c++)
                        {
                            int r = gy * 2 + i, col = gx * 2 + j;
                            double z = bias[c];
                            for (int a = -1; a <= 1; a++)
                                for (int b = -1; b <= 1; b++)
                                    if (r + a is >= 0 and < 4 && col + b is >= 0 and < 4) z += w[c * 9 + (a + 1) * 3 + b + 1] * px[(r + a) * 4 + col + b];
                            Assert.That(tokens[(gy * 2 + gx) * 8 + (i * 2 + j) * 2 + c], Is.EqualTo(PeerMath.Gelu(z)).Within(1e-5), $"token ({gy}, {gx}) pixel ({i}, {j}) channel {c}");
                        }
        Assert.That(Assert.Throws<ConfigException>(() => (cfg with { StemKernel = 2 }).Validate())!.Message, Does.Contain("stem_kernel = 2"));
        Assert.That(Assert.Throws<ConfigException>(() => (cfg with { StemChannels = -1 }).Validate())!.Message, Does.Contain("stem_channels = -1"));
    }

    // One block alone: its norm1 before it, and its output stream x (the next norm, here its own norm1 again, is not read).
    static Tensor Run(VisionBlock block, Tensor x, int b, int tokens)
    {
        var (w, bias) = block.Norm1;
        return block.Forward(x, Peer.Ops.LayerNorm(x, w, bias), b, tokens, w, bias).X;
    }

    [TestCase("attention")]
    [TestCase("mlp")]
    public void EveryTokenSeesTheOthers(string mixing)
    {
        // A block with a dense (per-token) feed-forward layer: changing only the last token changes the first token's output,
        // through the token mixing alone (the model is not causal).
        var cfg = new VisionModelConfig { ImageSize = 4, PatchSize = 2, Classes = 3, DModel = 8, Layers = 1, Heads = 2, TokenMixing = mixing, Blocks = ["ffw"] };
        using var block = new VisionBlock(Devices.Cpu, cfg, "ffw", 2);
        using var s = Scope.Begin();
        var a = GradCheck.Rand(4 * 8, 5);
        var b = (float[])a.Clone();
        for (int i = 24; i < 32; i++) b[i] += 0.5f * i - 14f; // token 3 (not a constant shift, which its LayerNorm would undo)
        var ya = Run(block, Tensor.FromArray(Devices.Cpu, a, 4, 8), 1, 4).ToArray();
        var yb = Run(block, Tensor.FromArray(Devices.Cpu, b, 4, 8), 1, 4).ToArray();
        Assert.That(Enumerable.Range(0, 8).Max(i => Math.Abs(ya[i] - yb[i])), Is.GreaterThan(1e-4), "token 0 changed");
        // And two images of a batch do not see each other.
        var two = Run(block, Tensor.FromArray(Devices.Cpu, [.. a, .. b], 8, 8), 2, 4).ToArray();
        Assert.That(two[..32], Is.EqualTo(ya).Within(1e-5));
    }

    [TestCase("attention")]
    [TestCase("mlp")]
    public void ABlocksGradientMatchesFiniteDifferences(string mixing)
    {
        // The block's token mixing is composed of reshapes, permutes, slices and the fused attention (or the token MLP), its adds
        // fused with the norms: its wiring is checked end to end against central differences in the input (two images of nine tokens).
        var cfg = new VisionModelConfig { ImageSize = 3, PatchSize = 1, Classes = 2, DModel = 4, Layers = 1, Heads = 2, TokenMixing = mixing,
            Blocks = ["ffw"], FfwHidden = 6 };
        using var block = new VisionBlock(Devices.Cpu, cfg, "ffw", 4);
        GradCheck.Check(Devices.Cpu, t => Run(block, t[0], 2, 9), [(GradCheck.Rand(2 * 9 * 4, 3), [18, 4])], maxCoords: 24);
    }

    [Test]
    public void TrainingLearnsTheSyntheticTask()
    {
        var eval = Trained.Value.Evaluate(Trained.Value.Data.Test);
        Assert.That(eval.Accuracy, Is.GreaterThan(0.9), "10 classes: chance is 0.1, and no linear function of the pixels beats it");
        Assert.That(eval.Images, Is.EqualTo(600));
        Assert.That(eval.ClassAccuracy.All(a => a > 0.6), string.Join(", ", eval.ClassAccuracy));
        Assert.That(eval.Experts.Single().Usage, Is.GreaterThan(0));
    }

    [Test]
    public void FlipAveragedEvaluationScoresTheMeanLogitsOfEachImageAndItsMirror()
    {
        var t = Trained.Value;
        var split = t.Data.Test;
        var got = t.Evaluate(split, flip: true);
        Assert.That(got.FlipAveraged, Is.True);
        Assert.That(t.Evaluate(split).FlipAveraged, Is.False, "eval_flip is off in this config");
        // Reference: the model's logits of the images and of their mirrors made on the host, averaged and scored in double.
        int n = split.Count, c = SyntheticImages.Classes, size = SyntheticImages.Size;
        var ids = Enumerable.Range(0, n).ToArray();
        var pixels = t.Data.Batch(split, ids);
        var mirrored = new float[pixels.Length];
        for (int i = 0; i < n; i++)
            for (int r = 0; r < size; r++)
                for (int x = 0; x < size; x++) mirrored[(i * size + r) * size + x] = pixels[(i * size + r) * size + size - 1 - x];
        float[] a, b;
        t.Model.Eval();
        using (t.Device.Tape.NoGrad())
        using (Scope.Begin())
        {
            a = t.Model.Forward(Tensor.FromArray(t.Device, pixels, n, size * size)).ToArray();
            b = t.Model.Forward(Tensor.FromArray(t.Device, mirrored, n, size * size)).ToArray();
        }
        t.Model.Train();
        double loss = 0;
        int correct = 0, differ = 0;
        for (int i = 0; i < n; i++)
        {
            var mean = Enumerable.Range(0, c).Select(k => 0.5 * ((double)a[i * c + k] + b[i * c + k])).ToArray();
            double max = mean.Max(), lse = max + Math.Log(mean.Sum(v => Math.Exp(v - max)));
            loss += lse - mean[split.Labels[i]];
            int best = Array.IndexOf(mean, max), alone = Enumerable.Range(0, c).MaxBy(k => a[i * c + k]);
            if (best == split.Labels[i]) correct++;
            if (best != alone) differ++;
        }
        Assert.That(differ, Is.GreaterThan(0), "the mirrors change some predictions, so the test can tell the two evaluations apart");
        Assert.That(got.Accuracy, Is.EqualTo((double)correct / n));
        Assert.That(got.Loss, Is.EqualTo(loss / n).Within(1e-5 * Math.Max(1, loss / n)));
        using var trace = new RetrievalTrace(t.Model.PeerLayers().ToArray());
        var e = Assert.Throws<ArgumentException>(() => t.Evaluate(split, trace, flip: true));
        Assert.That(e!.ParamName, Is.EqualTo("flip"));
    }

    [Test]
    public void ExpertsSpecialiseByClassFarAboveRandomRouting()
    {
        var t = Trained.Value;
        var layers = t.Model.PeerLayers().ToArray();
        using var trace = new RetrievalTrace(layers);
        t.Evaluate(t.Data.Test, trace);
        var log = trace[layers[0].Name];
        var labels = t.Data.Test.Labels.Select(l => (int)l).ToArray();
        Assert.That(log.Count, Is.EqualTo(600L * 1 * 2 * 4), "every image (one patch each), head and rank recorded");
        var m = ClassExpertMatrix.From(log, labels, 10);
        var baseline = ClassExpertMatrix.Shuffled(log, labels, 10, seed: 1);
        var (purity, entropy) = m.WeightedMeans();
        var (basePurity, baseEntropy) = baseline.WeightedMeans();
        Assert.That(purity, Is.GreaterThan(basePurity + 0.3), $"purity {purity:F3} vs random routing {basePurity:F3}");
        Assert.That(entropy, Is.LessThan(baseEntropy - 1.0), $"entropy {entropy:F3} bits vs random routing {baseEntropy:F3}");
        var selections = log.Selections().ToArray();
        Assert.That(selections.Select(x => x.Position).Distinct(), Is.EqualTo(new[] { 0 }));
        Assert.That(selections.Select(x => x.Head).Distinct().Order(), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(selections.Max(x => x.Sample), Is.EqualTo(599));
    }

    [Test]
    public void SwitchingOffAClassesExpertsCostsThatClassMost()
    {
        var t = Trained.Value;
        var layers = t.Model.PeerLayers().ToArray();
        var before = t.Evaluate(t.Data.Test).ClassAccuracy;
        foreach (int cls in new[] { 2, 7 })
        {
            // Chosen on the validation images, judged on the test images.
            var edits = ExpertEditing.ClassExperts(t, t.Data.Validation, cls, perLayer: 16);
            double[] after;
            try
            {
                ExpertEditing.Apply(layers, edits);
                Assert.That(layers[0].Layer.DisabledExperts, Has.Count.EqualTo(16));
                after = t.Evaluate(t.Data.Test).ClassAccuracy;
            }
            finally
            {
                ExpertEditing.Apply(layers, new Dictionary<string, SortedSet<int>>());
            }
            var drop = before.Zip(after, (b, a) => b - a).ToArray();
            double others = drop.Where((_, c) => c != cls).Max();
            Assert.That(drop[cls], Is.GreaterThan(others + 0.1), $"class {cls}: drops {string.Join(", ", drop.Select(d => d.ToString("F3")))}");
        }
        Assert.That(t.Evaluate(t.Data.Test).ClassAccuracy, Is.EqualTo(before), "switching every expert back on restores the model exactly");
    }

    [Test]
    public void ACheckpointResumesWithTheIdenticalLosses()
    {
        var data = ImageDataset.Load(Folder.Value, validation: 400);
        var config = SyntheticImages.Config(steps: 12, validation: 400, seed: 5);
        string run = Directory.CreateTempSubdirectory("peer-vision-run-").FullName;
        try
        {
            double[] straight;
            using (var a = new VisionTrainer(Devices.Cpu, config, data))
                straight = Enumerable.Range(0, 12).Select(_ => a.Step().Loss).ToArray();
            var resumed = new List<double>();
            using (var b = new VisionTrainer(Devices.Cpu, config, data))
            {
                for (int i = 0; i < 5; i++) resumed.Add(b.Step().Loss);
                VisionCheckpoint.Save(b, run);
            }
            using (var c = VisionCheckpoint.Load(Devices.Cpu, run, data, config))
            {
                Assert.That(c.StepCount, Is.EqualTo(5));
                while (c.StepCount < 12) resumed.Add(c.Step().Loss);
            }
            Assert.That(resumed, Is.EqualTo(straight));
            var other = config with { Model = config.Model with { DModel = 24 } };
            Assert.That(Assert.Throws<CheckpointException>(() => VisionCheckpoint.Load(Devices.Cpu, run, data, other))!.Message, Does.Contain("d_model"));
        }
        finally
        {
            Directory.Delete(run, true);
        }
    }

    [Test]
    public void ThePresetsFeedForwardLayersHaveEqualForwardFlops()
    {
        // docs/results.md compares the two presets at equal FLOPs: every block's feed-forward layer, as the model builds it.
        static long[] Flops(string preset)
        {
            using var model = new VisionModel(Devices.Cpu, VisionRunConfig.Preset(preset).Model, 1);
            return model.Children.Where(c => c.Name.StartsWith("blocks.")).Select(c => ((VisionBlock)c.Module).Ffw.ForwardFlopsPerToken).ToArray();
        }
        var peer = Flops("peer");
        var dense = Flops("dense");
        Assert.That(peer, Has.Length.EqualTo(4));
        Assert.That(peer, Is.All.EqualTo(36_992));
        Assert.That(dense, Is.All.EqualTo(36_864));
        Assert.That(VisionRunConfig.Preset("peer").Train, Is.EqualTo(VisionRunConfig.Preset("dense").Train));
    }

    [Test]
    public void TheSamplerShufflesEachEpochAndReplaysFromItsState()
    {
        var a = new ImageSampler(10, 3);
        var first = a.NextBatch(10);
        Assert.That(first.Order(), Is.EqualTo(Enumerable.Range(0, 10)), "an epoch is a permutation");
        var second = a.NextBatch(10);
        Assert.That(second, Is.Not.EqualTo(first), "each epoch has its own shuffle");
        var b = new ImageSampler(10, 3) { State = 7 };
        Assert.That(b.NextBatch(6), Is.EqualTo(first[7..].Concat(second[..3])));
    }
}
