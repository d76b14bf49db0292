using System.Runtime.Intrinsics;

namespace Peer.Tests.Runtime;

/// <summary>How a device chooses between an op's portable kernel and its CPU body (Device.Choose), and the two options that
/// steer it.</summary>
public sealed class DeviceTests
{
    static readonly Action Portable = () => { }, CpuBody = () => { };

    static int HardwareBits =>
        Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Vector128.IsHardwareAccelerated ? 128 : 0;

    [Test]
    public void TheCpuAcceleratorLoadsTheCpuBodiesItsVectorsAllow()
    {
        var d = Devices.Cpu;
        Assert.That(d.CpuBodyBits, Is.EqualTo(HardwareBits));
        Assert.That(d.Choose(Portable, CpuBody, 0), Is.SameAs(CpuBody), "a body that needs no vector unit");
        Assert.That(d.Choose(Portable, CpuBody, HardwareBits), Is.SameAs(CpuBody), "a body as wide as the CPU");
        Assert.That(d.Choose(Portable, CpuBody, HardwareBits + 1), Is.SameAs(Portable), "a body wider than the CPU");
    }

    [Test]
    public void PortableKernelsLoadsNoCpuBody()
    {
        var d = Devices.CpuPortable;
        Assert.That(d.CpuBodyBits, Is.EqualTo(-1));
        Assert.That(d.Choose(Portable, CpuBody, 0), Is.SameAs(Portable));
    }

    [Test]
    public void MaxCpuVectorBitsCapsTheBodies()
    {
        var d = Devices.CpuNarrow;
        Assert.That(d.CpuBodyBits, Is.EqualTo(Math.Min(HardwareBits, 256)));
        Assert.That(d.Choose(Portable, CpuBody, 512), Is.SameAs(Portable), "no 512-bit body under a 256-bit cap");
        Assert.That(d.Choose(Portable, CpuBody, 0), Is.SameAs(CpuBody));
    }

    [Test]
    public void OtherBackendsLoadNoCpuBody()
    {
        Devices.RequireOpenCl();
        var d = Devices.Get("opencl");
        Assert.That(d.CpuBodyBits, Is.EqualTo(-1));
        Assert.That(d.Choose(Portable, CpuBody, 0), Is.SameAs(Portable));
    }

    [TestCase(128)]
    [TestCase(-256)]
    [TestCase(1024)]
    public void AnUnsupportedVectorCapIsRefused(int bits)
    {
        var e = Assert.Throws<ArgumentException>(() => Device.Open("cpu", new DeviceOptions { MaxCpuVectorBits = bits }));
        Assert.That(e!.Message, Does.Contain($"MaxCpuVectorBits = {bits}").And.Contain("256 or 512"));
    }

    // Ids are checked on the host where launches wait anyway (the CPU accelerator), elsewhere only with CheckIndices: then a bad
    // expert id is reported on OpenCL too, instead of giving NaN.
    [Test]
    public void CheckIndicesTurnsTheHostChecksOnWhereLaunchesDoNotWait()
    {
        Assert.That(Devices.Cpu.ChecksIndices, Is.True);
        Devices.RequireOpenCl();
        Assert.That(Devices.Get("opencl").ChecksIndices, Is.False);
        using var d = Device.Open("opencl", new DeviceOptions { CheckIndices = true });
        Assert.That(d.ChecksIndices, Is.True);
        using var s = Scope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Peer.Ops.PeerExperts(Tensor.Zeros(d, 2, 4), Tensor.FromArray(d, new[] { 0, 1, 5, 2 }, 2, 1, 2),
            Tensor.Zeros(d, 2, 1, 2), Tensor.Zeros(d, 5, 4), Tensor.Zeros(d, 5, 4)));
        Assert.That(e!.Message, Does.Contain("1 ids outside [0, 5)"));
    }
}
