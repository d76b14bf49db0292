using Peer.Optim;

namespace Peer.Tests.Ops.Gpu;

/// <summary>The one-group reductions chosen for GPUs instead of a single thread's loop (the clipping norm's final pass, the
/// cross-entropy mean) against double-precision sums, on CPU accelerators with small groups and on OpenCL (PoCL); and the
/// clipping overload that leaves the norm on the device.</summary>
public sealed class GroupedReductionsTests
{
    const double U = 1.0 / (1 << 24);
    static readonly Dictionary<int, Device> small = new();

    static Device Small(int threads)
    {
        lock (small)
        {
            if (!small.TryGetValue(threads, out var d)) small[threads] = d = Device.Open("cpu", new DeviceOptions { CpuThreads = threads, PortableKernels = true });
            return d;
        }
    }

    [OneTimeTearDown]
    public void Close()
    {
        foreach (var d in small.Values) d.Dispose();
        small.Clear();
    }

    static IEnumerable<Device> GroupedDevices()
    {
        yield return Small(4);
        yield return Small(8);
        if (Devices.Backends().Contains("opencl")) yield return Devices.Get("opencl");
    }

    // The final pass over W compensated partials: the norm sqrt(sum (partial - comp)) and the clipping factor, grouped and not.
    [Test]
    public void ClipFinalPassGroupedAgreesWithDoubleSum()
    {
        foreach (var d in GroupedDevices())
            foreach (bool grouped in new[] { true, false })
            {
                var k = new ClipKernels(d, grouped);
                int w = k.Workers;
                var partial = GradCheck.Rand(w, 3 + w).Select(v => v * v * 50f).ToArray();
                var comp = GradCheck.Rand(w, 4 + w).Select(v => v * 1e-6f).ToArray();
                double sum = 0;
                for (int i = 0; i < w; i++) sum += (double)partial[i] - comp[i];
                float maxNorm = (float)Math.Sqrt(sum) / 3;
                using var s = Scope.Begin();
                var scratch = Tensor.FromArray(d, [.. partial, .. comp, 0f, 0f], 2 * w + 2);
                k.RunFinal(scratch.View, w, maxNorm);
                var got = scratch.ToArray();
                // Each of the W terms and partial sums rounds at most once per addition: W u of the (positive) sum, then sqrt halves it.
                Assert.That(got[2 * w], Is.EqualTo(Math.Sqrt(sum)).Within(Math.Sqrt(sum) * (w + 2) * U), $"{d.Name}, grouped {grouped}");
                Assert.That(got[2 * w + 1], Is.EqualTo(maxNorm / (got[2 * w] + 1e-6f)), "the factor below 1");
            }
    }

    [Test]
    public void ClipOnTheDeviceGivesTheNormAndScalingOfTheReturningOne()
    {
        var d = Devices.Cpu;
        int[] sizes = [5, 1000, 33];
        foreach (float maxNorm in new[] { 1e9f, 0.5f })
        {
            using var s = Scope.Begin();
            Tensor[] Params() => sizes.Select((n, i) => { var p = Tensor.Zeros(d, n); p.Grad = Tensor.FromArray(d, GradCheck.Rand(n, 60 + i), n); return p; }).ToArray();
            var (a, b) = (Params(), Params());
            float returned = GradClip.ClipGlobalNorm(a, maxNorm);
            var norm = Tensor.Full(d, -1f, 1);
            GradClip.ClipGlobalNorm(b, maxNorm, norm);
            Assert.That(BitConverter.SingleToInt32Bits(norm.ToArray()[0]), Is.EqualTo(BitConverter.SingleToInt32Bits(returned)));
            for (int i = 0; i < sizes.Length; i++) Assert.That(b[i].Grad!.ToArray(), Is.EqualTo(a[i].Grad!.ToArray()), $"maxNorm {maxNorm}");
        }
        using (Scope.Begin())
        {
            var none = Tensor.Full(d, -1f, 1);
            GradClip.ClipGlobalNorm([Tensor.Zeros(d, 3)], 1f, none);
            Assert.That(none.ToArray(), Is.EqualTo(new[] { 0f }), "no gradients: norm 0");
            Assert.That(Assert.Throws<ArgumentException>(() => GradClip.ClipGlobalNorm([Tensor.Zeros(d, 3)], 1f, Tensor.ZerosInt(d, 1)))!.Message, Does.Contain("norm"));
        }
    }

    // The mean of the row losses whose target is not ignored, and their number, grouped and not.
    [TestCase(1)]
    [TestCase(7)]
    [TestCase(1000)]
    public void CrossEntropyMeanGroupedAgreesWithDoubleSum(int rows)
    {
        const int ignore = -100;
        var loss = GradCheck.Rand(rows, rows).Select(v => v * v * 4f).ToArray();
        var targets = Enumerable.Range(0, rows).Select(r => r % 5 == 3 ? ignore : r % 11).ToArray();
        double sum = 0;
        int n = 0;
        for (int r = 0; r < rows; r++)
            if (targets[r] != ignore) { sum += loss[r]; n++; }
        foreach (var d in GroupedDevices())
            foreach (bool grouped in new[] { true, false })
            {
                using var s = Scope.Begin();
                var (rowLoss, t) = (Tensor.FromArray(d, loss, rows), Tensor.FromArray(d, targets, rows));
                var (mean, count) = (Tensor.Empty(d, DType.F32, 1), Tensor.Empty(d, DType.F32, 1));
                new SoftmaxKernels(d, grouped).CrossEntropyMean(rowLoss.View, t.IntView, mean.View, count.View, rows, ignore);
                Assert.That(count.ToArray()[0], Is.EqualTo(n), $"{d.Name}, grouped {grouped}");
                if (n == 0) Assert.That(float.IsNaN(mean.ToArray()[0]));
                // n additions of positive terms (each rounding at most u of the running sum), one division.
                else Assert.That(mean.ToArray()[0], Is.EqualTo(sum / n).Within(sum / n * (n + 1) * U), $"{d.Name}, grouped {grouped}");
            }
    }
}
