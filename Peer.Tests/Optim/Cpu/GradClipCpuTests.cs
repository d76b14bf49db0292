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

    // Gradients side by side in one buffer share one launch of the run kernel; each is still split between the workers by its
    // length alone, so the norm has the bits of one launch per gradient: for the portable kernels and for the CPU bodies.
    [Test]
    public void OneLaunchOverSideBySideGradientsGivesTheBitsOfOneLaunchEach([Values] bool portable)
    {
        var d = portable ? Devices.CpuPortable : Devices.Cpu;
        int[] sizes = [1, 15, 3001, 64, 7, 4097, 2];
        var values = sizes.Select((n, i) => GradCheck.Rand(n, 800 + i).Select(v => v * MathF.Pow(10f, i % 5 - 2)).ToArray()).ToArray();
        using var s = Scope.Begin();
        var apart = sizes.Select((n, i) => { var p = Tensor.Zeros(d, n); p.Grad = Tensor.FromArray(d, values[i], n); return p; }).ToArray();
        var together = Peer.Tests.Optim.GradClipTests.SideBySide(d, values);
        float a = GradClip.GlobalNorm(apart), b = GradClip.GlobalNorm(together);
        Assert.That(BitConverter.SingleToInt32Bits(b), Is.EqualTo(BitConverter.SingleToInt32Bits(a)), $"{a:R} apart, {b:R} side by side");
        double host = Math.Sqrt(values.Sum(v => v.Sum(x => (double)x * x)));
        Assert.That(b, Is.EqualTo(host).Within(1e-6 * host));
    }
}
