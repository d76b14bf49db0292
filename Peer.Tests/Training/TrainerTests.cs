// The trainer on a micro model: the loss falls, a resumed run reproduces the uninterrupted losses to the
// bit, generation is reproducible for a seed, checkpoints refuse other configurations, other data and damage.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class TrainerTests
{
    Device device = null!;
    Dataset data = null!;
    string dir = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        device = Device.Open("cpu");
        data = Dataset.Create(TrainingFixtures.SmallCorpus, new ByteTokenizer(), 16);
    }

    [OneTimeTearDown]
    public void TearDown() => device.Dispose();

    [SetUp]
    public void MakeDir() => dir = Directory.CreateTempSubdirectory("peer-trainer-").FullName;

    [TearDown]
    public void RemoveDir() => Directory.Delete(dir, true);

    static double[] Run(Trainer t, int steps) => Enumerable.Range(0, steps).Select(_ => t.Step().Loss).ToArray();

    [Test]
    public void ShortRunLossFalls()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(60), data);
        double before = t.Evaluate().Loss;
        var losses = Run(t, 60);
        var after = t.Evaluate();
        Assert.That(before, Is.EqualTo(Math.Log(256)).Within(0.3), "an untrained model is near uniform over 256 bytes");
        Assert.That(losses.Skip(50).Average(), Is.LessThan(losses.Take(5).Average() - 1.5));
        Assert.That(after.Loss, Is.LessThan(before - 1.5), "validation loss falls too");
        Assert.That(after.Experts, Has.Count.EqualTo(1));
        Assert.That(after.Experts[0].Layer, Is.EqualTo("blocks.1.ffw"));
        Assert.That(after.Experts[0].Usage, Is.GreaterThan(0).And.LessThanOrEqualTo(1));
        Assert.That(after.Experts[0].WeightSums.Sum(), Is.EqualTo(8 * 16 * 2).Within(1e-2), "softmax router weights sum to 1 per token and head");
    }

    static IEnumerable<Peer.Nn.Module> Tree(Peer.Nn.Module m) => m.Children.SelectMany(c => Tree(c.Module)).Prepend(m);
    static bool[] Modes(Peer.Nn.Module m) => Tree(m).Select(x => x.IsTraining).ToArray();

    [Test]
    public void EvaluateAndGenerateLeaveEachModuleInTheModeTheyFound()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(), data);
        t.Model.Eval();
        double inEval = t.Evaluate().Loss;
        Assert.That(Modes(t.Model), Is.All.False, "a model in evaluation mode stays in evaluation mode");
        t.Model.Train();
        Assert.That(t.Evaluate().Loss, Is.EqualTo(inEval), "evaluation runs in evaluation mode whatever mode it found");
        Assert.That(Modes(t.Model), Is.All.True, "a model in training mode stays in training mode");
        // Mixed: one module held in evaluation mode while the rest trains.
        Tree(t.Model).Last().Eval();
        var mixed = Modes(t.Model);
        Assert.That(mixed, Has.Some.False.And.Some.True);
        t.Evaluate();
        Assert.That(Modes(t.Model), Is.EqualTo(mixed));
        t.Model.Generate([65, 66], 3);
        Assert.That(Modes(t.Model), Is.EqualTo(mixed), "generation restores the modes too");
    }

    [Test]
    public void WholeEvaluationScoresEveryValidationTokenOnceBesideTheBaselines()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(5), data);
        Run(t, 5);
        var progress = new List<(int Done, int Total)>();
        var whole = t.Evaluate(EvalCoverage.Whole, (done, total) => progress.Add((done, total)));
        int[][] windows = BatchSampler.Tile(data.Validation, 16);
        Assert.That(whole.Windows, Is.EqualTo(windows.Length));
        Assert.That(whole.Tokens, Is.EqualTo(data.Validation.Length - 1));
        Assert.That(progress[^1], Is.EqualTo((windows.Length, windows.Length)));
        Assert.That(progress.Select(p => p.Done), Is.Ordered.Ascending);

        // The reference: each window alone (the tail one included), weighted by the tokens it scores.
        double sum = 0;
        t.Model.Eval();
        using (device.Tape.NoGrad())
            foreach (var w in windows)
                using (Scope.Begin()) sum += t.Model.Loss(w, 1).Item() * (w.Length - 1);
        t.Model.Train();
        Assert.That(whole.Loss, Is.EqualTo(sum / whole.Tokens).Within(1e-5 * whole.Loss));
        Assert.That(whole.Baselines, Is.EqualTo(data.Baselines.Score(windows)), "the baselines are scored on the same windows");

        var sample = t.Evaluate();
        Assert.That(sample.Windows, Is.EqualTo(8), "interim evaluations keep eval_windows");
        Assert.That(sample.Tokens, Is.EqualTo(8 * 16));
        Assert.That(sample.Baselines, Is.EqualTo(data.Baselines.Score(BatchSampler.Windows(data.Validation, 16, 8, out _).Chunk(17).ToArray())));
        Assert.That(sample.Baselines, Is.Not.EqualTo(whole.Baselines));
    }

    [TestCase("ffw")]
    [TestCase("pkm")]
    [TestCase("moe-ec")]
    [TestCase("moe-topk")]
    public void EveryFeedForwardKindTrains(string kind)
    {
        var config = TrainingFixtures.Micro(12);
        config = config with { Model = config.Model with { Blocks = ["ffw", kind], Moe = new MoeConfig { Experts = 4, TopK = 2 } } };
        using var t = new Trainer(device, config, data);
        Assert.That(t.Model.NamedParameters().Select(p => p.Name), Has.Some.StartsWith("blocks.1.ffw."));
        var losses = Run(t, 12);
        Assert.That(losses.All(double.IsFinite));
        Assert.That(losses.Skip(9).Average(), Is.LessThan(losses.Take(3).Average() - 0.5), kind);
        Assert.That(t.Evaluate().Experts, Is.Empty, "only PEER layers report expert usage");
    }

    [Test]
    public void RotaryPositionsReplaceThePositionEmbeddingAndTrain()
    {
        var config = TrainingFixtures.Micro(12);
        config = config with { Model = config.Model with { Positions = "rotary" } };
        using var t = new Trainer(device, config, data);
        var names = t.Model.NamedParameters().Select(p => p.Name).ToArray();
        Assert.That(names, Has.None.StartsWith("pos_emb"), "rotary positions have no position table");
        using var learned = new LanguageModel(device, TrainingFixtures.Micro().Model, 7);
        Assert.That(t.Model.ParameterCount, Is.EqualTo(learned.ParameterCount - 16 * 32), "everything else is the same: the [context, d] table is gone");
        var losses = Run(t, 12);
        Assert.That(losses.All(double.IsFinite));
        Assert.That(losses.Skip(9).Average(), Is.LessThan(losses.Take(3).Average() - 0.5));
    }

    [Test]
    public void SoftMoeIsRefusedUnlessAskedThenTrains()
    {
        var config = TrainingFixtures.Micro(12);
        config = config with { Model = config.Model with { Blocks = ["ffw", "soft-moe"], Moe = new MoeConfig { Experts = 4, SlotsPerExpert = 2 } } };
        Assert.That(() => new Trainer(device, config, data), Throws.TypeOf<ConfigException>().With.Message.Contains("allow_non_causal"));
        config = config with { Model = config.Model with { Moe = config.Model.Moe with { AllowNonCausal = true } } };
        using var t = new Trainer(device, config, data);
        Assert.That(t.Model.NamedParameters().Select(p => p.Name), Has.Member("blocks.1.ffw.router.weight"));
        var losses = Run(t, 12);
        Assert.That(losses.All(double.IsFinite));
        Assert.That(losses.Skip(9).Average(), Is.LessThan(losses.Take(3).Average()));
    }

    [Test]
    public void Gpt2TokenizedRunTrains()
    {
        var gpt2 = Dataset.Create(TrainingFixtures.SmallCorpus, new Gpt2Tokenizer(), 16);
        var config = TrainingFixtures.Micro(4);
        config = config with { Model = config.Model with { VocabSize = 50257 }, Train = config.Train with { Tokenizer = "gpt2" } };
        using var t = new Trainer(device, config, gpt2);
        var losses = Run(t, 4);
        Assert.That(losses[0], Is.EqualTo(Math.Log(50257)).Within(0.5), "an untrained model is near uniform over GPT-2's vocabulary");
        Assert.That(losses[^1], Is.LessThan(losses[0]));
        Assert.That(() => new Trainer(device, TrainingFixtures.Micro(4), gpt2), Throws.TypeOf<ConfigException>().With.Message.Contains("vocab_size = 256 but the gpt2 tokenizer has 50257"));
    }

    [Test]
    public void LearningRateWarmsUpThenDecaysByCosine()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(30), data);
        var c = t.Config.Train; // warmup 3, steps 30, peak 1e-2, min 1e-3
        Assert.That(t.LearningRateAt(1), Is.EqualTo(c.LearningRate / 3).Within(1e-9));
        Assert.That(t.LearningRateAt(3), Is.EqualTo(c.LearningRate).Within(1e-9));
        double mid = c.LearningRate * c.MinLearningRateFraction + 0.5 * c.LearningRate * (1 - c.MinLearningRateFraction);
        Assert.That(t.LearningRateAt(3 + 27 / 2.0 is var h ? (int)Math.Round(h) : 0), Is.EqualTo(mid).Within(c.LearningRate * 0.06));
        Assert.That(t.LearningRateAt(30), Is.EqualTo(c.LearningRate * c.MinLearningRateFraction).Within(1e-9));
    }

    [Test]
    public void ResumeReproducesTheUninterruptedLossesBitForBit()
    {
        var config = TrainingFixtures.Micro(12) with { };
        config = config with { Train = config.Train with { Accumulation = 2 } };
        double[] straight;
        using (var t = new Trainer(device, config, data)) straight = Run(t, 12);
        double[] first;
        using (var t = new Trainer(device, config, data))
        {
            first = Run(t, 5);
            t.Evaluate(); // an evaluation between steps must not disturb the run
            Checkpoint.Save(t, dir);
        }
        double[] rest;
        using (var t = Checkpoint.Load(device, dir, data))
        {
            Assert.That(t.StepCount, Is.EqualTo(5));
            rest = Run(t, 7);
        }
        Assert.That(first.Concat(rest).ToArray(), Is.EqualTo(straight), "resumed losses equal the uninterrupted run exactly");
    }

    // The tables (PEER experts and sub-keys) get train.sparse_optimizer at train.sparse_learning_rate on the same schedule, every
    // other parameter AdamW; the state names are the parameters'; a resumed run reproduces the uninterrupted losses to the bit.
    [TestCase("rowwise-adagrad")]
    [TestCase("rowwise-adamw")]
    public void SparseOptimizerStepsTheTablesAndResumesBitForBit(string kind)
    {
        var config = TrainingFixtures.Micro(10);
        config = config with { Train = config.Train with { SparseOptimizer = kind, SparseLearningRate = 0.05f } };
        double[] straight;
        using (var t = new Trainer(device, config, data))
        {
            Assert.That(t.Optimizer.Groups.Select(g => g.Name), Is.EqualTo(new[] { "dense", "sparse" }));
            var sparse = t.Optimizer["sparse"];
            Assert.That(sparse, kind == "rowwise-adagrad" ? Is.TypeOf<Peer.Optim.RowWiseAdagrad>() : Is.TypeOf<Peer.Optim.RowWiseAdamW>());
            Assert.That(sparse.ParameterNames, Is.EquivalentTo(new[] { "blocks.1.ffw.keys.sub1", "blocks.1.ffw.keys.sub2", "blocks.1.ffw.experts.down", "blocks.1.ffw.experts.up" }));
            Assert.That(t.Optimizer["dense"], Is.TypeOf<Peer.Optim.AdamW>());
            Assert.That(t.Optimizer["dense"].ParameterNames.Count + sparse.ParameterNames.Count, Is.EqualTo(t.Model.NamedParameters().Count()));
            var state = t.Optimizer.StateDict().ToDictionary(e => e.Name, e => e.T.Shape);
            string perRow = kind == "rowwise-adamw" ? "exp_avg_sq" : "sum";
            Assert.That(state[$"blocks.1.ffw.experts.down.{perRow}"], Is.EqualTo(new[] { 256 }), "one float per expert");
            straight = Run(t, 10);
            Assert.That(t.Optimizer["sparse"].LearningRate, Is.EqualTo((float)(t.LearningRateAt(10) * 0.05 / config.Train.LearningRate)).Within(1e-9));
            Assert.That(t.Optimizer["dense"].LearningRate, Is.EqualTo((float)t.LearningRateAt(10)));
        }
        double[] first, rest;
        using (var t = new Trainer(device, config, data))
        {
            first = Run(t, 4);
            Checkpoint.Save(t, dir);
        }
        using (var t = Checkpoint.Load(device, dir, data)) rest = Run(t, 6);
        Assert.That(first.Concat(rest).ToArray(), Is.EqualTo(straight));
        var adamw = TrainingFixtures.Micro(10);
        Assert.That(() => Checkpoint.Load(device, dir, data, adamw), Throws.TypeOf<CheckpointException>().With.Message.Contains($"train.sparse_optimizer: \"{kind}\" in the checkpoint vs \"adamw\""));
    }

    // With the default (AdamW for the tables too) the state names are those of one AdamW over every parameter, as before groups existed,
    // so checkpoints written then still load.
    [Test]
    public void DefaultGroupsKeepOneAdamWsStateNames()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(4), data);
        using var single = new Peer.Optim.AdamW(t.Model.NamedParameters());
        Assert.That(t.Optimizer.StateDict().Select(e => (e.Name, Tensor.FormatShape(e.T.Shape))),
            Is.EquivalentTo(single.StateDict().Select(e => (e.Name, Tensor.FormatShape(e.T.Shape)))));
        Assert.That(t.Optimizer["sparse"], Is.TypeOf<Peer.Optim.AdamW>());
    }

    [Test]
    public void GenerationIsReproducibleForASeed()
    {
        using var t = new Trainer(device, TrainingFixtures.Micro(10), data);
        Run(t, 10);
        int[] prompt = new ByteTokenizer().Encode("Returns the");
        var a = t.Model.Generate(prompt, 40, temperature: 1f, topK: 20, seed: 3);
        var b = t.Model.Generate(prompt, 40, temperature: 1f, topK: 20, seed: 3);
        var c = t.Model.Generate(prompt, 40, temperature: 1f, topK: 20, seed: 4);
        Assert.That(a, Has.Length.EqualTo(40));
        Assert.That(b, Is.EqualTo(a));
        Assert.That(c, Is.Not.EqualTo(a), "another seed draws another continuation");
        Assert.That(t.Model.Generate(prompt, 10, temperature: 0f, seed: 1), Is.EqualTo(t.Model.Generate(prompt, 10, temperature: 0f, seed: 2)), "greedy ignores the seed");
        Assert.That(t.Model.IsTraining, "generation restores training mode");
        Assert.That(() => t.Model.Generate([], 5), Throws.ArgumentException.With.Message.Contains("prompt"));
        Assert.That(() => t.Model.Generate([300], 5), Throws.ArgumentException.With.Message.Contains("[0, 256)"));
    }

    [Test]
    public void TopKPicksOnlyAmongTheKMostLikely()
    {
        float[] logits = [0f, 5f, 4f, -1f, 4.5f];
        ulong state = 9;
        var picks = Enumerable.Range(0, 300).Select(_ => Sampling.Pick(logits, 1f, 2, ref state)).ToHashSet();
        Assert.That(picks, Is.EquivalentTo(new[] { 1, 4 }));
        Assert.That(Sampling.Pick([1f, 3f, 3f], 0f, 0, ref state), Is.EqualTo(1), "greedy breaks ties towards the smaller id");
    }

    [Test]
    public void CheckpointFromAnotherConfigurationIsRefused()
    {
        using (var t = new Trainer(device, TrainingFixtures.Micro(4), data)) { Run(t, 2); Checkpoint.Save(t, dir); }
        var other = TrainingFixtures.Micro(4);
        other = other with { Model = other.Model with { DModel = 64 } };
        Assert.That(() => Checkpoint.Load(device, dir, data, other), Throws.TypeOf<CheckpointException>().With.Message.Contains("d_model: 32 in the checkpoint vs 64"));
        var otherData = Dataset.Create(new Corpus("other", TrainingFixtures.SmallCorpus.Text[1000..]), new ByteTokenizer(), 16);
        Assert.That(() => Checkpoint.Load(device, dir, otherData), Throws.TypeOf<CheckpointException>().With.Message.Contains("other data"));
    }

    [Test]
    public void DamagedCheckpointIsRefusedAndAKilledSaveLeavesThePreviousOne()
    {
        using (var t = new Trainer(device, TrainingFixtures.Micro(4), data)) { Run(t, 2); Checkpoint.Save(t, dir); }
        string folder = Path.Combine(dir, "checkpoints", "step-0000002");
        // A save killed before its rename leaves only a temporary folder: the pointer still names step 2, which loads.
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints", ".step-0000003.999.tmp"));
        using (var t = Checkpoint.Load(device, dir, data)) Assert.That(t.StepCount, Is.EqualTo(2));
        string model = Path.Combine(folder, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(model);
        bytes[^1] ^= 0x40;
        File.WriteAllBytes(model, bytes);
        Assert.That(() => Checkpoint.Load(device, dir, data), Throws.TypeOf<CheckpointException>().With.Message.Contains("is damaged"));
        File.WriteAllText(Path.Combine(dir, "checkpoint.json"), "{ nonsense");
        Assert.That(() => Checkpoint.Load(device, dir, data), Throws.TypeOf<CheckpointException>().With.Message.Contains("checkpoint.json is damaged"));
    }
}
