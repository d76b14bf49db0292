// The `peer train`, `eval` and `generate` commands against a hostile user: two writers on one run folder, runs that
// cannot fit in memory, null and unknown keys in configuration and state files, values outside their domain in
// checkpoints, runs killed before their first checkpoint, checkpoints copied from another run. Every refusal is one
// line for people, exit code 1, and leaves the user's files as they were.
using System.Text.Json.Nodes;
using Peer.IO;
using Peer.Training;
using static Peer.Tests.Training.CliHarness;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class HostileRunTests
{
    string dir = null!;
    string corpus = null!;
    string config = null!;

    [SetUp]
    public void SetUp()
    {
        dir = Directory.CreateTempSubdirectory("peer-hostile-").FullName;
        corpus = TrainingFixtures.WriteCorpus(dir);
        var micro = TrainingFixtures.Micro(8);
        config = WriteConfig(dir, "micro.json", micro with { Train = micro.Train with { CheckpointEvery = 4 } });
    }

    [TearDown]
    public void TearDown() => Directory.Delete(dir, true);

    string TrainedRun(string name = "run")
    {
        string run = Path.Combine(dir, name);
        var r = RunPeer("train", "--config", config, "--corpus", corpus, "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        return run;
    }

    static string StatePath(string run) => Directory.GetFiles(Path.Combine(run, "checkpoints"), "state.json", SearchOption.AllDirectories).Single();

    // Edits state.json as JSON; the recorded hashes are of the tensor files, so the edited state still passes them.
    static void EditState(string run, Action<JsonObject> edit)
    {
        string path = StatePath(run);
        var node = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(node);
        File.WriteAllText(path, node.ToJsonString());
    }

    // Rewrites a checkpoint's tensor file and records its new hash, as a user (or a bug elsewhere) could.
    static void ReplaceTensorFile(string run, string file, Action<SafeTensorFile, SafeTensorReader> fill)
    {
        string folder = Path.GetDirectoryName(StatePath(run))!;
        string path = Path.Combine(folder, file);
        var copy = new SafeTensorFile();
        using (var reader = SafeTensors.Read(path)) fill(copy, reader);
        SafeTensors.Write(path, copy);
        RecordHash(run, file);
    }

    static void RecordHash(string run, string file)
    {
        string path = Path.Combine(Path.GetDirectoryName(StatePath(run))!, file);
        string hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path))).ToLowerInvariant();
        EditState(run, s => s["files"]![file] = hash);
    }

    [Test]
    public void ASecondWriterIsRefusedWhileTheFirstRuns()
    {
        var slow = TrainingFixtures.Micro(100_000);
        string slowConfig = WriteConfig(dir, "slow.json", slow with { Train = slow.Train with { CheckpointEvery = 5 } });
        string run = Path.Combine(dir, "run");
        using var stop = new CancellationTokenSource();
        var first = Task.Run(() => RunPeer(stop.Token, "train", "--config", slowConfig, "--corpus", corpus, "--out", run));
        try
        {
            WaitFor(() => Checkpoint.Exists(run) && Lines(Path.Combine(run, "metrics.csv")) > 8 || first.IsCompleted, "the first run's checkpoint");
            Assert.That(first.IsCompleted, Is.False, first.IsCompleted ? first.Result.Err : "");
            AssertOneLineError(RunPeer("train", "--resume", "--out", run), "in use");
            AssertOneLineError(RunPeer("train", "--config", slowConfig, "--corpus", corpus, "--out", run), "in use");
        }
        finally
        {
            stop.Cancel();
        }
        Assert.That(first.Result.Code, Is.EqualTo(PeerCli.InterruptedExit), first.Result.Err);
        var steps = MetricsFile.Read(Path.Combine(run, "metrics.csv")).Select(r => r.Step).ToArray();
        Assert.That(steps, Is.EqualTo(Enumerable.Range(1, steps.Length)), "one writer: every step once, in order");
        var again = RunPeer("train", "--resume", "--steps", (steps.Length + 2).ToString(), "--out", run);
        Assert.That(again.Code, Is.EqualTo(0), "the lock went with the first run: " + again.Err);
    }

    [Test]
    public void AKilledRunLeavesNoStuckLockAndNoDeadEnd()
    {
        // Killed before its first checkpoint: --resume says what to run instead, and that command works.
        var slow = TrainingFixtures.Micro(100_000);
        string slowConfig = WriteConfig(dir, "slow.json", slow);
        string early = Path.Combine(dir, "early");
        using (var p = Start("train", "--config", slowConfig, "--corpus", corpus, "--out", early))
        {
            WaitFor(() => Lines(Path.Combine(early, "metrics.csv")) > 3 || p.HasExited, "the child's first steps");
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
        Assert.That(Checkpoint.Exists(early), Is.False);
        var before = Snapshot(dir);
        var resume = RunPeer("train", "--resume", "--out", early);
        AssertOneLineError(resume, "without --resume", dir, before);
        Assert.That(resume.Err, Does.Contain($"train --config \"{Path.Combine(early, "config.json")}\" --out \"{early}\""));
        var fresh = RunPeer("train", "--config", Path.Combine(early, "config.json"), "--steps", "6", "--out", early);
        Assert.That(fresh.Code, Is.EqualTo(0), fresh.Err);
        Assert.That(fresh.Out, Does.Contain("replac"), "says that it replaces the leftovers");
        Assert.That(MetricsFile.Read(Path.Combine(early, "metrics.csv")).Select(r => r.Step), Is.EqualTo(Enumerable.Range(1, 6)));

        // Killed after a checkpoint: the lock file stays behind but does not block; a stale temporary folder is removed.
        var mid = slow with { Train = slow.Train with { CheckpointEvery = 3 } };
        string midConfig = WriteConfig(dir, "mid.json", mid);
        string late = Path.Combine(dir, "late");
        using (var p = Start("train", "--config", midConfig, "--corpus", corpus, "--out", late))
        {
            WaitFor(() => Checkpoint.Exists(late) || p.HasExited, "the child's first checkpoint");
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
        int saved = Checkpoint.ReadState(late).State.Step;
        string stale = Path.Combine(late, "checkpoints", ".step-0000099.424242.tmp");
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "state.json"), "{");
        var r = RunPeer("train", "--resume", "--steps", (saved + 2).ToString(), "--out", late);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        Assert.That(Directory.Exists(stale), Is.False, "stale temporary folders are cleaned on start");
        Assert.That(MetricsFile.Read(Path.Combine(late, "metrics.csv")).Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, saved + 2)));
    }

    [Test]
    public void RunsThatCannotFitAreRefusedBeforeTheCorpusIsRead()
    {
        var before = Snapshot(dir);
        string fresh = Path.Combine(dir, "fresh");
        string missing = Path.Combine(dir, "no-such-corpus.txt");
        // The corpus does not exist: the memory check must come first for these messages to appear.
        var big = TrainingFixtures.Micro(8);
        string huge = WriteConfig(dir, "huge.json", big with { Model = big.Model with { DModel = 4096, Heads = 4, Layers = 4000 } });
        before = Snapshot(dir);
        var r = RunPeer("train", "--config", huge, "--corpus", missing, "--out", fresh);
        AssertOneLineError(r, "memory:", dir, before);
        Assert.That(r.Err, Does.Contain("needs about").And.Contain("GiB").And.Contain("available"));
        string wide = WriteConfig(dir, "wide.json", big with { Train = big.Train with { BatchSize = 2_000_000_000 } });
        before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--config", wide, "--corpus", missing, "--out", fresh), "batch_size", dir, before);
        File.WriteAllText(Path.Combine(dir, "overflow.json"), "{\"train\": {\"batch_size\": 1e12}}");
        before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--config", Path.Combine(dir, "overflow.json"), "--corpus", missing, "--out", fresh), "train.batch_size", dir, before);
        AssertOneLineError(RunPeer("train", "--preset", "paper", "--device", "cpu", "--corpus", missing, "--out", fresh), "memory:", dir, before);
    }

    [TestCase("{\"model\": null}", "model")]
    [TestCase("{\"model\": {\"peer\": null}}", "model.peer")]
    [TestCase("{\"train\": {\"tokenizer\": null}}", "train.tokenizer")]
    [TestCase("{\"model\": {\"blocks\": [null, \"peer\", \"ffw\"]}}", "model.blocks[0]")]
    [TestCase("{\"model\": {\"d_modle\": 64}}", "model.d_modle")]
    [TestCase("{\"model\": {\"peer\": {\"heads\": \"four\"}}}", "model.peer.heads")]
    [TestCase("{\"train\": {\"corpus\": 5}}", "train.corpus")]
    [TestCase("{\"train\": {\"seed\": -1}}", "train.seed")]
    [TestCase("[1, 2]", "an object")]
    [TestCase("null", "an object")]
    public void NullsAndWrongTypesInAConfigNameTheirPath(string json, string path)
    {
        File.WriteAllText(Path.Combine(dir, "bad.json"), json);
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--config", Path.Combine(dir, "bad.json"), "--corpus", corpus, "--out", Path.Combine(dir, "fresh")), path, dir, before);
    }

    [Test]
    public void UnknownKeysAreNamedAsUnknownKeys()
    {
        File.WriteAllText(Path.Combine(dir, "bad.json"), "{\"model\": {\"peer\": {\"expert\": 4096}}}");
        var r = RunPeer("train", "--config", Path.Combine(dir, "bad.json"), "--corpus", corpus);
        AssertOneLineError(r, "model.peer.expert is not a known setting");
        Assert.That(r.Err, Does.Contain("experts"), "lists the keys that are known");
    }

    static IEnumerable<TestCaseData> StateEdits()
    {
        yield return new TestCaseData((Action<JsonObject>)(s => s["config"] = null), "config").SetArgDisplayNames("config null");
        yield return new TestCaseData((Action<JsonObject>)(s => s["files"] = null), "files").SetArgDisplayNames("files null");
        yield return new TestCaseData((Action<JsonObject>)(s => s["config"]!["model"]!["peer"] = null), "config.model.peer").SetArgDisplayNames("peer null");
        yield return new TestCaseData((Action<JsonObject>)(s => s["step"] = -5), "step").SetArgDisplayNames("negative step");
        yield return new TestCaseData((Action<JsonObject>)(s => s["step"] = 4), "step").SetArgDisplayNames("step of another folder");
        yield return new TestCaseData((Action<JsonObject>)(s => s["step"] = 1e12), "step").SetArgDisplayNames("huge step");
        yield return new TestCaseData((Action<JsonObject>)(s => s["sampler_state"] = "x"), "sampler_state").SetArgDisplayNames("sampler state text");
        yield return new TestCaseData((Action<JsonObject>)(s => s["surprise"] = 1), "surprise").SetArgDisplayNames("unknown key");
        yield return new TestCaseData((Action<JsonObject>)(s => s["config"]!["train"]!["batch_size"] = 0), "batch_size").SetArgDisplayNames("invalid config");
    }

    [TestCaseSource(nameof(StateEdits))]
    public void ADamagedStateFileIsRefusedByEveryCommandAndChangesNothing(Action<JsonObject> edit, string expected)
    {
        string run = TrainedRun();
        EditState(run, edit);
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), expected, dir, before);
        AssertOneLineError(RunPeer("eval", "--checkpoint", run), expected, dir, before);
        AssertOneLineError(RunPeer("generate", "--checkpoint", run), expected, dir, before);
    }

    [Test]
    public void NonFiniteOrOutOfDomainTensorsInACheckpointAreRefused()
    {
        string run = TrainedRun();
        var pristine = Snapshot(dir);
        ReplaceTensorFile(run, "model.safetensors", (copy, reader) =>
        {
            foreach (var name in reader.Names)
            {
                var values = reader.GetFloats(name);
                if (name == "norm.weight") values[1] = float.NaN;
                copy.Add(name, values, reader.GetInfo(name).Shape);
            }
        });
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "norm.weight", dir, before);
        AssertOneLineError(RunPeer("eval", "--checkpoint", run), "norm.weight", dir, before);
        AssertOneLineError(RunPeer("generate", "--checkpoint", run), "norm.weight", dir, before);

        // A header that does not parse, with a matching hash: eval and generate say what is wrong as resume does.
        string model = Path.Combine(Path.GetDirectoryName(StatePath(run))!, "model.safetensors");
        File.WriteAllBytes(model, [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'x', 0, 0, 0, 0, 0, 0]);
        RecordHash(run, "model.safetensors");
        before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "model.safetensors", dir, before);
        AssertOneLineError(RunPeer("eval", "--checkpoint", run), "model.safetensors", dir, before);
        AssertOneLineError(RunPeer("generate", "--checkpoint", run), "model.safetensors", dir, before);
        Assert.That(pristine.Keys, Is.SupersetOf(before.Keys));
    }

    [Test]
    public void OptimizerStateOutOfDomainIsRefusedAndEvalAndGenerateDoNotNeedIt()
    {
        string run = TrainedRun();
        ReplaceTensorFile(run, "optimizer.safetensors", (copy, reader) =>
        {
            foreach (var name in reader.Names)
            {
                var info = reader.GetInfo(name);
                if (info.DType == SafeDType.I32) copy.Add(name, name == "tok_emb.weight.step" ? [7] : reader.GetInts(name), info.Shape);
                else copy.Add(name, reader.GetFloats(name), info.Shape);
            }
        });
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "tok_emb.weight.step", dir, before);

        File.Delete(Path.Combine(Path.GetDirectoryName(StatePath(run))!, "optimizer.safetensors"));
        var e = RunPeer("eval", "--checkpoint", run);
        Assert.That(e.Code, Is.EqualTo(0), e.Err);
        var g = RunPeer("generate", "--checkpoint", run, "--length", "5");
        Assert.That(g.Code, Is.EqualTo(0), g.Err);
        before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "optimizer.safetensors", dir, before);
    }

    [Test]
    public void ADamagedMetricsFileIsRefusedBeforeAnythingIsWritten()
    {
        string run = TrainedRun();
        File.AppendAllText(Path.Combine(run, "metrics.csv"), "9,not a number,,,\n");
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "metrics.csv", dir, before);
    }

    [Test]
    public void ACheckpointCopiedFromAnotherRunIsRefused()
    {
        string mine = TrainedRun("mine");
        var micro = TrainingFixtures.Micro(8);
        config = WriteConfig(dir, "other.json", micro with { Model = micro.Model with { DModel = 64 }, Train = micro.Train with { CheckpointEvery = 4 } });
        string other = TrainedRun("other");
        Directory.Delete(Path.Combine(mine, "checkpoints"), true);
        foreach (var f in Directory.GetFiles(Path.Combine(other, "checkpoints"), "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(mine, Path.GetRelativePath(other, f));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(f, target);
        }
        File.Copy(Path.Combine(other, "checkpoint.json"), Path.Combine(mine, "checkpoint.json"), overwrite: true);
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", mine), "config.json", dir, before);
        AssertOneLineError(RunPeer("eval", "--checkpoint", mine), "config.json", dir, before);
    }

    [Test]
    public void ACheckpointWhosePointerWasNeverWrittenIsFound()
    {
        // A save killed between renaming its folder into place and writing checkpoint.json: the folder is complete.
        string run = TrainedRun();
        File.Delete(Path.Combine(run, "checkpoint.json"));
        Assert.That(Checkpoint.Exists(run));
        var r = RunPeer("train", "--resume", "--steps", "10", "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        Assert.That(MetricsFile.Read(Path.Combine(run, "metrics.csv")).Select(x => x.Step), Is.EqualTo(Enumerable.Range(1, 10)));
    }

    [Test]
    public void AFileWhereTheRunFolderShouldBeIsRefusedForPeople()
    {
        string file = Path.Combine(dir, "taken");
        File.WriteAllText(file, "the user's file");
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--config", config, "--corpus", corpus, "--out", file), $"{file} is a file", dir, before);
        AssertOneLineError(RunPeer("train", "--resume", "--out", file), $"{file} is a file", dir, before);
    }

    [TestCase("train", "--steps", "99999999999")]
    [TestCase("train", "--seed", "-1")]
    [TestCase("generate", "--checkpoint", "x", "--temperature", "abc")]
    [TestCase("train", "--frobnicate")]
    public void ArgumentsThatDoNotParseGiveOneLineForPeople(params string[] args)
    {
        var r = RunPeer(args);
        AssertOneLineError(r, $"{args[0]} --help");
    }

    [Test]
    public void ACorpusThatIsNotARegularFileIsRefusedWithoutReadingIt()
    {
        Assume.That(File.Exists("/dev/zero"), "a device that never ends");
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--config", config, "--corpus", "/dev/zero", "--out", Path.Combine(dir, "fresh")), "not a regular file", dir, before);
    }

    [Test]
    public void ControlCharactersInASettingAreShownAsEscapes()
    {
        File.WriteAllText(Path.Combine(dir, "nul.json"), "{\"train\": {\"tokenizer\": \"byte\\u0000\"}}");
        var r = RunPeer("train", "--config", Path.Combine(dir, "nul.json"), "--corpus", corpus, "--out", Path.Combine(dir, "fresh"));
        AssertOneLineError(r, "'byte\\u0000'");
        Assert.That(r.Err, Does.Not.Contain("\0"));
    }

    [Test]
    public void ARunWhoseCheckpointsWereDeletedStartsAfreshOrSaysHow()
    {
        string run = TrainedRun();
        Directory.Delete(Path.Combine(run, "checkpoints"), true); // checkpoint.json now names a missing folder
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--out", run), "without --resume", dir, before);
        var fresh = RunPeer("train", "--config", Path.Combine(run, "config.json"), "--steps", "3", "--out", run);
        Assert.That(fresh.Code, Is.EqualTo(0), fresh.Err);
        Assert.That(fresh.Out, Does.Contain("checkpoint.json"), "names what it replaces");
        Assert.That(Checkpoint.ReadState(run).State.Step, Is.EqualTo(3));
    }

    [Test]
    public void ASettingPastFloat32IsRefusedAsSuch()
    {
        File.WriteAllText(Path.Combine(dir, "lr.json"), "{\"train\": {\"learning_rate\": 1e39}}");
        AssertOneLineError(RunPeer("train", "--config", Path.Combine(dir, "lr.json"), "--corpus", corpus), "train.learning_rate = 1e39: expected a number within");
    }

    [Test]
    public void ATensorFileOfAnotherStepIsRefused()
    {
        // Checkpoints at steps 4 and 8 of one run: step 4's model file, with its hash recorded, in step 8's folder.
        string run = Path.Combine(dir, "run");
        var r = RunPeer("train", "--config", config, "--corpus", corpus, "--steps", "4", "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        string early = Path.Combine(dir, "model-step-4.safetensors");
        File.Copy(Path.Combine(Path.GetDirectoryName(StatePath(run))!, "model.safetensors"), early);
        r = RunPeer("train", "--resume", "--steps", "8", "--out", run);
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        File.Copy(early, Path.Combine(Path.GetDirectoryName(StatePath(run))!, "model.safetensors"), overwrite: true);
        RecordHash(run, "model.safetensors");
        var before = Snapshot(dir);
        AssertOneLineError(RunPeer("train", "--resume", "--steps", "12", "--out", run), "written at step 4", dir, before);
        AssertOneLineError(RunPeer("eval", "--checkpoint", run), "written at step 4", dir, before);
    }
}
