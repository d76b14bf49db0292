// The memory estimate against the device: on small configurations of every feed-forward kind (and accumulation, a GPT-2
// vocabulary, the tiny preset) the CPU accelerator's measured peak over two training steps and an evaluation must lie
// below the estimate, and the estimate within MemoryEstimate.UpperBoundFactor of it; the parameter count is exact.
// And the refusals: sizes past a tensor's 2^31 - 1 elements, totals past the memory available.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class MemoryEstimateTests
{
    static RunConfig Config(string kind, int d, int ctx, int batch, int accumulation = 1, string tokenizer = "byte")
    {
        var micro = TrainingFixtures.Micro(4);
        var model = micro.Model with
        {
            DModel = d, Context = ctx, Heads = 2, Layers = 2, Blocks = ["ffw", kind], VocabSize = Tokenizers.Create(tokenizer).VocabSize,
            Moe = new MoeConfig { Experts = 4, TopK = 2, AllowNonCausal = true },
            Pkm = new PeerConfig { Experts = 16 * 16, Heads = 2, TopK = 4, QueryDim = 8 },
        };
        return micro with { Model = model, Train = micro.Train with { BatchSize = batch, Accumulation = accumulation, Tokenizer = tokenizer } };
    }

    static IEnumerable<TestCaseData> Cases()
    {
        foreach (var kind in ModelConfig.FeedForwardKinds)
        {
            yield return new TestCaseData(Config(kind, 16, 8, 2)).SetArgDisplayNames(kind + " small");
            yield return new TestCaseData(Config(kind, 64, 32, 8)).SetArgDisplayNames(kind + " wide");
            yield return new TestCaseData(Config(kind, 32, 16, 4, accumulation: 3)).SetArgDisplayNames(kind + " accumulated");
        }
        yield return new TestCaseData(Config("peer", 32, 16, 2, tokenizer: "gpt2")).SetArgDisplayNames("peer gpt2");
        var tiny = RunConfig.Preset("tiny");
        yield return new TestCaseData(tiny with { Train = tiny.Train with { Device = "cpu" } }).SetArgDisplayNames("tiny preset");
    }

    [TestCaseSource(nameof(Cases))]
    public void TheEstimateBoundsTheMeasuredPeakFromAbove(RunConfig config)
    {
        using var device = Device.Open("cpu");
        var data = Dataset.Create(TrainingFixtures.SmallCorpus, Tokenizers.Create(config.Train.Tokenizer), config.Model.Context);
        using var trainer = new Trainer(device, config, data);
        device.ResetPeak();
        trainer.Step();
        trainer.Step();
        trainer.Evaluate();
        // What the tensors held at their peak: the buffer pool's idle buffers (PeakBytes counts them too) are not part of the estimate.
        long peak = device.PeakTensorBytes;
        var e = MemoryEstimate.Of(config);
        Assert.That(e.ParameterElements, Is.EqualTo(trainer.Model.StateDict().Sum(s => (long)s.Tensor.Length)), "parameters and buffers, exactly");
        Assert.That(e.DeviceBytes, Is.GreaterThanOrEqualTo(peak), "an upper bound");
        Assert.That(e.DeviceBytes, Is.LessThanOrEqualTo(MemoryEstimate.UpperBoundFactor * peak), $"within {MemoryEstimate.UpperBoundFactor}x");
        TestContext.Out.WriteLine($"measured peak {peak:N0} B, estimate {e.DeviceBytes:N0} B ({e.DeviceBytes / peak:F2}x)");
    }

    [Test]
    public void SizesPastATensorsRangeAreNamed()
    {
        var micro = TrainingFixtures.Micro(4);
        var wide = micro with { Train = micro.Train with { BatchSize = 1_000_000_000 } };
        Assert.That(MemoryEstimate.Of(wide).Oversized, Has.Some.Contains("batch_size"));
        Assert.That(() => MemoryEstimate.Require(wide, 0, long.MaxValue, "the CPU accelerator", host: true, resume: false),
            Throws.TypeOf<ConfigException>().With.Message.Contains("batch_size").And.Message.Contains("2,147,483,647"));
        var experts = micro with { Model = micro.Model with { DModel = 512, Peer = micro.Model.Peer with { Experts = 4096 * 4096 } } };
        Assert.That(() => MemoryEstimate.Require(experts, 0, long.MaxValue, "the CPU accelerator", host: true, resume: false),
            Throws.TypeOf<ConfigException>().With.Message.Contains("peer.experts x d_model table"));
        Assert.That(MemoryEstimate.Of(micro).Oversized, Is.Empty);
    }

    [Test]
    public void ARunPastTheAvailableMemoryIsRefusedSayingHowMuchItNeedsAndHowMuchThereIs()
    {
        var micro = TrainingFixtures.Micro(4);
        var e = MemoryEstimate.Of(micro, corpusBytes: 1000);
        long need = (long)(e.DeviceBytes + e.Host);
        Assert.That(() => MemoryEstimate.Require(micro, 1000, need, "the CPU accelerator", host: true, resume: false), Throws.Nothing);
        Assert.That(() => MemoryEstimate.Require(micro, 1000, need - 1000, "the CPU accelerator", host: true, resume: false),
            Throws.TypeOf<ConfigException>().With.Message.Contains("needs about").And.Message.Contains("MiB are available"));
        Assert.That(() => MemoryEstimate.Require(micro, 1000, (long)e.DeviceBytes, "a GPU", host: false, resume: false), Throws.Nothing, "a GPU's memory does not hold the corpus");
        Assert.That(e.ResumeBytes, Is.EqualTo(e.Parameters + 2 * e.OptimizerState));
        using var device = Device.Open("cpu");
        Assert.That(MemoryEstimate.AvailableBytes(device), Is.GreaterThan(0).And.LessThanOrEqualTo(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes));
    }
}
