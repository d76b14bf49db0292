// The bench as its users run it: the built Peer.Bench.dll as a separate process (nothing depends on Peer.Bench,
// .ci/run checks it), at the smoke sizes. The bench checks its own references before timing (plain C# and
// OpenBLAS against double-precision host loops, the ablation's naive design against PeerLayer's outputs and
// gradients) and exits with an error when one is wrong; these tests hold it to that and to its report.
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Peer.Tests.Bench;

public sealed class BenchTests
{
    static readonly string[] SuiteNames = ["ceilings", "kernels", "peer", "ablation", "layers", "training", "vision", "torch", "distributed"];
    // The smoke run below leaves torch and distributed out: TorchSuiteTests runs torch, and PyTorch's scripts, on their own;
    // DistributedSuiteMeasuresBytesAsTheCostModelSays runs distributed where MPI is.
    static readonly string[] Smoked = SuiteNames[..^2];

    static (int Exit, string Out, string Err) Bench(string workDir, params string[] args) => BenchProgram.Run(workDir, args);

    [Test]
    public void HelpListsEverySuite()
    {
        var (exit, output, _) = Bench(Repo.Root, "--help");
        Assert.That(exit, Is.EqualTo(0));
        var listed = output[(output.IndexOf("suites:\n", StringComparison.Ordinal) + 8)..].Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Trim().Split(' ')[0]).ToArray();
        Assert.That(listed, Is.EqualTo(SuiteNames), "the suites this test runs are the bench's suites, in its order");
    }

    [TestCase("--devices tpu", "--devices: unknown device 'tpu' (expected cpu, opencl, cuda or all).")]
    [TestCase("speed", "unknown suite 'speed'")]
    [TestCase("--out", "--out needs a value.")]
    [TestCase("--repeats 0", "--repeats = '0': expected a positive integer.")]
    [TestCase("--fast", "unknown option '--fast'.")]
    [TestCase("--sparse-optimizer adagrad", "--sparse-optimizer = 'adagrad': expected one of adamw, rowwise-adamw, rowwise-adagrad.")]
    [TestCase("torch --torch-part ffw", "--torch-part = 'ffw': expected lm or peer.")]
    [TestCase("torch --torch-part", "--torch-part needs a value.")]
    public void BadArgumentsExitWithTheReason(string args, string message)
    {
        var (exit, output, error) = Bench(Repo.Root, args.Split(' '));
        Assert.That(exit, Is.EqualTo(1), output + error);
        Assert.That(error.Split('\n')[0], Does.Contain(message));
        Assert.That(error, Does.Contain("usage:"));
    }

    /// <summary>--profile: the peer and training suites write the profiler's table of Peer's steps per configuration, and say so in results.md.</summary>
    [Test]
    public void ProfileWritesTheProfilersTables()
    {
        var dir = Directory.CreateTempSubdirectory("peer-bench-profile-");
        try
        {
            var (exit, output, error) = Bench(dir.FullName, "peer", "training", "--smoke", "--profile", "--out", "out");
            Assert.That(exit, Is.EqualTo(0), Repo.Tail(output) + "\n" + error);
            string outDir = Path.Combine(dir.FullName, "out");
            var files = Directory.GetFiles(outDir, "profile-*.txt").Select(Path.GetFileName).ToArray();
            Assert.That(files, Does.Contain("profile-peer-cpu-peer-step-n-16-2.txt").And.Contain("profile-training-cpu-tiny-preset.txt"));
            var peer = File.ReadAllText(Path.Combine(outDir, "profile-peer-cpu-peer-step-n-16-2.txt"));
            Assert.That(peer, Does.Contain("PeerExpert.Forward").And.Contain("PeerExpert.Backward").And.Contain("over 2 steps"));
            Assert.That(File.ReadAllText(Path.Combine(outDir, "results.md")), Does.Contain("(profile-training-cpu-tiny-preset.txt)"));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>The distributed suite at the smoke sizes (expert parallelism on 2 ranks through mpiexec): the bytes each rank received per
    /// step equal the cost model's, rank 0 holds half of the expert tables and their optimizer state, and row sharding's bytes, counted
    /// from a trained model's retrievals, are reported beside column sharding's.</summary>
    [Test]
    public void DistributedSuiteMeasuresBytesAsTheCostModelSays()
    {
        MpiRun.Require();
        var dir = Directory.CreateTempSubdirectory("peer-bench-mpi-");
        try
        {
            var (exit, output, error) = Bench(dir.FullName, "distributed", "--smoke", "--out", "out");
            Assert.That(exit, Is.EqualTo(0), Repo.Tail(output) + "\n" + error);
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "out", "results.json")));
            var figures = doc.RootElement.GetProperty("suites")[0].GetProperty("measurements").EnumerateArray().ToArray();
            var bytes = figures.Single(m => m.GetProperty("variant").GetString() == "bytes received per rank per step");
            Assert.That(bytes.GetProperty("value").GetDouble(), Is.EqualTo(bytes.GetProperty("reference").GetDouble()).Within(0.05), "KiB as printed, to 0.1");
            var memory = figures.Single(m => m.GetProperty("variant").GetString() == "expert tables and AdamW state on rank 0");
            Assert.That(memory.GetProperty("value").GetDouble(), Is.EqualTo(memory.GetProperty("reference").GetDouble() / 2).Within(1e-9),
                "each of 2 ranks holds half of the expert tables' columns, as the run reports");
            Assert.That(figures.Count(m => m.GetProperty("name").GetString()!.StartsWith("row sharding")), Is.EqualTo(3));
            Assert.That(figures.All(m => m.GetProperty("value").GetDouble() > 0));
        }
        finally
        {
            dir.Delete(true);
        }
    }

    /// <summary>
    /// Every suite but torch and distributed end to end at the smoke sizes (a suite named twice runs once, in the order named):
    /// results.json holds each suite's figures, positive and finite with low &lt;= value &lt;= high; the references'
    /// checks are recorded; OpenBLAS is measured exactly when this machine has it; results.md's tables are well formed.
    /// </summary>
    [Test]
    public void EverySuiteRunsAndWritesFiniteFigures()
    {
        var dir = Directory.CreateTempSubdirectory("peer-bench-test-");
        try
        {
            string[] named = [.. Smoked, "kernels"];
            var (exit, output, error) = Bench(dir.FullName, [.. named, "--smoke", "--devices", "cpu, cuda", "--out", "out"]);
            Assert.That(exit, Is.EqualTo(0), Repo.Tail(output) + "\n" + error);
            string outDir = Path.Combine(dir.FullName, "out");
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
            var root = doc.RootElement;
            var machine = root.GetProperty("machine");
            Assert.That(machine.GetProperty("cores").GetInt32(), Is.GreaterThan(0));
            Assert.That(machine.GetProperty("ilgpu").GetString(), Does.StartWith("1.5"));
            if (File.Exists("/proc/cpuinfo")) Assert.That(machine.GetProperty("cpu").GetString(), Is.Not.Empty);
            var devices = root.GetProperty("devices").EnumerateArray().ToArray();
            Assert.That(devices[0].GetProperty("requested").GetString(), Is.EqualTo("cpu"));
            Assert.That(devices[1].GetProperty("requested").GetString(), Is.EqualTo("cuda"));
            if (!devices[1].TryGetProperty("absent", out _)) Assert.Ignore("a CUDA device is present: this test expects a machine without one");
            var suites = root.GetProperty("suites").EnumerateArray().Select(s => (Name: s.GetProperty("name").GetString()!, Suite: s)).ToArray();
            Assert.That(suites.Select(s => s.Name), Is.EqualTo(Smoked));
            var byName = suites.ToDictionary(s => s.Name, s => s.Suite);
            string[] Figures(string suite) => byName[suite].GetProperty("measurements").EnumerateArray()
                .Select(m => $"{m.GetProperty("name").GetString()} | {m.GetProperty("variant").GetString()} | {m.GetProperty("unit").GetString()}").ToArray();
            foreach (var (name, s) in suites)
                foreach (var m in s.GetProperty("measurements").EnumerateArray())
                {
                    string what = $"{name}: {m}";
                    Assert.That(m.GetProperty("device").GetString(), Is.EqualTo("cpu").Or.EqualTo("host"), what);
                    double v = m.GetProperty("value").GetDouble();
                    Assert.That(double.IsFinite(v), what);
                    if (m.GetProperty("unit").GetString() == "abs") Assert.That(v, Is.GreaterThanOrEqualTo(0).And.LessThan(1e-3), what);
                    else Assert.That(v, Is.GreaterThan(0), what);
                    if (m.TryGetProperty("low", out var low)) Assert.That(low.GetDouble(), Is.GreaterThan(0).And.LessThanOrEqualTo(v), what);
                    if (m.TryGetProperty("high", out var high)) Assert.That(high.GetDouble(), Is.GreaterThanOrEqualTo(v).And.Not.EqualTo(double.PositiveInfinity), what);
                }
            Assert.That(Figures("ceilings"), Does.Contain("best matmul | 128^3 | GFLOP/s"));
            var kernels = Figures("kernels");
            Assert.That(kernels, Has.Some.StartsWith("matmul 128^3 | cpu 256-bit | GFLOP/s").Or.Some.StartsWith("matmul 128^3 | cpu 512-bit | GFLOP/s")
                .Or.Some.StartsWith("matmul 128^3 | portable | GFLOP/s"));
            Assert.That(kernels, Does.Contain("matmul 128^3 | plain simple (Vector<T> ikj) | GFLOP/s"));
            foreach (var shape in new[] { "1x1x1", "17x33x9", "70x600x300" })
                Assert.That(kernels, Does.Contain($"reference check: matmul {shape} | plain simple | abs"));
            foreach (var op in new[] { "add 1003", "add row-broadcast [59, 17]", "axpy 1003" })
                Assert.That(kernels, Does.Contain($"reference check: {op} | plain SIMD | abs"));
            var md = File.ReadAllText(Path.Combine(outDir, "results.md"));
            if (OpenBlasHere())
            {
                Assert.That(kernels, Does.Contain("matmul 128^3 | OpenBLAS sgemm | GFLOP/s"), "libopenblas is installed: the bench must measure it");
                Assert.That(kernels, Does.Contain("reference check: matmul 70x600x300 | OpenBLAS sgemm | abs"));
                Assert.That(md, Does.Contain("OpenBLAS (the machine's matmul ceiling, an implementation independent of Peer): OpenBLAS"));
            }
            else
            {
                Assert.That(kernels, Has.None.Contains("OpenBLAS"));
                Assert.That(md, Does.Contain("OpenBLAS (the machine's matmul ceiling, an implementation independent of Peer): absent: libopenblas not found"));
            }
            foreach (var op in new[] { "axpy", "add row-broadcast", "Ops.Add new output", "softmax", "layer norm", "causal attention" })
                Assert.That(kernels, Has.Some.StartsWith(op), op);
            foreach (var n in new[] { "16^2", "32^2" })
            {
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | step | ms"));
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | training | tokens/s"));
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | peak memory | bytes"));
                Assert.That(Figures("ablation"), Does.Contain($"N = {n} | speed-up (naive / fused) | x"));
                Assert.That(Figures("ablation"), Does.Contain($"N = {n} | fused peak memory | bytes"));
                Assert.That(Figures("ablation"), Does.Contain($"N = {n} | max |y fused - y naive| | abs"));
            }
            Assert.That(Figures("ablation"), Does.Contain("naive vs fused check (N = 64, d = 16) | max |d experts.down diff| | abs"));
            foreach (var kind in new[] { "ffw", "moe-ec", "moe-topk", "pkm", "peer" })
                Assert.That(Figures("layers"), Has.Some.StartsWith(kind + " (").And.Some.EndsWith("| forward + backward | tokens/s"), kind);
            Assert.That(Figures("training"), Does.Contain("tiny preset | training step | tokens/s"));
            // The vision suite measures both presets; with a Python that imports torch (VisionSuiteTests runs it without one), PyTorch's
            // steps of both models at 1 and 2 threads too, the suite having checked their parameter counts against Peer's.
            var visionNotes = byName["vision"].GetProperty("notes").EnumerateArray().Select(n => n.GetString()!).ToArray();
            bool torchHere = !visionNotes.Any(n => n.StartsWith("PyTorch absent: "));
            Assert.That(visionNotes.Where(n => n.StartsWith("WARNING")), Is.Empty, string.Join("\n", visionNotes));
            foreach (var preset in new[] { "peer", "dense" })
            {
                Assert.That(Figures("vision"), Does.Contain($"{preset} preset | training step | images/s"));
                if (!torchHere) continue;
                Assert.That(Figures("vision"), Does.Contain($"{preset} preset | Peer / PyTorch at its best thread count | x"));
                foreach (var threads in new[] { 1, 2 })
                    Assert.That(Figures("vision"), Does.Contain($"{preset} preset, PyTorch {threads} thread(s) | training step | images/s"));
            }
            Assert.That(byName["peer"].GetProperty("goals").GetArrayLength(), Is.EqualTo(1));
            Assert.That(byName["ablation"].GetProperty("goals").GetArrayLength(), Is.EqualTo(4));
            foreach (var plot in suites.SelectMany(s => s.Suite.GetProperty("plots").EnumerateArray()))
                Assert.That(new FileInfo(Path.Combine(outDir, plot.GetString()!)).Length, Is.GreaterThan(1000), plot.GetString());
            foreach (var name in Smoked) Assert.That(md, Does.Contain($"## {name}: "));
            Assert.That(md, Does.Contain("cuda: absent"));
            AssertTablesWellFormed(md);
        }
        finally { dir.Delete(recursive: true); }
    }

    /// <summary>Each markdown table: a header, a separator with one alignment per column, and rows of as many cells.</summary>
    static void AssertTablesWellFormed(string md)
    {
        int tables = 0;
        var lines = md.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith('|') || (i > 0 && lines[i - 1].StartsWith('|'))) continue;
            tables++;
            int columns = Cells(lines[i]);
            Assert.That(lines[i + 1], Does.Match(@"^\|(---:?\|)+$"), lines[i]);
            Assert.That(Cells(lines[i + 1]), Is.EqualTo(columns), lines[i]);
            for (int j = i + 2; j < lines.Length && lines[j].StartsWith('|'); j++)
                Assert.That(Cells(lines[j]), Is.EqualTo(columns), lines[j]);
        }
        Assert.That(tables, Is.GreaterThanOrEqualTo(Smoked.Length));
    }

    static int Cells(string row) => Regex.Matches(row, @"(?<!\\)\|").Count - 1;

    /// <summary>
    /// Whether this machine has OpenBLAS where Debian puts it (libopenblas0-pthread's file, or the libopenblas.so.0 its
    /// alternatives link to). Looked up as files, never loaded here: unloading OpenBLAS from the test host while its
    /// worker threads live would crash the host later.
    /// </summary>
    static bool OpenBlasHere() =>
        new[] { "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib" }.Any(d =>
            File.Exists(Path.Combine(d, "openblas-pthread", "libopenblas.so.0")) || File.Exists(Path.Combine(d, "libopenblas.so.0")));
}
