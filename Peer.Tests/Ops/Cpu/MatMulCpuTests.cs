using static Peer.Tests.MatMulCheck;

namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD matmul body at both widths against the portable kernel (the definition) and a double host reference:
/// as each device chooses it (the 512-bit micro-kernel on <see cref="Devices.Cpu"/> where AVX-512 is there, the 256-bit one
/// on <see cref="Devices.CpuNarrow"/>), and the 512-bit one loaded directly on every machine.</summary>
public sealed class MatMulCpuTests
{
    static IEnumerable<TestCaseData> Cases() =>
        from name in new[] { "cpu", "cpu narrow" }
        from size in Sizes.Cast<object[]>()
        select new TestCaseData(name, (int)size[0], (int)size[1], (int)size[2]);

    // The device by case name; the capped one only where it loads another body than the default (an AVX-512 CPU).
    static Device Get(string name)
    {
        Assume.That(name == "cpu" || Devices.Cpu.CpuBodyBits > 256, "no 512-bit vectors here: the capped device runs the default's 256-bit body");
        return name == "cpu" ? Devices.Cpu : Devices.CpuNarrow;
    }

    static void RequireBody(Device d) =>
        Assume.That(d.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernel");

    [Test]
    public void EachDeviceRunsTheWidestBodyItAllows()
    {
        RequireBody(Devices.Cpu);
        Assert.That(Devices.Cpu.Get(static d => new MatMulKernels(d)).Chosen, Is.EqualTo(Devices.Cpu.CpuBodyBits >= 512 ? "cpu 512-bit" : "cpu 256-bit"));
        Assert.That(Devices.CpuNarrow.Get(static d => new MatMulKernels(d)).Chosen, Is.EqualTo("cpu 256-bit"));
    }

    [TestCaseSource(nameof(Cases))]
    public void BodyAgreesWithPortable(string device, int m, int n, int k)
    {
        var d = Get(device);
        RequireBody(d);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(d, Chosen, device, 1, m, n, k, ta, tb);
    }

    [TestCaseSource(typeof(MatMulCheck), nameof(Sizes))]
    public void The512BitBodyAgreesWithPortableOnEveryMachine(int m, int n, int k)
    {
        // Loaded directly: on a CPU without 512-bit vectors no device chooses it, and .NET emulates Vector512 exactly.
        var d = Devices.Cpu;
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                Agree(d, Cpu512, "the 512-bit body", 1, m, n, k, ta, tb);
        Agree(d, Cpu512, "the 512-bit body", 3, 19, 35, 21, true, false, aBatched: false, accumulate: true);
        Agree(d, Cpu512, "the 512-bit body", 2, 5, 6, 0, false, true, bBatched: false);
    }

    [TestCase("cpu")]
    [TestCase("cpu narrow")]
    public void BodyBatchBroadcastAccumulateAndEmptyK(string device)
    {
        var d = Get(device);
        RequireBody(d);
        Agree(d, Chosen, device, 3, 19, 35, 21, false, true);
        Agree(d, Chosen, device, 3, 19, 35, 21, true, false, aBatched: false);
        Agree(d, Chosen, device, 3, 19, 35, 21, false, false, bBatched: false);
        Agree(d, Chosen, device, 2, 40, 70, 300, true, true, accumulate: true);
        Agree(d, Chosen, device, 2, 5, 6, 0, false, false, accumulate: true);
        Agree(d, Chosen, device, 2, 5, 6, 0, false, false);
    }
}
