// The training run's regularisers: augmentation moves drawn from (seed, step) alone (in range, both directions, flips about
// half the time), a resumed run with augmentation and label smoothing that repeats the unbroken run's losses, label smoothing
// against a double-precision host computation, and the settings' one-line errors.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class VisionAugmentTests
{
    static readonly Lazy<string> Folder = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("peer-vision-augment-").FullName;
        SyntheticImages.Write(dir, train: 400, test: 100);
        return dir;
    });

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (Folder.IsValueCreated) Directory.Delete(Folder.Value, true);
    }

    [Test]
    public void MovesAreInRangeAndAFunctionOfSeedAndStep()
    {
        var m = VisionTrainer.AugmentMoves(seed: 4, step: 10, batch: 2000, shift: 2, flip: true);
        var dy = Enumerable.Range(0, 2000).Select(i => m[3 * i]).ToArray();
        var dx = Enumerable.Range(0, 2000).Select(i => m[3 * i + 1]).ToArray();
        var flips = Enumerable.Range(0, 2000).Select(i => m[3 * i + 2]).ToArray();
        Assert.That(dy.Distinct().Order(), Is.EqualTo(new[] { -2, -1, 0, 1, 2 }));
        Assert.That(dx.Distinct().Order(), Is.EqualTo(new[] { -2, -1, 0, 1, 2 }));
        Assert.That(flips.Distinct().Order(), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(flips.Sum(), Is.EqualTo(1000).Within(4 * Math.Sqrt(500)), "flips with probability 1/2");
        Assert.That(dy.Count(v => v == 0), Is.EqualTo(400).Within(4 * Math.Sqrt(2000 * 0.2 * 0.8)), "each shift with probability 1/5");
        Assert.That(dy.Zip(dx).Count(p => p.First == p.Second), Is.LessThan(600), "rows and columns drawn independently");
        Assert.That(VisionTrainer.AugmentMoves(4, 10, 2000, 2, true), Is.EqualTo(m));
        Assert.That(VisionTrainer.AugmentMoves(4, 11, 2000, 2, true), Is.Not.EqualTo(m));
        Assert.That(VisionTrainer.AugmentMoves(5, 10, 2000, 2, true), Is.Not.EqualTo(m));
        Assert.That(VisionTrainer.AugmentMoves(4, 10, 50, 0, true).Where((_, i) => i % 3 != 2), Is.All.EqualTo(0), "no shift asked");
        Assert.That(VisionTrainer.AugmentMoves(4, 10, 50, 3, false).Where((_, i) => i % 3 == 2), Is.All.EqualTo(0), "no flip asked");
    }

    [Test]
    public void AResumedRunWithAugmentationRepeatsTheLosses()
    {
        var data = ImageDataset.Load(Folder.Value, validation: 100);
        var plain = SyntheticImages.Config(steps: 10, validation: 100, seed: 6);
        var config = plain with { Train = plain.Train with { AugmentShift = 2, AugmentFlip = true, LabelSmoothing = 0.1f } };
        string run = Directory.CreateTempSubdirectory("peer-vision-augment-run-").FullName;
        try
        {
            double[] straight, unaugmented;
            using (var a = new VisionTrainer(Devices.Cpu, config, data))
                straight = Enumerable.Range(0, 10).Select(_ => a.Step().Loss).ToArray();
            using (var a = new VisionTrainer(Devices.Cpu, plain, data))
                unaugmented = Enumerable.Range(0, 10).Select(_ => a.Step().Loss).ToArray();
            Assert.That(straight[0], Is.Not.EqualTo(unaugmented[0]), "the settings change the first step's loss");
            var resumed = new List<double>();
            using (var b = new VisionTrainer(Devices.Cpu, config, data))
            {
                for (int i = 0; i < 4; i++) resumed.Add(b.Step().Loss);
                VisionCheckpoint.Save(b, run);
            }
            using (var c = VisionCheckpoint.Load(Devices.Cpu, run, data, config))
            {
                Assert.That(c.Config.Train.AugmentShift, Is.EqualTo(2));
                while (c.StepCount < 10) resumed.Add(c.Step().Loss);
            }
            Assert.That(resumed, Is.EqualTo(straight));
        }
        finally
        {
            Directory.Delete(run, true);
        }
    }

    [Test]
    public void LabelSmoothingMatchesTheHostComputation()
    {
        var cfg = SyntheticImages.Config(steps: 1, validation: 0).Model;
        using var model = new VisionModel(Devices.Cpu, cfg, 2);
        model.Eval();
        int b = 6, c = cfg.Classes;
        using var s = Scope.Begin();
        var images = Tensor.FromArray(Devices.Cpu, GradCheck.Rand(b * cfg.ImageSize * cfg.ImageSize, 3), b, cfg.ImageSize * cfg.ImageSize);
        var labelArray = Enumerable.Range(0, b).Select(i => (3 * i + 1) % c).ToArray();
        var labels = Tensor.FromArray(Devices.Cpu, labelArray, b);
        var logits = model.Forward(images).ToArray();
        foreach (float eps in new[] { 0f, 0.1f, 0.4f })
        {
            // Cross-entropy against the target (1 - eps) one-hot + eps / C, in double precision.
            double want = 0;
            for (int i = 0; i < b; i++)
            {
                var row = logits.AsSpan(i * c, c).ToArray().Select(v => (double)v).ToArray();
                double max = row.Max(), lse = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
                for (int k = 0; k < c; k++) want -= ((k == labelArray[i] ? 1 - eps : 0) + eps / c) * (row[k] - lse);
            }
            want /= b;
            Assert.That(model.Loss(images, labels, eps).Loss.Item(), Is.EqualTo(want).Within(1e-5 * Math.Max(1, want)), $"eps {eps}");
        }
        Assert.That(Assert.Throws<ArgumentException>(() => model.Loss(images, labels, 1f))!.Message, Does.Contain("smoothing"));
    }

    [TestCase("augment_shift", -1, "augment_shift = -1")]
    [TestCase("label_smoothing", 1, "label_smoothing = 1")]
    [TestCase("label_smoothing", -0.5, "label_smoothing = -0.5")]
    public void BadSettingsAreRefusedByName(string key, double value, string message)
    {
        string json = $"{{\"train\": {{\"{key}\": {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}}}}}";
        Assert.That(Assert.Throws<ConfigException>(() => VisionRunConfig.FromJson(json))!.Message, Does.Contain(message));
    }
}
