// The image classifier's trainer stops at a step whose loss or gradient norm is not finite, before the optimizer applies it,
// with a message naming the step; `peer vision train` then ends with one line and leaves the last checkpoint as it was.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class VisionDivergenceTests
{
    static readonly Lazy<string> Folder = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("peer-vision-diverge-").FullName;
        SyntheticImages.Write(dir, train: 300, test: 50);
        return dir;
    });

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (Folder.IsValueCreated) Directory.Delete(Folder.Value, true);
    }

    [TestCase(1f)]
    [TestCase(0f)]
    public void ANonFiniteWeightStopsTheStepBeforeTheOptimizerAppliesIt(float clip)
    {
        var data = ImageDataset.Load(Folder.Value, validation: 50);
        var c = SyntheticImages.Config(steps: 10, validation: 50);
        using var trainer = new VisionTrainer(Devices.Cpu, c with { Train = c.Train with { ClipNorm = clip } }, data);
        trainer.Step();
        var (_, weight) = trainer.Model.NamedParameters().First(p => p.Name == "norm.weight");
        TrainingFixtures.SetElement(weight, 1, float.NaN);
        var before = trainer.Model.NamedParameters().Where(p => p.Name != "norm.weight").ToDictionary(p => p.Name, p => p.Tensor.ToArray());
        Assert.That(() => trainer.Step(), Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("the loss of step 2 is NaN"));
        Assert.That(trainer.StepCount, Is.EqualTo(1), "the step was not counted");
        foreach (var (name, p) in trainer.Model.NamedParameters().Where(p => p.Name != "norm.weight"))
            Assert.That(p.ToArray(), Is.EqualTo(before[name]), $"{name} was not updated");
        Assert.That(trainer.Model.Parameters().All(p => p.Grad is null && p.SparseGrad is null), "no gradient is left behind");
    }

    [Test]
    public void ADivergingRunStopsWithTheStepAndKeepsItsLastCheckpoint()
    {
        string dir = Directory.CreateTempSubdirectory("peer-vision-diverge-run-").FullName;
        try
        {
            var c = SyntheticImages.Config(steps: 60, validation: 50);
            string config = Path.Combine(dir, "hot.json");
            File.WriteAllText(config, (c with { Train = c.Train with { LearningRate = 1e30f, WarmupSteps = 0, ClipNorm = 0, CheckpointEvery = 1 } }).ToJson());
            string run = Path.Combine(dir, "run");
            var r = CliHarness.RunPeer("vision", "train", "--config", config, "--data", Folder.Value, "--out", run);
            CliHarness.AssertOneLineError(r, "training stopped: the ");
            int failed = int.Parse(System.Text.RegularExpressions.Regex.Match(r.Err, @"of step (\d+)").Groups[1].Value);
            Assert.That(failed, Is.InRange(2, 59));
            Assert.That(r.Err, Does.Contain($"the last checkpoint, step {failed - 1}, is unchanged"));
            var (state, _) = VisionCheckpoint.ReadState(run);
            Assert.That(state.Step, Is.EqualTo(failed - 1), "the checkpoint before the bad step is the last one");
            var (model, _) = VisionCheckpoint.LoadModel(Devices.Cpu, run);
            using (model)
                foreach (var (name, t) in model.StateDict())
                    Assert.That(t.DType != DType.F32 || t.ToArray().All(float.IsFinite), name);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
