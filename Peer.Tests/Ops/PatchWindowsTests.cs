// Ops.PatchWindows (the tokens of the image classifier, plain or overlapping patches) against a host reference that walks
// each window's pixels by their image coordinates, on every backend; and its bad-input errors.
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class PatchWindowsTests(string backend)
{
    Device D => Devices.Get(backend);

    // Row (b, gy, gx), feature (i, j): pixel (gy p - o + i, gx p - o + j) of image b, or fill outside it.
    static float[] Reference(float[] x, int b, int h, int w, int p, int window, float fill)
    {
        int o = (window - p) / 2;
        var y = new List<float>();
        for (int i = 0; i < b; i++)
            for (int gy = 0; gy < h / p; gy++)
                for (int gx = 0; gx < w / p; gx++)
                    for (int r = 0; r < window; r++)
                        for (int c = 0; c < window; c++)
                        {
                            int sr = gy * p - o + r, sc = gx * p - o + c;
                            y.Add(sr >= 0 && sr < h && sc >= 0 && sc < w ? x[i * h * w + sr * w + sc] : fill);
                        }
        return y.ToArray();
    }

    [TestCase(6, 9, 3, 3)]   // plain patches of a non-square image
    [TestCase(6, 9, 3, 5)]   // one pixel of overlap on each side
    [TestCase(8, 8, 2, 8)]   // windows wider than three patches, reaching past the border
    [TestCase(4, 4, 1, 3)]   // a window around every pixel
    public void MatchesTheHostReference(int h, int w, int p, int window)
    {
        using var s = Scope.Begin();
        const int b = 3;
        var x = GradCheck.Rand(b * h * w, 11);
        var y = Peer.Ops.PatchWindows(Tensor.FromArray(D, x, b, h * w), h, w, p, window, -0.5f);
        Assert.That(y.Shape, Is.EqualTo(new[] { b * (h / p) * (w / p), window * window }));
        Assert.That(y.ToArray(), Is.EqualTo(Reference(x, b, h, w, p, window, -0.5f)));
    }

    [Test]
    public void RefusesBadInput()
    {
        using var s = Scope.Begin();
        var images = Tensor.Zeros(D, 2, 36);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 5, 3, 3))!.Message, Does.Contain("images"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 4, 4))!.Message, Does.Contain("patch"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 3, 4))!.Message, Does.Contain("window"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(images, 6, 6, 3, 1))!.Message, Does.Contain("window"));
        Assert.That(Assert.Catch<ArgumentException>(() => Peer.Ops.PatchWindows(images, 0, 6, 3, 3))!.Message, Does.Contain("height"));
        var learned = Tensor.Zeros(D, 2, 36);
        learned.RequiresGrad = true;
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.PatchWindows(learned, 6, 6, 3, 3))!.Message, Does.Contain("gradient"));
    }
}
