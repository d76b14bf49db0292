// `peer sweep`: the compute accounting of a whole model against a hand count and the model's own parameter
// count, the plans' step counts against budget / (6 A), and a miniature sweep end to end: interrupted in its
// second variant, rerun (the first is skipped, the second resumes from its checkpoint and ends where an
// uninterrupted run ends), rerun again (nothing retrained), with the files and their values checked.
using System.Globalization;
using Peer.Nn;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class SweepTests
{
    string dir = null!;
    static Device Cpu => Devices.Get("cpu");

    [SetUp]
    public void SetUp() => dir = Directory.CreateTempSubdirectory("peer-sweep-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(dir, true);

    [TestCase("ffw")]
    [TestCase("peer")]
    [TestCase("pkm")]
    [TestCase("moe-ec")]
    [TestCase("moe-topk")]
    public void ModelCostCountsEveryParameterOfTheModel(string kind)
    {
        var model = TrainingFixtures.Micro().Model with { Blocks = ["ffw", kind], Moe = new MoeConfig { Experts = 4 } };
        var cost = ModelCost.Of(Cpu, model);
        using var lm = new LanguageModel(Cpu, model, 1);
        Assert.That(cost.TotalParameters, Is.EqualTo(lm.ParameterCount));
    }

    [Test]
    public void ModelCostMatchesAHandCount()
    {
        // d = 32, 2 layers, T = 16, V = 256; block 0 dense (H = 128), block 1 PEER N = 16², h = 2, k = 4, dq = 8.
        var model = TrainingFixtures.Micro().Model;
        long d = 32, t = 16, v = 256, hidden = 128, n = 16, h = 2, k = 4, dq = 8;
        long attention = 2 * (4 * d * d + d * (t + 1));
        long dense = 2 * d * hidden;
        long peer = d * h * dq + h * (n * dq + k * k) + h * k * 2 * d;
        var cost = ModelCost.Of(Cpu, model);
        Assert.That(cost.FeedForwardMacsPerToken, Is.EqualTo(dense + peer));
        Assert.That(cost.ForwardMacsPerToken, Is.EqualTo(attention + dense + peer + d * v));
        Assert.That(cost.TrainFlopsPerToken, Is.EqualTo(6 * cost.ForwardMacsPerToken));
        Assert.That(cost.TokensFor(1e9), Is.EqualTo(1e9 / (6.0 * cost.ForwardMacsPerToken)).Within(1e-9));
    }

    [TestCase("isoflop", 8)]
    [TestCase("experts", 6)]
    [TestCase("active", 4)]
    public void QuickPlansSpendTheirBudget(string experiment, int count)
    {
        var variants = SweepPlan.Build(Cpu, new SweepSettings { Experiment = experiment, Quick = true, Device = "cpu" });
        Assert.That(variants, Has.Count.EqualTo(count));
        Assert.That(variants.Select(x => x.Name).Distinct().Count(), Is.EqualTo(count));
        foreach (var x in variants)
        {
            Assert.That(x.Budget, Is.EqualTo(2e10));
            Assert.That(x.Config.Model.BlockKinds(), Is.EqualTo(new[] { "ffw", x.Kind, "ffw" }));
            double tokens = x.Budget / (6.0 * x.Cost.ForwardMacsPerToken);
            Assert.That(x.Tokens, Is.EqualTo(tokens).Within(1e-6));
            Assert.That(x.Config.Train.Steps, Is.EqualTo((int)Math.Round(tokens / (8 * 32))), x.Name);
            // whole steps: the spent FLOPs are within half a step of the budget
            Assert.That(Math.Abs(x.SpentFlops - x.Budget), Is.LessThanOrEqualTo(0.5 * 8 * 32 * x.Cost.TrainFlopsPerToken), x.Name);
        }
        if (experiment == "isoflop")
            Assert.That(variants.Select(x => x.Kind).Distinct(), Is.EquivalentTo(new[] { "ffw", "moe-ec", "pkm", "peer" }));
        else
            Assert.That(variants.All(x => x.Kind == "peer"));
        if (experiment == "experts")
        {
            Assert.That(variants.All(x => x.Config.Model.Peer.Heads * x.Config.Model.Peer.TopK == 32));
            Assert.That(variants.Select(x => (x.Config.Model.Peer.Experts, x.Config.Model.Peer.QueryNorm)).Distinct().Count(), Is.EqualTo(6));
        }
    }

    [Test]
    public void BadSettingsAreRefused()
    {
        Assert.That(() => new SweepSettings { Experiment = "nope" }.Validate(), Throws.TypeOf<ConfigException>().With.Message.Contains("experiment = 'nope'"));
        Assert.That(() => new SweepSettings { Budgets = [-1] }.Validate(), Throws.TypeOf<ConfigException>().With.Message.Contains("budget = -1"));
        Assert.That(() => new SweepSettings { Seeds = 0 }.Validate(), Throws.TypeOf<ConfigException>().With.Message.Contains("seeds = 0"));
    }

    static SweepVariant Micro(string kind, int steps = 6)
    {
        var run = TrainingFixtures.Micro(steps);
        var config = run with
        {
            Model = run.Model with { Blocks = ["ffw", kind] },
            Train = run.Train with { CheckpointEvery = 2, EvalWindows = 8 },
        };
        var cost = ModelCost.Of(Cpu, config.Model);
        double perStep = config.Train.BatchSize * config.Model.Context;
        double budget = steps * perStep * cost.TrainFlopsPerToken;
        return new SweepVariant($"{kind}-micro-s7", "isoflop", kind, budget, config, cost, budget / cost.TrainFlopsPerToken);
    }

    /// <summary>Cancels a token when a log line contains a text (to interrupt a sweep at a known step).</summary>
    sealed class CancelOn(string text, CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value != null && value.Contains(text, StringComparison.Ordinal)) cts.Cancel();
        }
    }

    [Test]
    public void MiniatureSweepInterruptsResumesAndSkipsFinishedVariants()
    {
        var variants = new[] { Micro("ffw"), Micro("peer") };
        string outDir = Path.Combine(dir, "sweep");

        // 1. Interrupted after the PEER variant's third step: the dense variant is recorded, the PEER one has a checkpoint.
        using var cts = new CancellationTokenSource();
        var log1 = new CancelOn("[2/2] peer-micro-s7: step 3/6", cts);
        Assert.That(new SweepRunner(Cpu, outDir, log1, cts.Token).Run(variants), Is.Null);
        string ffwDir = Path.Combine(outDir, "variants", "ffw-micro-s7"), peerDir = Path.Combine(outDir, "variants", "peer-micro-s7");
        Assert.That(File.Exists(Path.Combine(ffwDir, "result.json")));
        Assert.That(Directory.Exists(Path.Combine(ffwDir, "checkpoints")), Is.False, "a finished variant's checkpoints are removed");
        Assert.That(File.Exists(Path.Combine(peerDir, "result.json")), Is.False);
        Assert.That(Checkpoint.ReadState(peerDir).State.Step, Is.EqualTo(3));
        Assert.That(File.ReadAllLines(Path.Combine(outDir, "results.csv")), Has.Length.EqualTo(2));
        byte[] ffwResult = File.ReadAllBytes(Path.Combine(ffwDir, "result.json"));

        // 2. Rerun: the dense variant is skipped, the PEER one resumes at step 3.
        var log2 = new StringWriter();
        var results = new SweepRunner(Cpu, outDir, log2, CancellationToken.None).Run(variants)!;
        Assert.That(log2.ToString(), Does.Contain("[1/2] ffw-micro-s7: done earlier"));
        Assert.That(log2.ToString(), Does.Contain("[2/2] peer-micro-s7: resuming at step 3"));
        Assert.That(File.ReadAllBytes(Path.Combine(ffwDir, "result.json")), Is.EqualTo(ffwResult));
        Assert.That(results.Select(r => r.Name), Is.EqualTo(new[] { "ffw-micro-s7", "peer-micro-s7" }));

        // The resumed variant ends exactly where an uninterrupted run of it ends.
        var fresh = new SweepRunner(Cpu, Path.Combine(dir, "fresh"), TextWriter.Null).Run([variants[1]])!;
        Assert.That(results[1].ValLoss, Is.EqualTo(fresh[0].ValLoss));

        foreach (var r in results)
        {
            Assert.That(r.Steps, Is.EqualTo(6));
            Assert.That(r.Tokens, Is.EqualTo(6 * 4 * 16));
            Assert.That(r.Flops, Is.EqualTo(r.Budget).Within(1e-6 * r.Budget));
            Assert.That(r.ValLoss, Is.GreaterThan(0).And.LessThan(Math.Log(256) + 0.5));
            Assert.That(r.ValPerplexity, Is.EqualTo(Math.Exp(r.ValLoss)).Within(1e-9 * r.ValPerplexity));
        }
        Assert.That(results[0].Usage, Is.Null);
        Assert.That(results[1].Usage, Is.GreaterThan(0).And.LessThanOrEqualTo(1));
        Assert.That(results[1].Unevenness, Is.GreaterThanOrEqualTo(0).And.LessThanOrEqualTo(Math.Log(256) + 1e-9));
        Assert.That(results[1].Experts, Is.EqualTo(256));

        // 3. Files: results.csv (header + a row per variant, values as recorded), results.md, the isoFLOP plot.
        var csv = File.ReadAllLines(Path.Combine(outDir, "results.csv"));
        Assert.That(csv[0], Is.EqualTo(SweepReport.CsvHeader));
        Assert.That(csv, Has.Length.EqualTo(3));
        var header = csv[0].Split(',');
        for (int i = 0; i < 2; i++)
        {
            var row = csv[i + 1].Split(',');
            Assert.That(row[Array.IndexOf(header, "name")], Is.EqualTo(results[i].Name));
            Assert.That(double.Parse(row[Array.IndexOf(header, "val_loss")], CultureInfo.InvariantCulture), Is.EqualTo(results[i].ValLoss));
        }
        string md = File.ReadAllText(Path.Combine(outDir, "results.md"));
        Assert.That(md, Does.Contain("| ffw-micro | ffw |").And.Contain("| peer-micro | peer |"));
        Assert.That(md, Does.Contain(results[1].ValPerplexity.ToString("F3", CultureInfo.InvariantCulture)));
        byte[] png = File.ReadAllBytes(Path.Combine(outDir, "isoflop.png"));
        Assert.That(png.Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }));

        // 4. A third run trains nothing.
        var log3 = new StringWriter();
        var again = new SweepRunner(Cpu, outDir, log3).Run(variants)!;
        Assert.That(log3.ToString(), Does.Not.Contain("starting").And.Not.Contain("resuming"));
        Assert.That(again.Select(r => r.ValLoss), Is.EqualTo(results.Select(r => r.ValLoss)));
    }

    [Test]
    public void AResultOfAnotherConfigurationIsRefused()
    {
        string outDir = Path.Combine(dir, "sweep");
        new SweepRunner(Cpu, outDir, TextWriter.Null).Run([Micro("ffw", steps: 4)]);
        var changed = Micro("ffw", steps: 5);
        Assert.That(() => new SweepRunner(Cpu, outDir, TextWriter.Null).Run([changed]),
            Throws.TypeOf<ConfigException>().With.Message.Contains("another configuration").And.Message.Contains("steps"));
    }

    [Test]
    public void CliListsTheVariantsAndRefusesBadInputInOneLine()
    {
        var o = new StringWriter();
        var e = new StringWriter();
        Assert.That(PeerCli.Run(["sweep", "--experiment", "isoflop", "--quick", "--device", "cpu", "--list"], o, e), Is.EqualTo(0), e.ToString());
        var lines = o.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(8));
        Assert.That(lines[0], Does.StartWith("ffw-d32-b2e10-s1"));
        foreach (var (args, expected) in new[]
        {
            (new[] { "--seeds", "0" }, "error: config: seeds = 0: expected at least 1"),
            (new[] { "--budget", "-1" }, "error: config: budget = -1: expected a positive number of FLOPs"),
            (new[] { "--corpus", Path.Combine(dir, "missing.txt") }, "does not exist"),
        })
        {
            var err = new StringWriter();
            Assert.That(PeerCli.Run(["sweep", "--experiment", "isoflop", "--device", "cpu", "--list", .. args], new StringWriter(), err), Is.EqualTo(PeerCli.ErrorExit));
            Assert.That(err.ToString().TrimEnd().Split('\n'), Has.Length.EqualTo(1));
            Assert.That(err.ToString(), Does.Contain(expected));
        }
    }
}
