// `peer vision train|eval` and `peer inspect` end to end, in process, on IDX files the tests write: training prints the test
// accuracy and writes its run folder, Ctrl+C saves a checkpoint that --resume continues, eval switches a class's experts off
// and reports the change per class, inspect writes a readable report with its figures for an image classifier and a language
// model, and bad input is one line naming the remedy.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class VisionCliTests
{
    string dir = null!;
    string data = null!;
    string config = null!;

    [SetUp]
    public void SetUp()
    {
        dir = Directory.CreateTempSubdirectory("peer-vision-cli-").FullName;
        data = Path.Combine(dir, "data");
        Directory.CreateDirectory(data);
        SyntheticImages.Write(data, train: 600, test: 200);
        config = Path.Combine(dir, "synthetic.json");
        var c = SyntheticImages.Config(steps: 40, validation: 100);
        File.WriteAllText(config, (c with { Train = c.Train with { EvalEvery = 20, CheckpointEvery = 20 } }).ToJson());
    }

    [TearDown]
    public void TearDown() => Directory.Delete(dir, true);

    static (int Code, string Out, string Err) Peer(CancellationToken interrupt, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PeerCli.Run(args, o, e, interrupt);
        return (code, o.ToString(), e.ToString());
    }

    static (int Code, string Out, string Err) Peer(params string[] args) => Peer(default, args);

    [Test]
    public void TrainPrintsTheTestAccuracyThenEvalAndInspectUseTheCheckpoint()
    {
        string run = Path.Combine(dir, "run");
        var r = Peer("vision", "train", "--config", config, "--data", data, "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err + r.Out);
        Assert.That(r.Out, Does.Match(@"test +accuracy \d+\.\d\d ?% \(loss [\d.]+\) on 200 test images"));
        Assert.That(r.Out, Does.Contain("val acc").And.Contain("expert usage"));
        foreach (var f in new[] { "metrics.csv", "accuracy.png", "experts.png", "test.json", "config.json", "checkpoint.json" })
            Assert.That(File.Exists(Path.Combine(run, f)), f);
        var rows = File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1).Select(VisionMetricRow.Parse).ToArray();
        Assert.That(rows.Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, 40)));
        Assert.That(rows.Count(x => x.ValAccuracy.HasValue), Is.EqualTo(2));
        Assert.That(rows[^1].TestAccuracy, Is.GreaterThan(0.1));

        var e = Peer("vision", "eval", "--checkpoint", run, "--disable-class", "Trouser:4");
        Assert.That(e.Code, Is.EqualTo(0), e.Err);
        Assert.That(e.Out, Does.Contain("switched off in blocks.0.ffw: 4 experts").And.Contain("Trouser").And.Contain("before").And.Contain("change"));
        Assert.That(e.Out, Does.Contain("most specific to Trouser on 100 validation images"));

        var i = Peer("inspect", "--checkpoint", run, "--disable-experts", "blocks.0.ffw:1,2,3");
        Assert.That(i.Code, Is.EqualTo(0), i.Err);
        string report = File.ReadAllText(Path.Combine(run, "inspect", "report.md"));
        Assert.That(report, Does.Contain("random-routing baseline").And.Contain("Head overlap").And.Contain("Pearson").And.Contain("Most used experts")
            .And.Contain("Editing: experts switched off"));
        foreach (var png in new[] { "selections.png", "norms-blocks-0-ffw.png", "classes-blocks-0-ffw.png", "top-blocks-0-ffw.png" })
        {
            Assert.That(report, Does.Contain($"]({png})"), png);
            var bytes = File.ReadAllBytes(Path.Combine(run, "inspect", png));
            Assert.That(bytes[1..4], Is.EqualTo("PNG"u8.ToArray()), png);
        }
    }

    [Test]
    public void EvalFlipScoresTheTestImagesWithTheirMirrorsAndReportsBoth()
    {
        var c = SyntheticImages.Config(steps: 20, validation: 100);
        File.WriteAllText(config, (c with { Train = c.Train with { AugmentFlip = true, EvalFlip = true } }).ToJson());
        string run = Path.Combine(dir, "flip");
        var r = Peer("vision", "train", "--config", config, "--data", data, "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err + r.Out);
        Assert.That(r.Out, Does.Contain("evaluation scores each image with its mirror image"));
        var m = System.Text.RegularExpressions.Regex.Match(r.Out, @"each scored with its mirror image \(eval_flip; the images alone: (\d+\.\d\d) ?%\)");
        Assert.That(m.Success, r.Out);
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "test.json")));
        Assert.That(json.RootElement.GetProperty("flip_averaged").GetBoolean(), Is.True);
        double alone = json.RootElement.GetProperty("accuracy_images_alone").GetDouble();
        Assert.That(100 * alone, Is.EqualTo(double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).Within(0.006));
        // vision eval follows the run's eval_flip, and --flip off scores the images alone: the same figure as test.json's.
        double flipped = json.RootElement.GetProperty("accuracy").GetDouble();
        var on = Peer("vision", "eval", "--checkpoint", run);
        var off = Peer("vision", "eval", "--checkpoint", run, "--flip", "off");
        Assert.That(on.Out, Does.Contain($"test accuracy {flipped:P2}").And.Contain("each scored with its mirror image"), on.Err + on.Out);
        Assert.That(off.Out, Does.Contain($"test accuracy {alone:P2}").And.Not.Contain("mirror"), off.Err + off.Out);
        Assert.That(Peer("vision", "eval", "--checkpoint", run, "--flip", "maybe").Code, Is.Not.EqualTo(0));
        // inspect traces the images alone and says so, with their accuracy
        Assert.That(Peer("inspect", "--checkpoint", run).Code, Is.EqualTo(0));
        Assert.That(File.ReadAllText(Path.Combine(run, "inspect", "report.md")), Does.Contain($"accuracy {alone:P2}").And.Contain("on the images alone"));
    }

    [Test]
    public void CtrlCSavesACheckpointThatResumeContinuesWithTheSameLosses()
    {
        string straight = Path.Combine(dir, "straight"), stopped = Path.Combine(dir, "stopped");
        Assert.That(Peer("vision", "train", "--config", config, "--data", data, "--out", straight).Code, Is.EqualTo(0));
        // The interrupt token is what Ctrl+C (SIGINT) and SIGTERM set; here a watcher sets it once a few steps are logged.
        string metrics = Path.Combine(stopped, "metrics.csv");
        using var stop = new CancellationTokenSource();
        var watcher = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested && (!File.Exists(metrics) || File.ReadAllLines(metrics).Length < 4)) Thread.Sleep(2);
            stop.Cancel();
        });
        var r = Peer(stop.Token, "vision", "train", "--config", config, "--data", data, "--out", stopped);
        stop.Cancel();
        watcher.Wait();
        int savedAt = VisionCheckpoint.ReadState(stopped).State.Step;
        Assume.That(savedAt, Is.LessThan(40), "the run finished before the watcher interrupted it");
        Assert.That(r.Code, Is.EqualTo(PeerCli.InterruptedExit), r.Err + r.Out);
        Assert.That(r.Out, Does.Contain($"interrupted at step {savedAt}").And.Contain("--resume"));
        var resumed = Peer("vision", "train", "--resume", "--out", stopped);
        Assert.That(resumed.Code, Is.EqualTo(0), resumed.Err + resumed.Out);
        Assert.That(resumed.Out, Does.Contain($"steps {savedAt + 1}..40"));
        static double[] Losses(string run) => File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1).Select(l => VisionMetricRow.Parse(l).Loss).ToArray();
        Assert.That(Losses(stopped), Is.EqualTo(Losses(straight)), "the loss curve equals the uninterrupted run's to the bit");
    }

    [Test]
    public void BadInputIsOneLine()
    {
        var r = Peer("vision", "train", "--preset", "peer", "--data", Path.Combine(dir, "nothing"), "--out", Path.Combine(dir, "r1"));
        Assert.That(r.Code, Is.EqualTo(PeerCli.ErrorExit));
        Assert.That(r.Err.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1), r.Err);
        Assert.That(r.Err, Does.Contain("apt-get install dataset-fashion-mnist"));

        string run = Path.Combine(dir, "run");
        Assert.That(Peer("vision", "train", "--config", config, "--data", data, "--out", run, "--steps", "2").Code, Is.EqualTo(0));
        foreach (var (args, expected) in new (string[], string)[]
        {
            (["vision", "eval", "--checkpoint", run, "--disable-experts", "blocks.9.ffw:1"], "no PEER layer 'blocks.9.ffw'"),
            (["vision", "eval", "--checkpoint", run, "--disable-experts", "1,x"], "'x' is not a number"),
            (["vision", "eval", "--checkpoint", run, "--disable-experts", "9999"], "outside layer blocks.0.ffw"),
            (["vision", "eval", "--checkpoint", run, "--disable-class", "Hat"], "'Hat' is not a class"),
            (["vision", "eval", "--checkpoint", run, "--disable-experts", string.Join(",", Enumerable.Range(0, 253))], "at least k = 4 enabled experts"),
            (["vision", "train", "--config", config, "--data", data, "--out", run], "already holds a checkpoint"),
            (["inspect", "--checkpoint", Path.Combine(dir, "none")], "no checkpoint"),
        })
        {
            var e = Peer(args);
            Assert.That(e.Code, Is.EqualTo(PeerCli.ErrorExit), string.Join(" ", args) + ": " + e.Out);
            Assert.That(e.Err.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1), e.Err);
            Assert.That(e.Err, Does.StartWith("error: ").And.Contain(expected));
        }
    }

    [Test]
    public void InspectReportsALanguageModelsExpertsWithTheirContexts()
    {
        string corpus = TrainingFixtures.WriteCorpus(dir);
        string lmConfig = Path.Combine(dir, "micro.json");
        File.WriteAllText(lmConfig, TrainingFixtures.Micro(6).ToJson());
        string run = Path.Combine(dir, "lm");
        Assert.That(Peer("train", "--config", lmConfig, "--corpus", corpus, "--out", run).Code, Is.EqualTo(0));
        var r = Peer("inspect", "--checkpoint", run, "--windows", "8", "--top", "3", "--disable-experts", "blocks.1.ffw:0,1,2,3,4,5");
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        string report = File.ReadAllText(Path.Combine(run, "inspect", "report.md"));
        Assert.That(report, Does.Contain("Inspection of a language model").And.Contain("⟦").And.Contain("Head overlap")
            .And.Contain("where a switched-off expert had been retrieved").And.Contain("(selections.png)"));
        Assert.That(report, Does.Not.Contain("random-routing baseline"), "classes belong to image classifiers");
    }
}
