// The CPU accelerator at one thread (DeviceOptions.CpuThreads = 1: a warp of 2 whose second thread gets no index, one
// worker taking every chunk) trains the same model as at one thread per processor. The bench's torch suite times
// Peer at both thread counts and compares the better one with PyTorch, so the 1-thread device must compute the same
// step: the same weights (the counter-based generator does not depend on the split), the same batches, the same losses
// up to the order of float32 sums whose split follows the worker count (the loss's mean over tokens, the gradient norm).
// Measured (2026-11-30, 2 processors): at 1 thread the six step losses were bit-identical to 2 threads' and the
// validation loss differed by 3.2e-5 (7e-6 relative); at 3 threads step 4 differed by 1e-6 (2 ulp) and validation by 5e-6.
using Peer.Training;

namespace Peer.Tests.Training;

public sealed class ThreadCountParityTests
{
    [TestCase(1)]
    [TestCase(3)]
    public void ShortTrainingRunMatchesTheDefaultThreadCount(int threads)
    {
        using var other = Device.Open("cpu", new DeviceOptions { CpuThreads = threads });
        Assert.That(other.Workers, Is.EqualTo(threads));
        var baseline = TrainingFixtures.ShortRunLosses(Devices.Cpu);
        var theirs = TrainingFixtures.ShortRunLosses(other);
        TestContext.Out.WriteLine($"{Devices.Cpu.Workers} thr: {string.Join(" ", baseline.Select(v => v.ToString("R")))}");
        TestContext.Out.WriteLine($"{threads} thr: {string.Join(" ", theirs.Select(v => v.ToString("R")))}");
        // A float32 sum of n terms in another order differs by at most about n * eps relative: n is the tokens of one batch for a step's
        // loss and those of the validation windows for the last figure. An op that computed something else (a chunk skipped or counted
        // twice by one worker) moves the loss by far more.
        var c = TrainingFixtures.Micro(6);
        double eps = Math.Pow(2, -23), step = c.Train.BatchSize * c.Model.Context * eps, validation = c.Train.EvalWindows * c.Model.Context * eps;
        for (int i = 0; i < baseline.Length; i++)
            Assert.That(theirs[i], Is.EqualTo(baseline[i]).Within(100 * (i < baseline.Length - 1 ? step : validation)).Percent,
                i < baseline.Length - 1 ? $"step {i + 1}" : "validation loss");
        Assert.That(baseline[^2], Is.LessThan(baseline[0]), "the run trains at all");
    }
}
