// A non-finite loss or gradient stops training at the step it appears, before the optimizer applies it, with a
// message naming the step (found at the next read of the device: here the step's loss); the last checkpoint stays as it was. Checked with clipping on (the norm it computes
// anyway) and off (the trainer then computes the norm itself).
using Peer.Training;
using static Peer.Tests.Training.CliHarness;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class DivergenceTests
{
    [TestCase(1f)]
    [TestCase(0f)]
    public void ANonFiniteWeightStopsTheStepBeforeTheOptimizerAppliesIt(float clip)
    {
        using var device = Device.Open("cpu");
        var data = Dataset.Create(TrainingFixtures.SmallCorpus, new ByteTokenizer(), 16);
        var micro = TrainingFixtures.Micro(10);
        using var trainer = new Trainer(device, micro with { Train = micro.Train with { ClipNorm = clip } }, data);
        trainer.Step();
        var (_, weight) = trainer.Model.NamedParameters().First(p => p.Name == "blocks.0.norm1.weight");
        TrainingFixtures.SetElement(weight, 3, float.PositiveInfinity);
        var before = trainer.Model.NamedParameters().Where(p => p.Name != "blocks.0.norm1.weight").ToDictionary(p => p.Name, p => p.Tensor.ToArray());
        Assert.That(() => trainer.Step().Loss, Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 2"));
        Assert.That(trainer.StepCount, Is.EqualTo(1), "the step was not counted");
        Assert.That(() => trainer.Step(), Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 2"), "the trainer stays stopped");
        foreach (var (name, p) in trainer.Model.NamedParameters().Where(p => p.Name != "blocks.0.norm1.weight"))
            Assert.That(p.ToArray(), Is.EqualTo(before[name]), $"{name} was not updated");
    }

    [Test]
    public void ADivergingRunStopsWithTheStepAndKeepsItsLastCheckpoint()
    {
        string dir = Directory.CreateTempSubdirectory("peer-diverge-").FullName;
        try
        {
            string corpus = TrainingFixtures.WriteCorpus(dir);
            var micro = TrainingFixtures.Micro(60);
            string config = WriteConfig(dir, "hot.json", micro with
            {
                Train = micro.Train with { LearningRate = 1e30f, WarmupSteps = 0, ClipNorm = 0, CheckpointEvery = 1 },
            });
            string run = Path.Combine(dir, "run");
            var r = RunPeer("train", "--config", config, "--corpus", corpus, "--out", run);
            AssertOneLineError(r, "step");
            int failed = int.Parse(System.Text.RegularExpressions.Regex.Match(r.Err, @"step (\d+)").Groups[1].Value);
            Assert.That(failed, Is.LessThan(60));
            var (state, _) = Checkpoint.ReadState(run);
            Assert.That(state.Step, Is.EqualTo(failed - 1), "the checkpoint before the bad step is the last one");
            using var device = Device.Open("cpu");
            var (model, _) = Checkpoint.LoadModel(device, run);
            using (model)
                foreach (var (name, t) in model.StateDict())
                    Assert.That(t.DType != DType.F32 || t.ToArray().All(float.IsFinite), name);
            Assert.That(MetricsFile.Read(Path.Combine(run, "metrics.csv")).Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, failed - 1)));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void ADivergenceFoundAtALaterLogLineNamesTheFirstBadStepAndKeepsTheRowsBeforeIt()
    {
        string dir = Directory.CreateTempSubdirectory("peer-diverge-").FullName;
        try
        {
            string corpus = TrainingFixtures.WriteCorpus(dir);
            var micro = TrainingFixtures.Micro(400); // a log line (and a read of the device) every 400 / 50 = 8 steps
            string config = WriteConfig(dir, "hot.json", micro with
            {
                Train = micro.Train with { LearningRate = 1e30f, WarmupSteps = 0, ClipNorm = 0 },
            });
            string run = Path.Combine(dir, "run");
            var r = RunPeer("train", "--config", config, "--corpus", corpus, "--out", run);
            AssertOneLineError(r, "step");
            int failed = int.Parse(System.Text.RegularExpressions.Regex.Match(r.Err, @"step (\d+)").Groups[1].Value);
            Assert.That(failed, Is.LessThan(8), "this learning rate diverges before the first read");
            Assert.That(r.Err, Does.Contain($"neither it nor the {8 - failed} step").And.Contain("no checkpoint was written"));
            Assert.That(MetricsFile.Read(Path.Combine(run, "metrics.csv")).Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, failed - 1)),
                "the rows of the steps before the bad one, written at the read that found it");
            Assert.That(Checkpoint.Exists(run), Is.False);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void ACheckpointOfNonFiniteParametersIsNotWrittenAndThePreviousOneStays()
    {
        string dir = Directory.CreateTempSubdirectory("peer-diverge-").FullName;
        try
        {
            using var device = Device.Open("cpu");
            var data = Dataset.Create(TrainingFixtures.SmallCorpus, new ByteTokenizer(), 16);
            using var trainer = new Trainer(device, TrainingFixtures.Micro(10), data);
            trainer.Step();
            Checkpoint.Save(trainer, dir);
            var before = CliHarness.Snapshot(dir);
            trainer.Step();
            // An expert row no token retrieved: the loss and the gradients stay finite, the parameters do not.
            var (_, table) = trainer.Model.NamedParameters().First(p => p.Name.EndsWith("experts.up", StringComparison.Ordinal));
            TrainingFixtures.SetElement(table, ^1, float.NaN);
            Assert.That(() => Checkpoint.Save(trainer, dir), Throws.TypeOf<TrainingDivergedException>()
                .With.Message.Contains("after step 2").And.Message.Contains("experts.up").And.Message.Contains("NaN"));
            Assert.That(CliHarness.Snapshot(dir), Is.EqualTo(before), "the step-1 checkpoint is as it was, and no temporary folder is left");
            Assert.That(Checkpoint.ReadState(dir).State.Step, Is.EqualTo(1));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
