using MathNet.Numerics.LinearAlgebra;
using Peer.Bench;

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

    [Test]
    public void OptionsParseDevicesAndRefuseUnknown()
    {
        var o = BenchOptions.Parse(["--devices", "all", "--quick", "--out", "r.json"]);
        Assert.That(o.Devices, Is.EqualTo(new[] { "cpu", "opencl", "cuda" }));
        Assert.That(o.Quick && o.Output == "r.json");
        Assert.That(BenchOptions.Parse(["--devices", "cuda, cpu"]).Devices, Is.EqualTo(new[] { "cuda", "cpu" }));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--devices", "tpu"]))!.Message, Does.Contain("unknown device 'tpu'"));
        Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--fast"]));
        Assert.That(BenchOptions.Parse(["--repeats", "11"]).Repeats, Is.EqualTo(11));
        Assert.That(Assert.Throws<ArgumentException>(() => BenchOptions.Parse(["--repeats", "0"]))!.Message, Does.Contain("--repeats = '0'"));
    }

    [Test]
    public void TableAlignsColumns()
    {
        var t = new Table("name", "value");
        t.Add("matmul", 12.345);
        t.Add("x", 1234.5);
        var w = new StringWriter();
        t.Print(w);
        var lines = w.ToString().Split('\n');
        Assert.That(lines[2], Is.EqualTo("matmul   12.3"));
        Assert.That(lines[3], Is.EqualTo("x        1234"));
    }
}
