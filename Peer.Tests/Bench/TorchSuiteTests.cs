// The torch suite and its PyTorch scripts. The suite runs end to end at smoke sizes and reports either its
// side-by-side figures or PyTorch absent. Where a Python with torch is present, the scripts are shown to compute
// what Peer computes from the same weights, so the bench's yardstick measures the same work: the PEER layer of
// torch/peer_step.py (both designs) against `peer layer`'s output and gradients, and the language model of
// torch/lm_step.py against Peer.Training's LanguageModel (loss and every gradient). The bench runs as a process
// (BenchProgram) and its scripts from its build output; which Python has torch, the test finds out for itself.
using System.Diagnostics;
using System.Text.Json;
using Peer.IO;
using Peer.Training;

namespace Peer.Tests.Bench;

public sealed class TorchSuiteTests
{
    string dir = "";

    [SetUp]
    public void MakeDir() => dir = Directory.CreateTempSubdirectory("peer-torch-").FullName;

    [TearDown]
    public void RemoveDir() => Directory.Delete(dir, true);

    /// <summary>The variable that names the bench's interpreter (Peer.Bench/README.md, "PyTorch for the torch suite").</summary>
    const string PythonVariable = "PEER_BENCH_PYTHON";

    static JsonElement RunSuite(string output, IReadOnlyDictionary<string, string>? env = null, params string[] extra)
    {
        var (exit, stdout, stderr) = BenchProgram.Run(output, ["torch", "--smoke", "--out", output, .. extra], env);
        Assert.That(exit, Is.EqualTo(0), Repo.Tail(stdout) + "\n" + stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "results.json")));
        return doc.RootElement.GetProperty("suites").EnumerateArray().Single().Clone();
    }

    /// <summary>
    /// The interpreter the bench should find, looked for as the README says (the variable, else /usr/bin/python3,
    /// python3, python): the first that imports torch, or null.
    /// </summary>
    static string? TorchPython()
    {
        string? chosen = Environment.GetEnvironmentVariable(PythonVariable);
        string[] candidates = string.IsNullOrWhiteSpace(chosen) ? ["/usr/bin/python3", "python3", "python"] : [chosen.Trim()];
        foreach (var c in candidates)
        {
            try
            {
                var (exit, _, _) = Repo.Run(c, ["-c", "import torch"], Path.GetTempPath(), TimeSpan.FromMinutes(2));
                if (exit == 0) return c;
            }
            catch (System.ComponentModel.Win32Exception) { } // no such program
        }
        return null;
    }

    static string[] Notes(JsonElement suite) => suite.GetProperty("notes").EnumerateArray().Select(n => n.GetString()!).ToArray();

    /// <summary>At smoke sizes the suite measures both parts on both sides, or says PyTorch is absent and why.</summary>
    [Test]
    public void SuiteReportsSideBySideFiguresOrPyTorchAbsent()
    {
        var suite = RunSuite(dir);
        Assert.That(suite.GetProperty("name").GetString(), Is.EqualTo("torch"));
        var notes = Notes(suite);
        var measurements = suite.GetProperty("measurements").EnumerateArray().ToArray();
        if (TorchPython() is null)
        {
            Assert.That(notes, Has.Some.StartsWith("PyTorch absent: "), string.Join("\n", notes));
            Assert.That(measurements, Is.Empty);
            return;
        }
        Assert.That(notes.Where(n => n.StartsWith("WARNING")), Is.Empty, "every configuration ran");
        var ratios = measurements.Where(m => m.GetProperty("variant").GetString() == "Peer / PyTorch best").ToArray();
        string[] names = ratios.Select(m => m.GetProperty("name").GetString()!).ToArray();
        Assert.That(names, Is.EquivalentTo(new[]
        {
            "LM, smoke: d 32, 3 layers, context 16, batch 2, dense (ffw,ffw,ffw)",
            "LM, smoke: d 32, 3 layers, context 16, batch 2, PEER block (ffw,peer,ffw)",
            "PEER step, N = 16^2, dense AdamW",
            "PEER step, N = 16^2, SparseAdam",
            "PEER step, N = 16^2, dense AdamW (Peer: rowwise-adagrad)",
        }));
        foreach (var m in measurements)
        {
            double v = m.GetProperty("value").GetDouble();
            Assert.That(double.IsFinite(v) && v > 0, m.ToString());
        }
        CheckThreadCounts(measurements, names);
        var goals = suite.GetProperty("goals").EnumerateArray().Select(g => g.GetProperty("name").GetString()!).ToArray();
        Assert.That(goals, Has.Exactly(2).StartsWith("LM, smoke"));
        Assert.That(goals, Has.Exactly(2).Contains("Peer / PyTorch's best with"), "the large N against each design");
        Assert.That(goals, Has.One.Contains("backward / forward"));
        Assert.That(goals, Has.One.Contains("peak memory with rowwise-adagrad"), "the memory goal asks for row-wise optimizer state");
        Assert.That(File.ReadAllText(Path.Combine(dir, "results.md")), Does.Contain("Peer / PyTorch best"));
    }

    /// <summary>
    /// Each side's thread counts: the LM step's Peer figure at 1 thread and at one per processor (the CPU accelerator's default),
    /// "Peer" being the better of them, the PEER step's at one per processor only; PyTorch's at 1, 2 and the processor count; the
    /// ratio is Peer's best over PyTorch's best.
    /// </summary>
    static void CheckThreadCounts(JsonElement[] measurements, string[] names)
    {
        int cores = Environment.ProcessorCount;
        int[] torchThreads = new[] { 1, 2, cores }.Distinct().Order().ToArray();
        int[] peerLm = new[] { 1, cores }.Distinct().Order().ToArray();
        foreach (var name in names)
        {
            var of = measurements.Where(m => m.GetProperty("name").GetString() == name)
                .ToDictionary(m => m.GetProperty("variant").GetString()!, m => m.GetProperty("value").GetDouble());
            int[] peerThreads = name.StartsWith("LM, ") ? peerLm : [cores];
            var peerRates = peerThreads.Length > 1 ? peerThreads.Select(t => of[$"Peer {t} thread(s)"]).ToArray() : [of["Peer"]];
            Assert.That(of.Keys.Where(k => k.StartsWith("Peer ") && k.EndsWith(" thread(s)")).Count(), Is.EqualTo(peerThreads.Length > 1 ? peerThreads.Length : 0), name);
            Assert.That(of["Peer"], Is.EqualTo(peerRates.Max()), $"{name}: Peer's figure is its best thread count's");
            Assert.That(of["Peer best thread count"], Is.EqualTo(peerThreads[Array.IndexOf(peerRates, peerRates.Max())]), name);
            double torchBest = torchThreads.Max(t => of[$"PyTorch {t} thread(s)"]);
            Assert.That(of["Peer / PyTorch best"], Is.EqualTo(of["Peer"] / torchBest).Within(1e-9).Percent, $"{name}: the ratio is best over best");
        }
    }

    /// <summary>--torch-part lm runs the language-model step only, and says so; --torch-part peer the PEER layer step only.</summary>
    [TestCase("lm", "LM, ")]
    [TestCase("peer", "PEER step, ")]
    public void TorchPartRunsOneHalf(string part, string prefix)
    {
        var suite = RunSuite(dir, null, "--torch-part", part);
        var notes = Notes(suite);
        if (TorchPython() is null)
        {
            Assert.That(notes, Has.Some.StartsWith("PyTorch absent: "), string.Join("\n", notes));
            return;
        }
        Assert.That(notes, Has.One.StartsWith($"--torch-part {part}: only the "));
        var names = suite.GetProperty("measurements").EnumerateArray().Select(m => m.GetProperty("name").GetString()!).Distinct().ToArray();
        Assert.That(names, Is.Not.Empty.And.All.StartsWith(prefix));
    }

    /// <summary>An interpreter that does not exist (the variable overrides the search): PyTorch is reported absent, the run goes on.</summary>
    [Test]
    public void MissingInterpreterIsReportedAbsent()
    {
        var suite = RunSuite(dir, new Dictionary<string, string> { [PythonVariable] = Path.Combine(dir, "no-such-python") });
        var notes = Notes(suite);
        Assert.That(notes, Has.One.StartsWith("PyTorch absent: no Python that imports torch (").And.Contains("no-such-python"));
        Assert.That(notes, Has.One.Contains($"({PythonVariable} is set)"));
        Assert.That(suite.GetProperty("measurements").GetArrayLength(), Is.EqualTo(0));
    }

    static string RequireTorch() => TorchPython() ?? throw new IgnoreException("PyTorch absent: no Python here imports torch");

    /// <summary>Runs a script of the torch folder to completion; fails the test with its error output otherwise.</summary>
    static void RunScript(string python, string script, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Path.Combine(BenchProgram.TorchScripts, script));
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        using var p = Process.Start(info)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(TimeSpan.FromMinutes(5)), $"{script} did not finish");
        Assert.That(p.ExitCode, Is.EqualTo(0), $"{script} {string.Join(' ', args)}: {err.Result}");
    }

    const int T = 12, Dm = 8, H = 2, Dq = 6, N = 5, K = 3, Hq = H * Dq;

    [TestCase("dense")]
    [TestCase("sparse")]
    public void PyTorchPeerLayerComputesPeersLayer(string design)
    {
        var python = RequireTorch();
        var weights = new SafeTensorFile();
        void Add(string name, float[] data, params long[] shape) => weights.Add(name, data, shape);
        Add("query.weight", GradCheck.Rand(Hq * Dm, 1), Hq, Dm);
        Add("query.bias", GradCheck.Rand(Hq, 2), Hq);
        Add("query_norm.weight", GradCheck.Rand(Hq, 3).Select(v => 1 + 0.3f * v).ToArray(), Hq);
        Add("query_norm.bias", GradCheck.Rand(Hq, 4, 0.2f), Hq);
        Add("query_norm.running_mean", GradCheck.Rand(Hq, 5, 0.3f), Hq);
        Add("query_norm.running_var", GradCheck.Rand(Hq, 6).Select(v => 1 + 0.5f * v).ToArray(), Hq);
        Add("keys.sub1", GradCheck.Rand(N * Dq / 2, 7), N, Dq / 2);
        Add("keys.sub2", GradCheck.Rand(N * Dq / 2, 8), N, Dq / 2);
        Add("experts.down", GradCheck.Rand(N * N * Dm, 9), N * N, Dm);
        Add("experts.up", GradCheck.Rand(N * N * Dm, 10), N * N, Dm);
        var input = new SafeTensorFile();
        input.Add("x", GradCheck.Rand(T * Dm, 11), T, Dm);
        input.Add("grad_y", GradCheck.Rand(T * Dm, 12), T, Dm);
        string w = Path.Combine(dir, "w.safetensors"), x = Path.Combine(dir, "x.safetensors");
        string ours = Path.Combine(dir, "peer.safetensors"), theirs = Path.Combine(dir, "torch.safetensors");
        SafeTensors.Write(w, weights);
        SafeTensors.Write(x, input);

        var error = new StringWriter();
        int code = PeerCli.Run(["layer", "--weights", w, "--input", x, "--output", ours, "--top-k", $"{K}", "--device", "cpu"], new StringWriter(), error);
        Assert.That(code, Is.EqualTo(0), error.ToString());
        RunScript(python, "peer_step.py", ["check", "--weights", w, "--input", x, "--output", theirs, "--top-k", $"{K}", "--design", design]);

        using var a = SafeTensors.Read(ours);
        using var b = SafeTensors.Read(theirs);
        Assert.That(b.GetInts("indices"), Is.EqualTo(a.GetInts("indices")), "the same experts, in the same order");
        var names = a.Names.Where(n => n != "indices").ToArray();
        Assert.That(names, Is.SupersetOf(new[] { "y", "weights", "grad.x", "grad.query.weight", "grad.query_norm.weight", "grad.keys.sub1", "grad.experts.down" }));
        Assert.That(b.Names.Where(n => n != "indices"), Is.EquivalentTo(names));
        foreach (var name in names)
        {
            Assert.That(b.GetInfo(name).Shape, Is.EqualTo(a.GetInfo(name).Shape), name);
            Assert.That(b.GetFloats(name), Is.EqualTo(a.GetFloats(name)).Within(2e-5), name);
        }
    }

    [TestCase(true, true)]
    [TestCase(false, false)]
    public void PyTorchLanguageModelComputesPeersModel(bool tied, bool withPeer)
    {
        var python = RequireTorch();
        var config = new ModelConfig
        {
            DModel = 16, Layers = 3, Heads = 2, Context = 8, TiedHead = tied,
            Blocks = withPeer ? null : ["ffw", "ffw", "ffw"],
            Peer = new PeerConfig { Experts = 36, Heads = 2, TopK = 3, QueryDim = 4 },
        };
        const int batch = 3;
        var device = Devices.Cpu;
        using var scope = Scope.Begin();
        using var model = new LanguageModel(device, config, seed: 4);
        var weights = new SafeTensorFile();
        foreach (var (name, t) in model.StateDict()) weights.Add(name, t.ToArray(), t.Shape.Select(s => (long)s).ToArray());
        var rng = new Random(5);
        int[] windows = Enumerable.Range(0, batch * (config.Context + 1)).Select(_ => rng.Next(config.VocabSize)).ToArray();
        var input = new SafeTensorFile();
        input.Add("windows", windows, batch, config.Context + 1);
        string w = Path.Combine(dir, "w.safetensors"), x = Path.Combine(dir, "x.safetensors"), theirs = Path.Combine(dir, "torch.safetensors");
        SafeTensors.Write(w, weights);
        SafeTensors.Write(x, input);
        RunScript(python, "lm_step.py", ["check", "--weights", w, "--input", x, "--output", theirs, .. LmShapeArgs(config)]);

        model.Train();
        var loss = model.Loss(windows, batch);
        float ours = loss.Item();
        loss.Backward();
        using var b = SafeTensors.Read(theirs);
        Assert.That(b.GetFloats("loss")[0], Is.EqualTo(ours).Within(1e-5), "loss");
        var parameters = model.NamedParameters().ToArray();
        Assert.That(b.Names.Where(n => n.StartsWith("grad.")), Is.EquivalentTo(parameters.Select(p => "grad." + p.Name)), "the same parameters");
        Assert.That(parameters.Select(p => p.Name), withPeer ? Has.Some.EqualTo("blocks.1.ffw.experts.down") : Has.None.Contains("experts"));
        Assert.That(parameters.Select(p => p.Name), tied ? Has.None.EqualTo("head.weight") : Has.One.EqualTo("head.weight"));
        foreach (var (name, p) in parameters)
        {
            float[] g = p.SparseGrad is { } sparse ? Peer.RowSparseGradients.ToDense(sparse, p.Shape[0]).ToArray() : p.Grad!.ToArray();
            Assert.That(b.GetFloats("grad." + name), Is.EqualTo(g).Within(2e-5), name);
        }
        model.ZeroGrad();
    }

    /// <summary>torch/lm_step.py's options for a model of <paramref name="m"/>'s shape (its command line, as the torch suite passes it).</summary>
    static IEnumerable<string> LmShapeArgs(ModelConfig m) =>
        ["--vocab", $"{m.VocabSize}", "--dim", $"{m.DModel}", "--layers", $"{m.Layers}", "--heads", $"{m.Heads}", "--context", $"{m.Context}",
         "--hidden", $"{m.HiddenWidth}", "--blocks", string.Join(",", m.BlockKinds()), "--peer-experts", $"{m.Peer.Experts}",
         "--peer-heads", $"{m.Peer.Heads}", "--peer-top-k", $"{m.Peer.TopK}", "--peer-query-dim", $"{m.Peer.QueryDim}",
         .. m.TiedHead ? Array.Empty<string>() : ["--untied"]];
}
