namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU run-copy bodies of <see cref="Peer.Ops.PatchWindows"/> (loaded on <see cref="Devices.Cpu"/>) against the portable
/// kernels (the definition, loaded on <see cref="Devices.CpuPortable"/>), launched directly: the gather only moves floats and the
/// backward adds in the portable kernel's order, so both must give identical bits. The op itself is checked against host
/// references in PatchWindowsTests.</summary>
public sealed class PatchWindowsCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    // The device's own split, and small chunks that start and end inside images and grid rows.
    static IEnumerable<Work> Splits(int n) => [D.Split(n), new Work(n, 3, 5), new Work(n, 2, 1), new Work(n, 4, 7)];

    // The gather and the backward as device d's launcher loads them: y from x, dx from dy.
    static (float[] Y, float[] Dx) Run(Device d, Work gather, Work backward, float[] hx, float[] hdy, int b, PatchWindowShape s, float fill)
    {
        using var scope = Scope.Begin();
        int tokens = (s.Height / s.Patch) * (s.Width / s.Patch), area = s.Window * s.Window * s.Channels;
        var x = Tensor.FromArray(d, hx, b, s.Height * s.Width * s.Channels);
        var y = Tensor.Full(d, float.NaN, b * tokens, area);
        var dy = Tensor.FromArray(d, hdy, b * tokens, area);
        var dx = Tensor.Full(d, float.NaN, b, s.Height * s.Width * s.Channels);
        var k = d.Get(static d => new PatchWindowKernels(d));
        k.Gather(gather.Workers, gather, x.View, y.View, s, fill);
        k.Backward(backward.Workers, backward, dy.View, dx.View, s);
        return (y.ToArray(), dx.ToArray());
    }

    [TestCase(6, 9, 3, 3, 1)]    // plain patches of a non-square image
    [TestCase(6, 9, 3, 5, 1)]    // overlapping windows
    [TestCase(8, 8, 2, 8, 1)]    // windows wider than three patches, past the border on both sides
    [TestCase(5, 7, 1, 3, 1)]    // a window around every pixel (a convolution's input)
    [TestCase(4, 4, 1, 5, 3)]    // ... wider than half the image, three channels
    [TestCase(28, 28, 7, 7, 16)] // the vision presets' tokens over the stem's 16 features
    [TestCase(28, 28, 1, 3, 1)]  // the presets' stem windows
    [TestCase(6, 6, 3, 11, 2)]   // windows larger than the image
    public void BodiesAreBitIdentical(int h, int w, int p, int window, int channels)
    {
        const int b = 3;
        var s = new PatchWindowShape(h, w, p, window, channels);
        int rows = b * (h / p) * (w / p);
        var hx = GradCheck.Rand(b * h * w * channels, 31, 2f);
        // Sums whose rounding depends on the order: values of mixed magnitude
        var hdy = GradCheck.Rand(rows * window * window * channels, 32, 3f).Select((v, i) => i % 3 == 0 ? v * 1e3f : v).ToArray();
        foreach (var (gw, bw) in Splits(rows).Zip(Splits(b * h)))
        {
            var (y, dx) = Run(D, gw, bw, hx, hdy, b, s, -0.75f);
            var (wantY, wantDx) = Run(P, gw, bw, hx, hdy, b, s, -0.75f);
            Assert.That(GradCheck.Bits(y), Is.EqualTo(GradCheck.Bits(wantY)), $"gather, split {gw.Workers}x{gw.Stride}");
            Assert.That(GradCheck.Bits(dx), Is.EqualTo(GradCheck.Bits(wantDx)), $"backward, split {bw.Workers}x{bw.Stride}");
        }
    }
}
