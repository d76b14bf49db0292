// The profiler (Runtime/Profiler.cs): on a small known graph it counts each kernel launch under its op and phase, the
// rows' shares sum to 1, and nothing is recorded while no profiler is attached or while it is paused. A scan of
// Peer.Core's sources checks that every kernel is loaded through Device.LoadKernel or LoadGroupedKernel, so that no launch escapes the profiler.
using Peer.Optim;

namespace Peer.Tests.Runtime;

public sealed class ProfilerTests
{
    Device device = null!;

    [OneTimeSetUp]
    public void Open() => device = Device.Open("cpu");

    [OneTimeTearDown]
    public void Close() => device.Dispose();

    static Dictionary<(string, ProfilePhase), long> Calls(Profiler p) =>
        p.Rows().Where(r => r.Op != Profiler.HostRow).ToDictionary(r => (r.Op, r.Phase), r => r.Calls);

    // y = a + b (b a broadcast row), z = 2 y, backward from z with a given gradient, one SGD step on a.
    void KnownStep(Profiler? p)
    {
        using var scope = Scope.Begin();
        var a = Tensor.FromArray(device, [1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        a.RequiresGrad = true;
        var b = Tensor.FromArray(device, [1f, 1f, 1f], 3);
        var y = Peer.Ops.Add(a, b);
        var z = Peer.Ops.Scale(y, 2f);
        device.Tape.Backward(z, Tensor.Full(device, 1f, 2, 3));
        using var sgd = new Sgd([("a", a)], lr: 0.1f);
        sgd.Step();
        p?.MarkStep();
        Assert.That(a.ToArray()[0], Is.EqualTo(1f - 0.1f * 2f).Within(1e-6f), "the step itself");
    }

    [Test]
    public void ASmallGraphCountsEachLaunchUnderItsOpAndPhase()
    {
        KnownStep(null); // loads the kernels first
        using var p = device.Profile();
        KnownStep(p);
        var calls = Calls(p);
        var expected = new Dictionary<(string, ProfilePhase), long>
        {
            [("Elementwise.Binary<Add>", ProfilePhase.Forward)] = 1,
            [("Elementwise.Affine", ProfilePhase.Forward)] = 1,  // z = 2 y
            [("Elementwise.Fill", ProfilePhase.Forward)] = 1,    // the gradient given to Backward
            [("Elementwise.Affine", ProfilePhase.Backward)] = 2, // dy = 2 dz, da = 1 dy
            [("Sgd.Sgd", ProfilePhase.Optimizer)] = 1,
            [("Tensor.FromHost", ProfilePhase.Forward)] = 2,     // a, b
            [("Tensor.ToHost", ProfilePhase.Forward)] = 1,       // the check of the step
            [("Tensor.Zero", ProfilePhase.Optimizer)] = 0,
        };
        foreach (var ((op, phase), n) in expected.Where(e => e.Value > 0))
            Assert.That(calls.GetValueOrDefault((op, phase)), Is.EqualTo(n), $"{op} in {phase}");
        // Buffers: new or taken from the pool, where the warm-up step left them.
        long Buffers(ProfilePhase phase) => calls.GetValueOrDefault(("Tensor.Allocate", phase)) + calls.GetValueOrDefault(("Tensor.Reuse", phase));
        Assert.That(Buffers(ProfilePhase.Forward), Is.EqualTo(5), "a, b, y, z, the given gradient");
        Assert.That(Buffers(ProfilePhase.Backward), Is.EqualTo(2), "the two gradients");
        var kernels = p.Rows().Where(r => r.IsKernel).ToList();
        Assert.That(kernels.Select(r => (r.Op, r.Phase)), Is.EquivalentTo(expected.Keys.Where(k => !k.Item1.StartsWith("Tensor."))),
            "no other kernel ran");
        Assert.That(kernels.Sum(r => r.Calls), Is.EqualTo(6), "launches in all");
        Assert.That(p.Steps, Is.EqualTo(1));
    }

    [Test]
    public void SharesSumToOneAndRowsComeSlowestFirst()
    {
        KnownStep(null);
        using var p = device.Profile();
        for (int i = 0; i < 3; i++) KnownStep(p);
        p.Pause(); // the clock stops, so the rows and the elapsed time below are read at the same instant
        var rows = p.Rows();
        Assert.That(rows.Sum(r => r.Share), Is.EqualTo(1.0).Within(1e-9));
        Assert.That(rows.All(r => r.Share >= 0 && r.Share <= 1), Is.True);
        Assert.That(rows.Select(r => r.Time), Is.Ordered.Descending);
        Assert.That(rows.Sum(r => r.Time.Ticks), Is.EqualTo(p.Elapsed.Ticks).Within(rows.Count + 1), "the rows make up the wall time");
        Assert.That(rows.Where(r => r.Op == Profiler.HostRow).Select(r => r.Phase), Is.SubsetOf(Enum.GetValues<ProfilePhase>()));
        string report = p.Report();
        Assert.That(report, Does.Contain("over 3 steps").And.Contain("Elementwise.Binary<Add>").And.Contain("backward").And.Contain("optimizer"));
    }

    [Test]
    public void NothingIsRecordedWithoutAnAttachedProfiler()
    {
        KnownStep(null);
        Assert.That(device.Profiler, Is.Null);
        var p = device.Profile();
        Assert.That(device.Profiler, Is.SameAs(p));
        p.Pause();
        Assert.That(device.Profiler, Is.Null, "paused: launches see no profiler");
        KnownStep(p);
        Assert.That(p.Rows().Where(r => r.Op != Profiler.HostRow), Is.Empty, "paused");
        Assert.That(p.Steps, Is.Zero, "a step marked while paused does not count");
        p.Resume();
        KnownStep(p);
        var after = Calls(p);
        Assert.That(after[("Elementwise.Binary<Add>", ProfilePhase.Forward)], Is.EqualTo(1));
        p.Dispose();
        Assert.That(device.Profiler, Is.Null);
        KnownStep(null);
        Assert.That(Calls(p), Is.EqualTo(after), "disposed: nothing more is recorded, what was stays readable");
    }

    [Test]
    public void OneProfilerAtATime()
    {
        using var p = device.Profile();
        var e = Assert.Throws<InvalidOperationException>(() => device.Profile());
        Assert.That(e!.Message, Does.Contain("already attached"));
        p.Pause();
        using (device.Profile()) Assert.Throws<InvalidOperationException>(() => p.Resume(), "another took its place");
    }

    [Test]
    public void PhasesNestAndRestore()
    {
        using var p = device.Profile();
        Assert.That(p.Phase, Is.EqualTo(ProfilePhase.Forward));
        using (p.Enter(ProfilePhase.Optimizer))
        {
            using (p.Enter(ProfilePhase.Backward)) Assert.That(p.Phase, Is.EqualTo(ProfilePhase.Backward));
            Assert.That(p.Phase, Is.EqualTo(ProfilePhase.Optimizer));
        }
        Assert.That(p.Phase, Is.EqualTo(ProfilePhase.Forward));
    }

    [Test]
    public void EveryKernelOfPeerCoreIsLoadedThroughTheDevice()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Peer.sln"))) dir = dir.Parent;
        Assert.That(dir, Is.Not.Null);
        var core = Path.Combine(dir!.FullName, "Peer.Core");
        var offenders = Directory.EnumerateFiles(core, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.EndsWith("DeviceKernels.cs"))
            .Where(f => File.ReadAllText(f) is var s && (s.Contains("LoadAutoGroupedStreamKernel") || s.Contains("LoadStreamKernel")
                || s.Contains("LoadAutoGroupedKernel") || s.Contains("LoadImplicitlyGroupedKernel")))
            .Select(f => Path.GetRelativePath(core, f)).ToList();
        Assert.That(offenders, Is.Empty, "load kernels with d.LoadKernel or d.LoadGroupedKernel (Runtime/DeviceKernels.cs) so that the profiler sees them");
    }
}
