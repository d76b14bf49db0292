using System.Text.Json;
using MathNet.Numerics.LinearAlgebra;
using Peer.Bench;
using Peer.Nn;

namespace Peer.Tests.Bench;

/// <summary>The bench's plain-C# references must compute the right thing, or its ratios mean nothing.</summary>
public sealed class BenchTests
{
    [TestCase(1, 1, 1)]
    [TestCase(17, 33, 9)]
    [TestCase(70, 600, 300)]
    public void PlainMatMulReferencesMatchMathNet(int m, int n, int k)
    {
        var a = GradCheck.Rand(m * k, 1);
        var b = GradCheck.Rand(k * n, 2);
        var want = Matrix<double>.Build.Dense(m, k, (i, j) => a[i * k + j]) * Matrix<double>.Build.Dense(k, n, (i, j) => b[i * n + j]);
        var simple = new float[m * n];
        var best = Enumerable.Repeat(float.NaN, m * n).ToArray();
        PlainMatMul.Simple(a, b, simple, m, n, k);
        PlainMatMul.Best(a, b, best, m, n, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                Assert.That(simple[i * n + j], Is.EqualTo(want[i, j]).Within(1e-4), $"simple [{i}, {j}]");
                Assert.That(best[i * n + j], Is.EqualTo(want[i, j]).Within(1e-4), $"best [{i}, {j}]");
            }
    }

    [Test]
    public void PlainElementwiseReferencesMatchHost()
    {
        var x = GradCheck.Rand(1003, 3);
        var y = GradCheck.Rand(1003, 4);
        var want = y.Select((v, i) => v + 0.5 * x[i]).ToArray();
        var sum = PlainElementwise.AddNew(x, y);
        for (int i = 0; i < y.Length; i++) Assert.That(sum[i], Is.EqualTo(x[i] + y[i]));
        var bias = GradCheck.Rand(17, 5);
        var rowSum = new float[59 * 17];
        PlainElementwise.AddRow(x.Take(59 * 17).ToArray(), bias, rowSum, 59, 17);
        for (int i = 0; i < rowSum.Length; i++) Assert.That(rowSum[i], Is.EqualTo(x[i] + bias[i % 17]));
        PlainElementwise.Axpy(y, x, 0.5f);
        for (int i = 0; i < y.Length; i++) Assert.That(y[i], Is.EqualTo(want[i]).Within(1e-6));
    }

    static readonly string[] SuiteNames = Peer.Bench.Bench.All().Select(s => s.Name).ToArray();

    [Test]
    public void OptionsParseSuitesDevicesAndRefuseUnknown()
    {
        var o = BenchOptions.Parse(["peer", "--devices", "all", "--quick", "--out", "dir", "kernels", "peer"], SuiteNames);
        Assert.That(o.Suites, Is.EqualTo(new[] { "peer", "kernels" }));
        Assert.That(o.Devices, Is.EqualTo(new[] { "cpu", "opencl", "cuda" }));
        Assert.That(o.Quick && o.Output == "dir" && !o.Smoke);
        var d = BenchOptions.Parse([], SuiteNames);
        Assert.That(d.Suites, Is.Empty, "no suite named: all of them");
        Assert.That(d.Devices, Is.EqualTo(new[] { "cpu" }));
        Assert.That(d.Output, Is.EqualTo("bench-results"));
        Assert.That(BenchOptions.Parse(["--devices", "cuda, cpu"], SuiteNames).Devices, Is.EqualTo(new[] { "cuda", "cpu" }));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--devices", "tpu"], SuiteNames))!.Message, Does.Contain("unknown device 'tpu'"));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["speed"], SuiteNames))!.Message, Does.Contain("unknown suite 'speed'"));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--out"], SuiteNames))!.Message, Does.Contain("--out needs a value"));
        Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--fast"], SuiteNames));
        Assert.That(BenchOptions.Parse(["--repeats", "11"], SuiteNames).Repeats, Is.EqualTo(11));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--repeats", "0"], SuiteNames))!.Message, Does.Contain("--repeats = '0'"));
        Assert.That(d.SparseOptimizer, Is.EqualTo("adamw"));
        Assert.That(BenchOptions.Parse(["--sparse-optimizer", "rowwise-adagrad"], SuiteNames).SparseOptimizer, Is.EqualTo("rowwise-adagrad"));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--sparse-optimizer", "adagrad"], SuiteNames))!.Message,
            Does.Contain("--sparse-optimizer = 'adagrad'").And.Contain("rowwise-adamw"));
    }

    [Test]
    public void TableAlignsColumnsAndWritesMarkdown()
    {
        var t = new Table("name", "value");
        t.Add("matmul", 12.345);
        t.Add("x", 1234.5);
        var w = new StringWriter();
        t.Print(w);
        var lines = w.ToString().Split('\n');
        Assert.That(lines[2], Is.EqualTo("matmul   12.3"));
        Assert.That(lines[3], Is.EqualTo("x        1234"));
        Assert.That(t.ToMarkdown().Split('\n')[..4], Is.EqualTo(new[] { "| name | value |", "|---|---:|", "| matmul | 12.3 |", "| x | 1234 |" }));
    }

    [Test]
    public void StatIsMedianAndRange()
    {
        var s = Stat.Of([3.0, 1.0, 2.0, 10.0]);
        Assert.That((s.Median, s.Min, s.Max), Is.EqualTo((2.5, 1.0, 10.0)));
        var r = s.Per(10);
        Assert.That((r.Median, r.Low, r.High), Is.EqualTo((4.0, 1.0, 10.0)), "the slowest run gives the low rate");
    }

    /// <summary>
    /// The ablation's naive design (gathered rows, dense gradients) must compute the same layer as PeerLayer's fused kernels,
    /// or its speed-up compares different things: outputs agree, and the dense gradient of experts.down equals the fused
    /// row-sparse gradient scattered into the table.
    /// </summary>
    [Test]
    public void NaivePeerComputesTheFusedLayer()
    {
        var device = Devices.Cpu;
        using var scope = Scope.Begin();
        using var fused = new PeerLayer(device, 16, new PeerOptions { Experts = 64, Heads = 2, TopK = 3, QueryDim = 8, Seed = 3 });
        using var naive = new PeerLayer(device, 16, new PeerOptions { Experts = 64, Heads = 2, TopK = 3, QueryDim = 8, Seed = 3 });
        var x = Peer.Ops.Normal(device, 9, 0f, 1f, 10, 16);
        // One design's graph at a time: a backward consumes the whole tape, frees its intermediates and takes the output gradient.
        var yf = fused.Forward(x);
        var a = yf.ToArray();
        device.Tape.Backward(yf, Peer.Ops.Normal(device, 10, 0f, 1f, 10, 16));
        var yn = NaivePeer.Forward(naive, x);
        var b = yn.ToArray();
        device.Tape.Backward(yn, Peer.Ops.Normal(device, 10, 0f, 1f, 10, 16));
        for (int i = 0; i < a.Length; i++) Assert.That(b[i], Is.EqualTo(a[i]).Within(1e-5), $"y[{i}]");
        var downF = fused.NamedParameters().Single(p => p.Name == "experts.down").Tensor;
        var downN = naive.NamedParameters().Single(p => p.Name == "experts.down").Tensor;
        Assert.That(downN.Grad, Is.Not.Null, "the naive design's gradient is dense");
        Assert.That(downF.SparseGrad, Is.Not.Null, "the fused design's gradient is row-sparse");
        var dense = Peer.RowSparseGradients.ToDense(downF.SparseGrad!, 64).ToArray();
        var got = downN.Grad!.ToArray();
        for (int i = 0; i < got.Length; i++) Assert.That(got[i], Is.EqualTo(dense[i]).Within(1e-5), $"dDown[{i}]");
        fused.ZeroGrad();
        naive.ZeroGrad();
    }

    /// <summary>Every suite end to end in-process at the smoke sizes: results.json holds each suite's figures, all positive and finite; results.md and the plots exist.</summary>
    [Test]
    public void EverySuiteRunsAndWritesFiniteFigures()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"peer-bench-test-{Environment.ProcessId}");
        try
        {
            var options = new BenchOptions { Quick = true, Smoke = true, Output = dir, Devices = ["cpu", "cuda"] };
            var log = new StringWriter();
            Peer.Bench.Bench.Run(options, ["--quick"], log);
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json")));
            var root = doc.RootElement;
            var machine = root.GetProperty("machine");
            Assert.That(machine.GetProperty("cores").GetInt32(), Is.GreaterThan(0));
            Assert.That(machine.GetProperty("ilgpu").GetString(), Does.StartWith("1.5"));
            var devices = root.GetProperty("devices").EnumerateArray().ToArray();
            Assert.That(devices[0].GetProperty("requested").GetString(), Is.EqualTo("cpu"));
            Assert.That(devices[1].GetProperty("requested").GetString(), Is.EqualTo("cuda"));
            if (!devices[1].TryGetProperty("absent", out _)) Assert.Ignore("a CUDA device is present: this test expects a machine without one");
            var suites = root.GetProperty("suites").EnumerateArray().ToDictionary(s => s.GetProperty("name").GetString()!);
            Assert.That(suites.Keys, Is.EqualTo(SuiteNames));
            string[] Figures(string suite) => suites[suite].GetProperty("measurements").EnumerateArray()
                .Select(m => $"{m.GetProperty("name").GetString()} | {m.GetProperty("variant").GetString()} | {m.GetProperty("unit").GetString()}").ToArray();
            foreach (var (name, s) in suites)
                foreach (var m in s.GetProperty("measurements").EnumerateArray())
                {
                    string what = $"{name}: {m}";
                    Assert.That(m.GetProperty("device").GetString(), Is.EqualTo("cpu"), what);
                    double v = m.GetProperty("value").GetDouble();
                    Assert.That(double.IsFinite(v), what);
                    if (m.GetProperty("unit").GetString() == "abs") Assert.That(v, Is.GreaterThanOrEqualTo(0).And.LessThan(1e-3), what);
                    else Assert.That(v, Is.GreaterThan(0), what);
                    if (m.TryGetProperty("low", out var low)) Assert.That(low.GetDouble(), Is.GreaterThan(0).And.LessThanOrEqualTo(v), what);
                    if (m.TryGetProperty("high", out var high)) Assert.That(high.GetDouble(), Is.GreaterThanOrEqualTo(v).And.Not.EqualTo(double.PositiveInfinity), what);
                }
            Assert.That(Figures("ceilings"), Does.Contain("best matmul | 128^3 | GFLOP/s"));
            Assert.That(Figures("kernels"), Has.Some.StartsWith("matmul 128^3 | cpu 256-bit | GFLOP/s").Or.Some.StartsWith("matmul 128^3 | cpu 512-bit | GFLOP/s")
                .Or.Some.StartsWith("matmul 128^3 | portable | GFLOP/s"));
            foreach (var op in new[] { "axpy", "add row-broadcast", "Ops.Add new output", "softmax", "layer norm", "causal attention" })
                Assert.That(Figures("kernels"), Has.Some.StartsWith(op), op);
            foreach (var n in new[] { "16^2", "32^2" })
            {
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | step | ms"));
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | training | tokens/s"));
                Assert.That(Figures("peer"), Does.Contain($"N = {n} | peak memory | bytes"));
                Assert.That(Figures("ablation"), Does.Contain($"N = {n} | speed-up (naive / fused) | x"));
                Assert.That(Figures("ablation"), Does.Contain($"N = {n} | fused peak memory | bytes"));
            }
            foreach (var kind in new[] { "ffw", "moe-ec", "moe-topk", "pkm", "peer" })
                Assert.That(Figures("layers"), Has.Some.StartsWith(kind + " (").And.Some.EndsWith("| forward + backward | tokens/s"), kind);
            Assert.That(Figures("training"), Does.Contain("tiny preset | training step | tokens/s"));
            Assert.That(suites["peer"].GetProperty("goals").GetArrayLength(), Is.EqualTo(1));
            Assert.That(suites["ablation"].GetProperty("goals").GetArrayLength(), Is.EqualTo(4));
            foreach (var plot in suites.Values.SelectMany(s => s.GetProperty("plots").EnumerateArray()))
                Assert.That(new FileInfo(Path.Combine(dir, plot.GetString()!)).Length, Is.GreaterThan(1000), plot.GetString());
            var md = File.ReadAllText(Path.Combine(dir, "results.md"));
            foreach (var name in SuiteNames) Assert.That(md, Does.Contain($"## {name}: "));
            Assert.That(md, Does.Contain("cuda: absent"));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
