// The vision suite at smoke sizes, run as the bench's users run it (BenchProgram: the built Peer.Bench.dll as a process):
// Peer's two presets are measured whether or not PyTorch is there; where a Python imports torch, PyTorch's steps of the
// same two models (torch/vit_step.py, parameter counts checked by the suite) are measured in the same rounds at each
// thread count, with the ratio of Peer's images/s to PyTorch's best.
using System.Text.Json;

namespace Peer.Tests.Bench;

public sealed class VisionSuiteTests
{
    string dir = "";

    [SetUp]
    public void MakeDir() => dir = Directory.CreateTempSubdirectory("peer-vision-").FullName;

    [TearDown]
    public void RemoveDir() => Directory.Delete(dir, true);

    static JsonElement RunSuite(string output, IReadOnlyDictionary<string, string>? env, params string[] extra)
    {
        var (exit, stdout, stderr) = BenchProgram.Run(output, ["vision", "--smoke", "--out", output, .. extra], env);
        Assert.That(exit, Is.EqualTo(0), Repo.Tail(stdout) + "\n" + stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "results.json")));
        return doc.RootElement.GetProperty("suites").EnumerateArray().Single().Clone();
    }

    static string[] Figures(JsonElement suite) => suite.GetProperty("measurements").EnumerateArray()
        .Select(m => $"{m.GetProperty("name").GetString()} | {m.GetProperty("variant").GetString()} | {m.GetProperty("unit").GetString()}").ToArray();

    static string[] Notes(JsonElement suite) => suite.GetProperty("notes").EnumerateArray().Select(n => n.GetString()!).ToArray();

    /// <summary>With the bench's interpreter pointed at a program that does not exist, the suite says PyTorch is absent and why, measures
    /// Peer's presets alone (step ms and images/s, the peer preset's against the dense one's), and --profile writes both presets' tables.</summary>
    [Test]
    public void WithoutPyTorchPeersPresetsAreMeasuredAlone()
    {
        var env = new Dictionary<string, string> { ["PEER_BENCH_PYTHON"] = Path.Combine(dir, "no-such-python") };
        var suite = RunSuite(dir, env, "--profile");
        Assert.That(suite.GetProperty("name").GetString(), Is.EqualTo("vision"));
        var notes = Notes(suite);
        Assert.That(notes, Has.Some.StartsWith("PyTorch absent: ").And.Some.Contains("no-such-python"), string.Join("\n", notes));
        Assert.That(notes, Has.Some.StartsWith("Data: random images made in memory (--smoke)"));
        var figures = Figures(suite);
        foreach (var preset in new[] { "peer", "dense" })
            foreach (var unit in new[] { "ms", "images/s" })
                Assert.That(figures, Does.Contain($"{preset} preset | training step | {unit}"));
        Assert.That(figures, Has.None.Contains("PyTorch"));
        var peer = suite.GetProperty("measurements").EnumerateArray().Single(m => m.GetProperty("name").GetString() == "peer preset" && m.GetProperty("unit").GetString() == "images/s");
        Assert.That(peer.GetProperty("referenceName").GetString(), Is.EqualTo("dense preset"));
        foreach (var file in new[] { "profile-vision-cpu-peer-preset.txt", "profile-vision-cpu-dense-preset.txt" })
            Assert.That(File.Exists(Path.Combine(dir, file)), file);
        Assert.That(File.ReadAllText(Path.Combine(dir, "profile-vision-cpu-peer-preset.txt")), Does.Contain("PeerExpert.Forward"));
    }
}
