// No host synchronisation inside a one-process training step: the trainer reads the device (losses, gradient norms, the
// divergence flag) only when asked (StepResult.Loss, ReadBack, Evaluate, Checkpoint.Save) or after MaxUnreadSteps steps. A
// step with a non-finite loss is skipped on the device with every later one, so that the host, reading later, finds the
// parameters and the optimizer's device state as they were before it. Reading late gives the bits of reading every step.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class NoSyncTests
{
    static Trainer Make(Device device, string sparseOptimizer = "adamw", int steps = 10)
    {
        var data = Dataset.Create(TrainingFixtures.SmallCorpus, new ByteTokenizer(), 16);
        var micro = TrainingFixtures.Micro(steps);
        return new Trainer(device, micro with { Train = micro.Train with { SparseOptimizer = sparseOptimizer } }, data);
    }

    // Every parameter and every device state tensor of the optimizer (the host step counts in "*.step" are host state, not saved after a divergence).
    static Dictionary<string, float[]> Snapshot(Trainer t) =>
        t.Model.NamedParameters().Select(p => (p.Name, p.Tensor.ToArray()))
            .Concat(t.Optimizer.StateDict().Where(e => !e.Name.EndsWith(".step", StringComparison.Ordinal)).Select(e => (e.Name, e.T.ToArray())))
            .ToDictionary(e => e.Item1, e => e.Item2);

    [TestCase("adamw")]
    [TestCase("rowwise-adagrad")]
    [TestCase("rowwise-adamw")]
    public void ABadStepAndTheStepsAfterItChangeNothingAndTheNextReadNamesIt(string sparseOptimizer)
    {
        using var device = Device.Open("cpu");
        using var trainer = Make(device, sparseOptimizer);
        var first = trainer.Step();
        Assert.That(double.IsFinite(first.Loss), Is.True);
        var (_, weight) = trainer.Model.NamedParameters().First(p => p.Name == "blocks.0.norm1.weight");
        TrainingFixtures.SetElement(weight, 3, float.PositiveInfinity);
        var before = Snapshot(trainer);
        Assert.That(before.Keys.Count(k => k.Contains("experts", StringComparison.Ordinal)), Is.GreaterThan(2), "the sparse tables and their state are compared");
        int reads = trainer.HostReads;
        var results = Enumerable.Range(0, 3).Select(_ => trainer.Step()).ToList();
        Assert.That(trainer.HostReads, Is.EqualTo(reads), "the steps read nothing");
        Assert.That(trainer.StepCount, Is.EqualTo(4), "the host does not know yet");
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.ReadBack())!;
        Assert.That(e.Step, Is.EqualTo(2));
        Assert.That(e.Message, Is.EqualTo("the loss of step 2 is NaN"));
        Assert.That(trainer.StepCount, Is.EqualTo(1), "the last applied step");
        var after = Snapshot(trainer);
        foreach (var (name, v) in before) Assert.That(after[name], Is.EqualTo(v), $"{sparseOptimizer}: {name} changed after the bad step");
        foreach (var r in results) Assert.That(() => r.Loss, Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 2"));
        Assert.That(first.Loss, Is.EqualTo(first.Loss), "a loss read before stays readable");
        Assert.That(() => trainer.Step(), Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 2"));
        string dir = Directory.CreateTempSubdirectory("peer-nosync-").FullName;
        try
        {
            Assert.That(() => Checkpoint.Save(trainer, dir), Throws.TypeOf<TrainingDivergedException>());
            Assert.That(Directory.EnumerateFileSystemEntries(dir), Is.Empty, "nothing of the stopped trainer is saved");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void StepsReadNothingAndReadingLateGivesTheBitsOfReadingEachStep()
    {
        const int n = 6;
        using var device = Device.Open("cpu");
        using var late = Make(device, steps: 1000);
        using var eager = Make(device, steps: 1000);
        var eagerLosses = Enumerable.Range(0, n).Select(_ => eager.Step().Loss).ToArray();
        using (var profiler = device.Profile())
        {
            var results = new List<StepResult>();
            for (int i = 0; i < n; i++) results.Add(late.Step());
            var hostCopies = profiler.Rows().Where(r => r.Op == "Tensor.ToHost").Sum(r => r.Calls);
            Assert.That(late.HostReads, Is.EqualTo(0), "the trainer read nothing in its steps");
            // What the profiler sees of the steps: every Tensor.ToArray/ToIntArray. The CPU accelerator checks indices
            // (DeviceOptions.CheckIndices, off on GPUs by default): there each PEER layer's forward counts its ids outside the table
            // on the host, one read per layer and step. (The sort-and-segment's segment count and the optimizer's row check copy
            // through views, which the profiler does not count.)
            int indexChecks = device.ChecksIndices ? n * late.Model.PeerLayers().Count() : 0;
            Assert.That(late.Model.PeerLayers().Count(), Is.GreaterThan(0));
            Assert.That(hostCopies, Is.EqualTo(indexChecks), "no tensor was read to the host in the steps but by the index checks");
            var copy = results[0] with { TokensPerSecond = 1 }; // a copy made before the read gets the loss too
            Assert.That(results.Select(r => r.Loss), Is.EqualTo(eagerLosses), "the same losses, read once");
            Assert.That(copy.Loss, Is.EqualTo(eagerLosses[0]));
            Assert.That(results[0] with { }, Is.EqualTo(results[0]));
            Assert.That(late.HostReads, Is.EqualTo(2), "one read of the flag and one of the losses for all six steps");
        }
        foreach (var (name, p) in eager.Model.NamedParameters())
            Assert.That(late.Model.NamedParameters().First(q => q.Name == name).Tensor.ToArray(), Is.EqualTo(p.ToArray()), name);
    }

    [Test]
    public void AnUnreadRunIsReadEveryMaxUnreadSteps()
    {
        using var device = Device.Open("cpu");
        var data = Dataset.Create(TrainingFixtures.SmallCorpus, new ByteTokenizer(), 16);
        var micro = TrainingFixtures.Micro(Trainer.MaxUnreadSteps + 1);
        var tiny = micro with { Model = micro.Model with { DModel = 8, Layers = 1, Heads = 1, Peer = micro.Model.Peer with { Experts = 4 * 4, QueryDim = 4 } },
            Train = micro.Train with { BatchSize = 1 } };
        using var trainer = new Trainer(device, tiny, data);
        for (int i = 1; i < Trainer.MaxUnreadSteps; i++) trainer.Step();
        Assert.That(trainer.HostReads, Is.EqualTo(0));
        trainer.Step();
        Assert.That(trainer.HostReads, Is.EqualTo(2), "the 256th unread step reads them all");
    }
}
