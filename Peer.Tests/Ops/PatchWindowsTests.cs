// Ops.PatchWindows (the tokens of the image classifier: plain or overlapping patches, or a window around every pixel for a
// convolutional stem, over one or more channels) against a host reference that walks each window's pixels by their image
// coordinates, on every backend; its gradient against the reference's scatter-add and finite differences; bad-input errors.
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class PatchWindowsTests(string backend)
{
    Device D => Devices.Get(backend);

    // Visits (output index, input index or -1) in the op's layout: row (b, gy, gx), feature ((i w + j) C + c) is
    // pixel (gy p - o + i, gx p - o + j), channel c of image b.
    static IEnumerable<(int Out, int In)> Pairs(int b, int h, int w, int p, int window, int channels)
    {
        int o = (window - p) / 2, at = 0;
        for (int n = 0; n < b; n++)
            for (int gy = 0; gy < h / p; gy++)
                for (int gx = 0; gx < w / p; gx++)
                    for (int r = 0; r < window; r++)
                        for (int c = 0; c < window; c++)
                            for (int ch = 0; ch < channels; ch++)
                            {
                                int sr = gy * p - o + r, sc = gx * p - o + c;
                                yield return (at++, sr >= 0 && sr < h && sc >= 0 && sc < w ? ((n * h + sr) * w + sc) * channels + ch : -1);
                            }
    }

    [TestCase(6, 9, 3, 3, 1)]   // plain patches of a non-square image
    [TestCase(6, 9, 3, 5, 1)]   // one pixel of overlap on each side
    [TestCase(8, 8, 2, 8, 1)]   // windows wider than three patches, reaching past the border
    [TestCase(4, 4, 1, 3, 1)]   // a window around every pixel (a 3x3 convolution's input)
    [TestCase(6, 6, 3, 5, 2)]   // two channels
    [TestCase(4, 6, 2, 2, 3)]   // three channels, plain patches
    public void MatchesTheHostReference(int h, int w, int p, int window, int channels)
    {
        using var s = Scope.Begin();
        const int b = 3;
        var x = GradCheck.Rand(b * h * w * channels, 11);
        var y = Peer.Ops.PatchWindows(Tensor.FromArray(D, x, b, h * w * channels), h, w, p, window, -0.5f, channels);
        Assert.That(y.Shape, Is.EqualTo(new[] { b * (h / p) * (w / p), window * window * channels }));
        var want = Pairs(b, h, w, p, window, channels).Select(q => q.In < 0 ? -0.5f : x[q.In]).ToArray();
        Assert.That(y.ToArray(), Is.EqualTo(want));
    }

    [TestCase(6, 9, 3, 5, 1)]
    [TestCase(4, 4, 1, 3, 2)]
    [TestCase(8, 8, 2, 8, 1)]
    public void TheGradientSumsTheEntriesThatCopiedEachInput(int h, int w, int p, int window, int channels)
    {
        const int b = 2;
        var x = GradCheck.Rand(b * h * w * channels, 12);
        var pairs = Pairs(b, h, w, p, window, channels).ToArray();
        var dy = GradCheck.Rand(pairs.Length, 13);
        // Host scatter-add in double: each copied input collects the upstream gradient of every entry that read it.
        var want = new double[x.Length];
        foreach (var (o, i) in pairs) if (i >= 0) want[i] += dy[o];
        using var s = Scope.Begin();
        var images = Tensor.FromArray(D, x, b, h * w * channels);
        images.RequiresGrad = true;
        var y = Peer.Ops.PatchWindows(images, h, w, p, window, 0.25f, channels);
        D.Tape.Backward(y, Tensor.FromArray(D, dy, y.Shape));
        var got = images.Grad!.ToArray();
        for (int i = 0; i < x.Length; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-5), $"input {i}");
        GradCheck.Check(D, t => Peer.Ops.PatchWindows(t[0], h, w, p, window, 0.25f, channels), [(x, [b, h * w * channels])]);
    }

    [Test]
    public void RefusesBadInput()
    {
        using var s = Scope.Begin();
        var images = Tensor.Zeros(D, 2, 36);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 5, 3, 3))!.Message, Does.Contain("images"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 3, 6, 3, 3, channels: 3))!.Message, Does.Contain("images"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 4, 4))!.Message, Does.Contain("patch"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 3, 4))!.Message, Does.Contain("window"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 3, 1))!.Message, Does.Contain("window"));
        Assert.That(Assert.Catch<ArgumentException>(() => Peer.Ops.PatchWindows(images, 0, 6, 3, 3))!.Message, Does.Contain("height"));
        Assert.That(Assert.Catch<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 3, 3, channels: 0))!.Message, Does.Contain("channels"));
    }
}
