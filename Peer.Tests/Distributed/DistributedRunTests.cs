// `peer train --parallel data|experts` on several ranks through MPICH's mpiexec, against the same training in one process
// (docs/distributed.md): the loss curves agree within float tolerance at 2 and 4 ranks in both modes; checkpoints pass
// between one process and any number of ranks both ways and --resume continues a distributed run; a killed rank ends the
// run at once and a stopped one within the stated timeout, with the last checkpoint intact; ranks started with different
// options are refused. The schedule is a constant learning rate, so a run resumed at step 4 of 8 is the run of 8.
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Peer.Training;

namespace Peer.Tests.Distributed;

[NonParallelizable]
public sealed class DistributedRunTests
{
    /// <summary>Largest |distributed - one-process| loss allowed at a step. Measured: at most a few 1e-6 over 8 steps (float sums
    /// over ranks in another order than in one process); 1e-4 leaves room for a retrieval tie broken the other way.</summary>
    const double LossTolerance = 1e-4;

    string folder = "";
    double[] reference = [];

    [OneTimeSetUp]
    public void Reference()
    {
        MpiRun.Require();
        folder = Path.Combine(Path.GetTempPath(), $"peer-mpi-{Environment.ProcessId}");
        if (Directory.Exists(folder)) Directory.Delete(folder, true);
        Directory.CreateDirectory(folder);
        var rng = new Random(5);
        string[] words = "the peer layer retrieves a few of a million experts per token through product keys".Split(' ');
        File.WriteAllText(Path.Combine(folder, "corpus.txt"),
            string.Join("\n", Enumerable.Range(0, 500).Select(_ => string.Join(' ', Enumerable.Range(0, rng.Next(4, 12)).Select(_ => words[rng.Next(words.Length)])) + ".")));
        File.WriteAllText(Path.Combine(folder, "run.json"), """
            {"model": {"vocab_size": 256, "d_model": 16, "layers": 2, "heads": 2, "context": 16, "blocks": ["ffw", "peer"],
              "peer": {"experts": 256, "heads": 2, "top_k": 4, "query_dim": 8}},
             "train": {"steps": 4, "batch_size": 4, "learning_rate": 0.01, "warmup_steps": 0, "min_learning_rate_fraction": 1.0,
              "eval_every": 0, "eval_windows": 2, "checkpoint_every": 2, "device": "cpu"}}
            """);
        reference = Losses(TrainHere("reference", "--steps", "8"));
        Assert.That(reference, Has.Length.EqualTo(8));
    }

    [OneTimeTearDown]
    public void Clean()
    {
        if (folder.Length > 0 && Directory.Exists(folder)) Directory.Delete(folder, true);
    }

    string Args(string run, string more) => $"train --config run.json --corpus corpus.txt --out {run} {more}";

    // One process, in this process: a new run of run.json, or with "--resume" first, a resumed one.
    string TrainHere(string run, params string[] more)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        string dir = Path.Combine(folder, run);
        string[] args = more.FirstOrDefault() == "--resume" ? ["train", "--resume", "--out", dir, .. more[1..]]
            : ["train", "--config", Path.Combine(folder, "run.json"), "--corpus", Path.Combine(folder, "corpus.txt"), "--out", dir, .. more];
        int code = PeerCli.Run(args, output, error);
        Assert.That(code, Is.Zero, $"{output}\n{error}");
        return dir;
    }

    MpiRun.Result TrainRanks(int ranks, string run, string more, Func<Process, bool>? watch = null, int timeout = 300)
    {
        string args = more.Contains("--resume") ? $"train --out {run} {more}" : Args(run, more);
        return MpiRun.Peers(ranks, args, folder, timeout, watch);
    }

    static double[] Losses(string run) => File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1)
        .Select(l => double.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)).ToArray();

    void AssertCurve(double[] got, int firstStep, string what)
    {
        var want = reference[(firstStep - 1)..(firstStep - 1 + got.Length)];
        double worst = got.Zip(want, (a, b) => Math.Abs(a - b)).Max();
        TestContext.Progress.WriteLine($"{what}: steps {firstStep}..{firstStep + got.Length - 1}, largest |loss - one process| = {worst:E2}");
        Assert.That(got, Is.EqualTo(want).Within(LossTolerance), what);
    }

    [Test]
    public void DataParallelOnTwoRanksThenOneProcessFromItsCheckpoint()
    {
        var r = TrainRanks(2, "d2", "--parallel data --comm-timeout 120");
        Assert.That(r.Code, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("parallel    data over 2 ranks"));
        AssertCurve(Losses(Path.Combine(folder, "d2")), 1, "data, 2 ranks");
        string dir = TrainHere("d2", "--resume", "--steps", "8");
        AssertCurve(Losses(dir)[4..], 5, "one process resumed from the 2-rank checkpoint");
    }

    [Test]
    public void ExpertsOnFourRanksResumeAOneProcessCheckpoint()
    {
        string dir = TrainHere("e4");
        var r = TrainRanks(4, "e4", "--resume --steps 8 --parallel experts --comm-timeout 120");
        Assert.That(r.Code, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("rank 0 holds [256, 4] of [256, 16] of each table"), "a quarter of each expert table per rank");
        AssertCurve(Losses(dir)[4..], 5, "experts, 4 ranks, resumed from a one-process checkpoint");
    }

    [Test]
    public void ExpertsOnTwoRanksThenDataOnFourFromTheirCheckpoint()
    {
        var r = TrainRanks(2, "e2", "--parallel experts --comm-timeout 120");
        Assert.That(r.Code, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("rank 0 holds [256, 8] of [256, 16] of each table"), "half of each expert table per rank");
        AssertCurve(Losses(Path.Combine(folder, "e2")), 1, "experts, 2 ranks");
        var (state, _) = Checkpoint.ReadState(Path.Combine(folder, "e2"));
        Assert.That(state.Step, Is.EqualTo(4));
        r = TrainRanks(4, "e2", "--resume --steps 8 --parallel data --comm-timeout 120");
        Assert.That(r.Code, Is.Zero, r.ToString());
        AssertCurve(Losses(Path.Combine(folder, "e2"))[4..], 5, "data, 4 ranks, resumed from the 2-rank expert-parallel checkpoint");
    }

    // Waits for a checkpoint at step 4 or later, then acts on rank 1. Later ones count: the watcher looks once a second, and a
    // checkpoint every 2 steps of a fraction of a second each can replace step 4's between two looks.
    Func<Process, bool> OnRankOne(string run, string signal, List<DateTime> when) => _ =>
    {
        var pointer = Path.Combine(folder, run, "checkpoint.json");
        if (!File.Exists(pointer)) return false;
        var saved = Regex.Match(File.ReadAllText(pointer), @"step-(\d+)");
        if (!saved.Success || int.Parse(saved.Groups[1].Value, CultureInfo.InvariantCulture) < 4) return false;
        if (MpiRun.RankProcess($"--out {run} ", 1) is not int pid) return false;
        using var kill = Process.Start("kill", $"-{signal} {pid}");
        kill.WaitForExit();
        when.Add(DateTime.UtcNow);
        return true;
    };

    [Test]
    public void AKilledRankEndsTheRunAndLeavesTheLastCheckpointIntact()
    {
        var when = new List<DateTime>();
        var r = TrainRanks(2, "killed", "--steps 400 --parallel data --comm-timeout 120", OnRankOne("killed", "KILL", when));
        Assert.That(when, Has.Count.EqualTo(1), $"rank 1 was killed\n{r}");
        Assert.That(MpiRun.RankProcess("--out killed ", 0), Is.Null, "no rank left behind");
        Assert.That(r.Code, Is.Not.Zero, r.ToString());
        Assert.That(DateTime.UtcNow - when[0], Is.LessThan(TimeSpan.FromSeconds(60)), "the others stopped well within the timeout");
        var (state, _) = Checkpoint.ReadState(Path.Combine(folder, "killed")); // verifies every file's SHA-256
        Assert.That(state.Step, Is.GreaterThanOrEqualTo(4));
        TrainHere("killed", "--resume", "--steps", $"{state.Step + 1}");
    }

    [Test]
    public void AStoppedRankMakesTheOthersStopAfterTheTimeoutWithAClearMessage()
    {
        var when = new List<DateTime>();
        var r = TrainRanks(2, "stopped", "--steps 400 --parallel data --comm-timeout 10", OnRankOne("stopped", "STOP", when));
        Assert.That(when, Has.Count.EqualTo(1), $"rank 1 was stopped\n{r}");
        // The launcher's SIGTERM stays pending on a stopped process (only SIGKILL ends one): the test ends what it stopped.
        if (MpiRun.RankProcess("--out stopped ", 1) is int pid) Process.Start("kill", $"-KILL {pid}")!.WaitForExit();
        Assert.That(r.Code, Is.Not.Zero, r.ToString());
        Assert.That(r.Error, Does.Contain("got no answer from the other ranks within 10 s"), r.ToString());
        Assert.That(DateTime.UtcNow - when[0], Is.LessThan(TimeSpan.FromSeconds(10 + 60)), "stopped within the timeout and a margin for a loaded machine");
        var (state, _) = Checkpoint.ReadState(Path.Combine(folder, "stopped"));
        Assert.That(state.Step, Is.GreaterThanOrEqualTo(4));
    }

    [Test]
    public void RanksStartedWithDifferentOptionsAreRefused()
    {
        string one = $"{MpiRun.Peer} {Args("mismatch", "--parallel data --comm-timeout 120")}";
        var r = MpiRun.Launch($"-np 1 {one} --seed 1 : -np 1 {one} --seed 2", folder, 300);
        Assert.That(r.Code, Is.Not.Zero, r.ToString());
        Assert.That(r.Error, Does.Contain("was started differently from rank 0").And.Contain("\"seed\": 1").And.Contain("\"seed\": 2"), r.ToString());
        Assert.That(Directory.Exists(Path.Combine(folder, "mismatch")), Is.False, "nothing written");
    }

    [Test]
    public void LaunchedWithoutParallelIsRefused()
    {
        var r = TrainRanks(2, "plain", "");
        Assert.That(r.Code, Is.Not.Zero, r.ToString());
        Assert.That(r.Error, Does.Contain("--parallel is not given"), r.ToString());
    }
}
