using Peer.Optim;

namespace Peer.Tests.Optim.Cpu;

/// <summary>The CPU accelerator's clipping bodies (GradClipCpu, loaded on <see cref="Devices.Cpu"/>) against the portable
/// kernels (loaded on <see cref="Devices.CpuPortable"/>).</summary>
public sealed class GradClipCpuTests
{
    static (float Norm, float[][] Grads) Run(bool portable, int[] sizes, float maxNorm)
    {
        var d = portable ? Devices.CpuPortable : Devices.Cpu;
        using var s = Scope.Begin();
        var ps = sizes.Select((n, k) =>
        {
            var p = Tensor.Zeros(d, n);
            p.Grad = Tensor.FromArray(d, GradCheck.Rand(n, 700 + k), n);
            return p;
        }).ToArray();
        float norm = GradClip.ClipGlobalNorm(ps, maxNorm);
        return (norm, ps.Select(p => p.Grad!.ToArray()).ToArray());
    }

    [Test]
    public void CpuBodyAgreesWithPortable()
    {
        int[] sizes = [1, 15, 100_003, 64];
        var portable = Run(true, sizes, 1e9f);
        var cpu = Run(false, sizes, 1e9f);
        Assert.That(cpu.Norm, Is.EqualTo(portable.Norm).Within(portable.Norm * 1e-6), "different summation order, same sum to rounding");
        Assert.That(cpu.Grads, Is.EqualTo(portable.Grads), "below the limit nothing is scaled");

        float limit = portable.Norm / 4;
        var clippedPortable = Run(true, sizes, limit);
        var clippedCpu = Run(false, sizes, limit);
        for (int k = 0; k < sizes.Length; k++)
            for (int i = 0; i < sizes[k]; i++)
                Assert.That(clippedCpu.Grads[k][i], Is.EqualTo(clippedPortable.Grads[k][i]).Within(2e-6 * Math.Abs(clippedPortable.Grads[k][i]) + 1e-12));
        var again = Run(false, sizes, limit);
        Assert.That(BitConverter.SingleToInt32Bits(again.Norm), Is.EqualTo(BitConverter.SingleToInt32Bits(clippedCpu.Norm)), "deterministic");
        Assert.That(again.Grads, Is.EqualTo(clippedCpu.Grads));
    }
}
