// Trainer with ranks as threads (ThreadGroup): its steps equal the one-process steps in both modes, the bytes its collectives
// move are those of the cost model (exactly with expert parallelism where every sub-key row is retrieved; within the model's
// bound on the merged rows with data parallelism), evaluation splits the windows and agrees, and configurations that
// cannot be split are refused with their reason.
using Peer.Training;

namespace Peer.Tests.Distributed;

public sealed class DistributedTrainerTests
{
    static readonly RunConfig Config = RunConfig.FromJson("""
        {"model": {"vocab_size": 256, "d_model": 16, "layers": 2, "heads": 2, "context": 16, "blocks": ["ffw", "peer"],
          "peer": {"experts": 64, "heads": 2, "top_k": 8, "query_dim": 8}},
         "train": {"steps": 4, "batch_size": 4, "learning_rate": 0.01, "warmup_steps": 0, "eval_windows": 6, "device": "cpu"}}
        """);

    static readonly Lazy<Dataset> Data = new(() => Dataset.Create(new Corpus("docs", Corpus.Load(null).Text[..40_000]), new ByteTokenizer(), Config.Model.Context));

    [TestCase(ParallelMode.Data, 2)]
    [TestCase(ParallelMode.Experts, 2)]
    [TestCase(ParallelMode.Experts, 3)] // uneven shares: 4 sequences and 16 columns over 3 ranks
    public void StepsAndEvaluationEqualOneProcessAndBytesFollowTheCostModel(ParallelMode mode, int ranks)
    {
        double[] want;
        double wantEval;
        using (var one = new Trainer(Devices.Cpu, Config, Data.Value))
        {
            want = Enumerable.Range(0, 3).Select(_ => one.Step().Loss).ToArray();
            wantEval = one.Evaluate().Loss;
        }
        var got = ThreadGroup.Run(ranks, (g, dev) =>
        {
            using var t = new Trainer(dev, Config, Data.Value, new Distribution(g, mode));
            var steps = Enumerable.Range(0, 3).Select(_ => t.Step()).ToArray();
            var (dense, tensors) = CommunicationCost.DenseShape(t.Model);
            return (Losses: steps.Select(s => s.Loss).ToArray(), Bytes: steps.Select(s => s.BytesReceived).ToArray(), Eval: t.Evaluate().Loss,
                Model: CommunicationCost.BytesPerStep(Config, dense, tensors, ranks, g.Rank, mode),
                Floor: CommunicationCost.BytesPerStep(Config, dense, tensors, ranks, g.Rank, mode, (_, _, _) => 0));
        });
        foreach (var r in got)
        {
            Assert.That(r.Losses, Is.EqualTo(want).Within(1e-4), "the same steps as one process");
            Assert.That(r.Eval, Is.EqualTo(wantEval).Within(1e-4), "the evaluation split between ranks, after three steps whose parameters differ by float rounding");
            // k = n = 8: every head keeps every sub-key of both halves, so each rank's sub-key gradients hold all n rows, the bound of the
            // model, and with expert parallelism (no other row-sparse merge) it is exact; data parallelism merges expert rows that depend
            // on the retrieval, within the model's bound.
            foreach (long b in r.Bytes)
                if (mode == ParallelMode.Experts) Assert.That(b, Is.EqualTo(r.Model), "every term of the cost model, exactly");
                else Assert.That(b, Is.InRange(r.Floor + 1, r.Model), "the dense terms plus the row-sparse merges, within their bound");
        }
    }

    [Test]
    public void ConfigurationsThatCannotBeSplitAreRefused()
    {
        var messages = ThreadGroup.Run(2, (g, dev) =>
        {
            string Refusal(RunConfig c, ParallelMode m) => Assert.Throws<ConfigException>(() => new Distribution(g, m).Validate(c))!.Message;
            return new[]
            {
                Refusal(Config with { Model = Config.Model with { Blocks = ["ffw", "moe-ec"] } }, ParallelMode.Data),
                Refusal(Config with { Train = Config.Train with { BatchSize = 1 } }, ParallelMode.Data),
                Refusal(Config with { Model = Config.Model with { DModel = 1, Heads = 1 } }, ParallelMode.Experts),
                Refusal(Config with { Train = Config.Train with { SparseOptimizer = "rowwise-adagrad" } }, ParallelMode.Experts),
            };
        })[0];
        Assert.That(messages[0], Does.Contain("'moe-ec' routes tokens over the whole batch"));
        Assert.That(messages[1], Does.Contain("batch_size = 1 cannot be split between 2 ranks"));
        Assert.That(messages[2], Does.Contain("d_model = 1 cannot be split by columns between 2 ranks"));
        Assert.That(messages[3], Does.Contain("sparse_optimizer = 'rowwise-adagrad'").And.Contain("--parallel data"));
    }

    /// <summary>Row-wise table state needs whole rows: with data parallelism (tables whole on every rank, their sparse gradients
    /// merged before the step) row-wise AdaGrad trains as one process does.</summary>
    [Test]
    public void RowWiseTableStateTrainsDataParallelAsOneProcess()
    {
        var config = Config with { Train = Config.Train with { SparseOptimizer = "rowwise-adagrad" } };
        double[] want;
        using (var one = new Trainer(Devices.Cpu, config, Data.Value))
            want = Enumerable.Range(0, 3).Select(_ => one.Step().Loss).ToArray();
        var got = ThreadGroup.Run(2, (g, dev) =>
        {
            using var t = new Trainer(dev, config, Data.Value, new Distribution(g, ParallelMode.Data));
            return Enumerable.Range(0, 3).Select(_ => t.Step().Loss).ToArray();
        });
        foreach (var losses in got) Assert.That(losses, Is.EqualTo(want).Within(1e-4), "the same steps as one process");
    }
}
