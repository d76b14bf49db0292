using Peer.Optim;

namespace Peer.Tests.Optim;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class GradClipTests(string backend)
{
    Device D => Devices.Get(backend);

    // Dense grads of several sizes (one larger than a worker chunk many times over) and a sparse grad.
    (Tensor[] Ps, float[][] Gs) Setup()
    {
        int[] sizes = [7, 100_003, 1];
        var ps = new List<Tensor>();
        var gs = new List<float[]>();
        for (int k = 0; k < sizes.Length; k++)
        {
            var p = Tensor.Zeros(D, sizes[k]);
            var g = GradCheck.Rand(sizes[k], 900 + k);
            p.Grad = Tensor.FromArray(D, g, sizes[k]);
            ps.Add(p);
            gs.Add(g);
        }
        var table = Tensor.Zeros(D, 50, 4);
        var values = GradCheck.Rand(12, 950);
        table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, new[] { 3, 10, 49 }, 3), Tensor.FromArray(D, values, 3, 4));
        ps.Add(table);
        gs.Add(values);
        ps.Add(Tensor.Zeros(D, 5)); // no gradient: skipped
        return (ps.ToArray(), gs.ToArray());
    }

    static double HostNorm(float[][] gs) => Math.Sqrt(gs.Sum(g => g.Sum(x => (double)x * x)));

    static float[] GradOf(Tensor p) => (p.Grad ?? p.SparseGrad!.Values).ToArray();

    [Test]
    public void NormMatchesHostAndClipsByPyTorchFactor()
    {
        using var s = Scope.Begin();
        var (ps, gs) = Setup();
        double norm = HostNorm(gs);
        float maxNorm = (float)(norm / 3);
        float got = GradClip.ClipGlobalNorm(ps, maxNorm);
        Assert.That(got, Is.EqualTo(norm).Within(norm * 1e-6));
        double factor = maxNorm / (norm + 1e-6);
        for (int k = 0; k < gs.Length; k++)
        {
            var after = GradOf(ps[k]);
            for (int i = 0; i < after.Length; i++)
                Assert.That(after[i], Is.EqualTo(gs[k][i] * factor).Within(1e-6 * Math.Abs(gs[k][i]) + 1e-9), $"grad {k}[{i}]");
        }
        double clipped = Math.Sqrt(ps.Where(p => p.Grad != null || p.SparseGrad != null).Sum(p => GradOf(p).Sum(x => (double)x * x)));
        Assert.That(clipped, Is.EqualTo(maxNorm).Within(maxNorm * 1e-5));
    }

    [Test]
    public void BelowTheLimitNothingChangesAndTheNormIsDeterministic()
    {
        using var s = Scope.Begin();
        var (ps, gs) = Setup();
        float first = GradClip.ClipGlobalNorm(ps, 1e6f);
        float second = GradClip.ClipGlobalNorm(ps.Select(p => (p.Name ?? "", p)), 1e6f);
        Assert.That(BitConverter.SingleToInt32Bits(second), Is.EqualTo(BitConverter.SingleToInt32Bits(first)));
        for (int k = 0; k < gs.Length; k++) Assert.That(GradOf(ps[k]), Is.EqualTo(gs[k]));
    }

    [Test]
    public void NoGradientsGiveZeroAndBadLimitIsRefused()
    {
        using var s = Scope.Begin();
        Assert.That(GradClip.ClipGlobalNorm([Tensor.Zeros(D, 3)], 1f), Is.Zero);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => GradClip.ClipGlobalNorm([Tensor.Zeros(D, 3)], 0f))!;
        Assert.That(e.Message, Does.Contain("maxNorm = 0"));
    }
}

public sealed class ScheduleTests
{
    [Test]
    public void ConstantIsConstant()
    {
        var c = new ConstantSchedule(3e-4f);
        Assert.That(new[] { 0L, 1, 1000, long.MaxValue }.Select(c.LearningRateAt), Is.All.EqualTo(3e-4f));
    }

    [Test]
    public void WarmupCosineFollowsTheFormula()
    {
        const double baseLr = 1e-3, minLr = 1e-5;
        var sch = new WarmupCosineSchedule((float)baseLr, 10, 110, (float)minLr);
        Assert.That(sch.LearningRateAt(0), Is.EqualTo(baseLr / 10).Within(1e-9));
        Assert.That(sch.LearningRateAt(4), Is.EqualTo(baseLr * 5 / 10).Within(1e-9));
        Assert.That(sch.LearningRateAt(9), Is.EqualTo(baseLr).Within(1e-9));
        Assert.That(sch.LearningRateAt(10), Is.EqualTo(baseLr).Within(1e-9), "decay starts at the peak");
        Assert.That(sch.LearningRateAt(60), Is.EqualTo((baseLr + minLr) / 2).Within(1e-9), "half way down at mid-decay");
        Assert.That(sch.LearningRateAt(35), Is.EqualTo(minLr + (baseLr - minLr) * (1 + Math.Cos(Math.PI / 4)) / 2).Within(1e-9));
        Assert.That(sch.LearningRateAt(110), Is.EqualTo((float)minLr));
        Assert.That(sch.LearningRateAt(5000), Is.EqualTo((float)minLr));
        for (long t = 10; t < 110; t++) Assert.That(sch.LearningRateAt(t + 1), Is.LessThanOrEqualTo(sch.LearningRateAt(t)));
        var noWarmup = new WarmupCosineSchedule(1f, 0, 4);
        Assert.That(noWarmup.LearningRateAt(0), Is.EqualTo(1f));
        Assert.That(noWarmup.LearningRateAt(2), Is.EqualTo(0.5f).Within(1e-7));
    }

    [Test]
    public void BadArgumentsAreRefused()
    {
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupCosineSchedule(1e-3f, 10, 5))!.Message, Does.Contain("totalSteps = 5"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupCosineSchedule(1e-3f, 0, 5, 1f))!.Message, Does.Contain("minLr = 1"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new ConstantSchedule(float.NaN))!.Message, Does.Contain("learningRate = NaN"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new ConstantSchedule(1f).LearningRateAt(-1))!.Message, Does.Contain("step = -1"));
    }
}
