// The `peer` program end to end, in process: each bad
// input tested here gives one line on stderr, exit code 1, and leaves every file as it was.
using System.Security.Cryptography;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class CliTests
{
    string dir = null!;
    string corpus = null!;
    string config = null!;

    [SetUp]
    public void SetUp()
    {
        dir = Directory.CreateTempSubdirectory("peer-cli-").FullName;
        corpus = TrainingFixtures.WriteCorpus(dir);
        config = Path.Combine(dir, "micro.json");
        var micro = TrainingFixtures.Micro(8);
        File.WriteAllText(config, (micro with { Train = micro.Train with { EvalEvery = 4 } }).ToJson());
    }

    [TearDown]
    public void TearDown() => Directory.Delete(dir, true);

    static (int Code, string Out, string Err) Peer(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PeerCli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    Dictionary<string, string> Snapshot() => Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
        .ToDictionary(f => f, f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    void AssertOneLineError((int Code, string Out, string Err) r, string expected, Dictionary<string, string> before)
    {
        Assert.That(r.Code, Is.EqualTo(PeerCli.ErrorExit), r.Err + r.Out);
        Assert.That(r.Err.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1), "one line: " + r.Err);
        Assert.That(r.Err, Does.StartWith("error: ").And.Contain(expected).And.Not.Contain("   at "));
        Assert.That(Snapshot(), Is.EqualTo(before), "no file was created, changed or removed");
    }

    [Test]
    public void TrainWritesMetricsPlotsAndACheckpointThenEvalAndGenerateUseIt()
    {
        string run = Path.Combine(dir, "run");
        var r = Peer("train", "--config", config, "--corpus", corpus, "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        Assert.That(r.Out, Does.Contain("val loss").And.Contain("expert usage").And.Contain("sample").And.Contain("Kneser-Ney trigram"));
        Assert.That(r.Out, Does.Match(@"final +val loss .* on the whole validation split \([\d,]+ tokens in [\d,]+ windows\); unigram [\d.]+, Kneser-Ney trigram [\d.]+, 5-gram [\d.]+"));
        Assert.That(File.Exists(Path.Combine(run, "baselines.json")), "the baselines are cached in the run folder");
        var rows = MetricsFile.Read(Path.Combine(run, "metrics.csv"));
        Assert.That(rows.Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, 8)));
        Assert.That(rows.Count(x => x.ValLoss.HasValue), Is.EqualTo(2));
        Assert.That(rows[^1].ExpertUsage, Is.GreaterThan(0));
        foreach (var f in new[] { "loss.png", "experts.png", "config.json", "checkpoint.json" }) Assert.That(File.Exists(Path.Combine(run, f)), f);
        Assert.That(RunConfig.FromJson(File.ReadAllText(Path.Combine(run, "config.json"))).Train.Corpus, Is.EqualTo(corpus));

        var e = Peer("eval", "--checkpoint", run);
        Assert.That(e.Code, Is.EqualTo(0), e.Err);
        Assert.That(e.Out, Does.Contain("step 8  val loss").And.Contain("on the whole validation split").And.Contain("blocks.1.ffw: expert usage"));
        string final = r.Out.Split('\n').Single(l => l.StartsWith("final", StringComparison.Ordinal));
        Assert.That(e.Out, Does.Contain(final[final.IndexOf("unigram", StringComparison.Ordinal)..].TrimEnd()), "eval prints the final evaluation's baselines");
        Assert.That(e.Out, Does.Contain(final[final.IndexOf("val loss", StringComparison.Ordinal)..final.IndexOf(" (ppl", StringComparison.Ordinal)]), "and its loss");
        var sampled = Peer("eval", "--checkpoint", run, "--windows", "3");
        Assert.That(sampled.Out, Does.Contain("on a sample of the validation split (48 tokens in 3 windows)"));
        var g1 = Peer("generate", "--checkpoint", run, "--prompt", "Gets the", "--length", "30", "--seed", "5");
        var g2 = Peer("generate", "--checkpoint", run, "--prompt", "Gets the", "--length", "30", "--seed", "5");
        Assert.That(g1.Code, Is.EqualTo(0), g1.Err);
        Assert.That(g1.Out, Does.StartWith("Gets the"));
        Assert.That(g2.Out, Is.EqualTo(g1.Out), "same seed, same text");
    }

    [Test]
    public void TrainHelpListsTheTablesOptimizer()
    {
        var r = Peer("train", "--help");
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        Assert.That(r.Out, Does.Contain("--sparse-optimizer").And.Contain("rowwise-adagrad").And.Contain("rowwise-adamw").And.Contain("--sparse-lr"));
    }

    [Test]
    public void BadInputsGiveOneLineErrorsAndTouchNothing()
    {
        string run = Path.Combine(dir, "run");
        Assert.That(Peer("train", "--config", config, "--corpus", corpus, "--out", run).Code, Is.EqualTo(0));
        File.WriteAllText(Path.Combine(dir, "empty.txt"), "");
        File.WriteAllText(Path.Combine(dir, "small.txt"), "far too short for a window");
        File.WriteAllText(Path.Combine(dir, "bad.json"), "{\"model\": {\"heads\": 3, \"d_model\": 32}}");
        string other = Path.Combine(dir, "other.json");
        var micro = TrainingFixtures.Micro(8);
        File.WriteAllText(other, (micro with { Model = micro.Model with { DModel = 64 } }).ToJson());
        string mine = Path.Combine(dir, "mine");
        Directory.CreateDirectory(mine);
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "the user's file");
        var before = Snapshot();
        string fresh = Path.Combine(dir, "fresh");

        AssertOneLineError(Peer("train", "--corpus", Path.Combine(dir, "missing.txt"), "--out", fresh), "does not exist", before);
        AssertOneLineError(Peer("train", "--corpus", Path.Combine(dir, "empty.txt"), "--out", fresh), "is empty", before);
        AssertOneLineError(Peer("train", "--config", config, "--corpus", Path.Combine(dir, "small.txt"), "--out", fresh), "need at least 34", before);
        AssertOneLineError(Peer("train", "--config", Path.Combine(dir, "bad.json"), "--corpus", corpus, "--out", fresh), "heads = 3 does not divide d_model = 32", before);
        AssertOneLineError(Peer("train", "--preset", "tiny", "--config", config, "--out", fresh), "not both", before);
        AssertOneLineError(Peer("train", "--config", config, "--corpus", corpus, "--device", "tpu", "--out", fresh), "device = 'tpu'", before);
        AssertOneLineError(Peer("train", "--config", config, "--corpus", corpus, "--sparse-lr", "-1", "--out", fresh), "sparse_learning_rate = -1", before);
        AssertOneLineError(Peer("train", "--resume", "--sparse-optimizer", "rowwise-adagrad", "--steps", "12", "--out", run),
            "another configuration (train.sparse_optimizer: \"adamw\" in the checkpoint vs \"rowwise-adagrad\")", before);
        AssertOneLineError(Peer("train", "--config", config, "--corpus", corpus, "--out", mine), "is not empty", before);
        AssertOneLineError(Peer("train", "--config", config, "--corpus", corpus, "--out", run), "already holds a checkpoint", before);
        AssertOneLineError(Peer("train", "--resume", "--config", other, "--corpus", corpus, "--out", run), "another configuration (model.d_model: 32 in the checkpoint vs 64)", before);
        AssertOneLineError(Peer("train", "--resume", "--out", run), "the checkpoint is at step 8 and steps = 8", before);
        if (!Device.List().Any(d => d.Backend == Backend.Cuda && d.Available))
            AssertOneLineError(Peer("train", "--config", config, "--corpus", corpus, "--device", "cuda", "--out", fresh), "device:", before);

        string model = Directory.GetFiles(run, "model.safetensors", SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(model);
        bytes[bytes.Length / 2] ^= 1;
        File.WriteAllBytes(model, bytes);
        before = Snapshot();
        AssertOneLineError(Peer("train", "--resume", "--steps", "12", "--out", run), "is damaged", before);
        AssertOneLineError(Peer("generate", "--checkpoint", run), "is damaged", before);
        AssertOneLineError(Peer("eval", "--checkpoint", run), "is damaged", before);
        AssertOneLineError(Peer("generate", "--checkpoint", Path.Combine(dir, "nowhere")), "no checkpoint", before);
    }

    [Test]
    public void InterruptSavesAndResumeContinuesTheSameLossCurve()
    {
        var slow = TrainingFixtures.Micro(60);
        File.WriteAllText(config, (slow with { Train = slow.Train with { EvalEvery = 15 } }).ToJson());
        string straight = Path.Combine(dir, "straight"), interrupted = Path.Combine(dir, "interrupted");
        Assert.That(Peer("train", "--config", config, "--corpus", corpus, "--out", straight).Code, Is.EqualTo(0));

        // The interrupt token is what Ctrl+C (SIGINT) and SIGTERM set; here a watcher sets it once a few steps are logged.
        string metrics = Path.Combine(interrupted, "metrics.csv");
        using var stop = new CancellationTokenSource();
        var watcher = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested && (!File.Exists(metrics) || File.ReadAllLines(metrics).Length < 4)) Thread.Sleep(2);
            stop.Cancel();
        });
        var o = new StringWriter();
        int code = PeerCli.Run(["train", "--config", config, "--corpus", corpus, "--out", interrupted], o, new StringWriter(), stop.Token);
        stop.Cancel();
        watcher.Wait();
        int savedAt = Checkpoint.ReadState(interrupted).State.Step;
        Assume.That(savedAt, Is.LessThan(60), "the run finished before the watcher interrupted it");
        Assert.That(code, Is.EqualTo(PeerCli.InterruptedExit), o.ToString());
        Assert.That(o.ToString(), Does.Contain($"interrupted at step {savedAt}"));
        Assert.That(MetricsFile.Read(metrics).Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, savedAt)));

        var r = Peer("train", "--resume", "--out", interrupted);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        var a1 = MetricsFile.Read(Path.Combine(straight, "metrics.csv"));
        var b1 = MetricsFile.Read(metrics);
        Assert.That(b1.Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, 60)));
        Assert.That(b1.Select(x => x.Loss), Is.EqualTo(a1.Select(x => x.Loss)), "the loss curve equals the uninterrupted run's to the bit");
        Assert.That(b1.Select(x => x.ValLoss), Is.EqualTo(a1.Select(x => x.ValLoss)));
    }
}
