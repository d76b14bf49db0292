// Ops.ShiftFlip (the augmentation gather) against a host reference that moves each pixel forward, the opposite direction of
// the kernel's gather, on every backend; and its bad-input errors.
namespace Peer.Tests.Ops;

[TestFixtureSource(typeof(Devices), nameof(Devices.Backends))]
public sealed class ShiftFlipTests(string backend)
{
    Device D => Devices.Get(backend);

    // Scatter reference: pixel (r, c) of the source lands at (r + dy, c'' + dx), c'' its mirror column when flipped.
    static float[] Reference(float[] x, int[] moves, int h, int w, float fill)
    {
        int b = moves.Length / 3;
        var y = Enumerable.Repeat(fill, x.Length).ToArray();
        for (int i = 0; i < b; i++)
            for (int r = 0; r < h; r++)
                for (int c = 0; c < w; c++)
                {
                    int cc = moves[3 * i + 2] == 1 ? w - 1 - c : c;
                    int tr = r + moves[3 * i], tc = cc + moves[3 * i + 1];
                    if (tr >= 0 && tr < h && tc >= 0 && tc < w) y[i * h * w + tr * w + tc] = x[i * h * w + r * w + c];
                }
        return y;
    }

    [Test]
    public void MatchesTheHostReference()
    {
        using var s = Scope.Begin();
        int h = 5, w = 7;
        // Every combination of shifts in -3..3 (rows and columns, beyond the image's height as well) with and without a flip.
        var list = new List<int>();
        for (int dy = -6; dy <= 6; dy += 2)
            for (int dx = -3; dx <= 3; dx++)
                for (int f = 0; f <= 1; f++) list.AddRange([dy, dx, f]);
        var moves = list.ToArray();
        int b = moves.Length / 3;
        var x = GradCheck.Rand(b * h * w, 7);
        var y = Peer.Ops.ShiftFlip(Tensor.FromArray(D, x, b, h * w), h, w, Tensor.FromArray(D, moves, b, 3), -0.75f).ToArray();
        Assert.That(y, Is.EqualTo(Reference(x, moves, h, w, -0.75f)));
    }

    [Test]
    public void NoMoveIsTheIdentityAndAFlipTwiceToo()
    {
        using var s = Scope.Begin();
        int b = 3, h = 4, w = 4;
        var x = GradCheck.Rand(b * h * w, 8);
        var images = Tensor.FromArray(D, x, b, h * w);
        Assert.That(Peer.Ops.ShiftFlip(images, h, w, Tensor.ZerosInt(D, b, 3), 9f).ToArray(), Is.EqualTo(x));
        var flip = Tensor.FromArray(D, new[] { 0, 0, 1, 0, 0, 1, 0, 0, 1 }, b, 3);
        var once = Peer.Ops.ShiftFlip(images, h, w, flip, 9f);
        Assert.That(once.ToArray(), Is.Not.EqualTo(x));
        Assert.That(Peer.Ops.ShiftFlip(once, h, w, flip, 9f).ToArray(), Is.EqualTo(x));
    }

    [Test]
    public void RefusesBadInput()
    {
        using var s = Scope.Begin();
        var images = Tensor.Zeros(D, 2, 12);
        var moves = Tensor.ZerosInt(D, 2, 3);
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ShiftFlip(images, 3, 5, moves, 0f))!.Message, Does.Contain("images"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ShiftFlip(images, 3, 4, Tensor.ZerosInt(D, 3, 3), 0f))!.Message, Does.Contain("moves"));
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ShiftFlip(images, 3, 4, Tensor.Zeros(D, 2, 3), 0f))!.Message, Does.Contain("moves"));
        Assert.That(Assert.Catch<ArgumentException>(() => Peer.Ops.ShiftFlip(images, 0, 4, moves, 0f))!.Message, Does.Contain("height"));
        var learned = Tensor.Zeros(D, 2, 12);
        learned.RequiresGrad = true;
        Assert.That(Assert.Throws<ArgumentException>(() => Peer.Ops.ShiftFlip(learned, 3, 4, moves, 0f))!.Message, Does.Contain("gradient"));
    }
}
