// The tokens of an image classifier: each image cut into a grid of p x p patches, each token the w x w window of pixels
// centred on its patch (w >= p, w - p even; pixels outside the image read as a constant). With w = p the windows are the
// patches themselves (ViT's tokens); with w > p neighbouring tokens overlap by w - p pixels, as the overlapping patch
// embeddings of convolutional-stem vision transformers do, so a linear patch embedding sees the edges that cross patch
// borders. A gather, one output element per work item; not differentiable (images are data).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// The patch windows of <paramref name="images"/> F32 <c>[B, H*W]</c> (row-major <c>H x W</c> pixels): result F32
    /// <c>[B * (H/p) * (W/p), w*w]</c>, row <c>b (H/p)(W/p) + gy (W/p) + gx</c> holding the pixels
    /// <c>x[b, gy p - o + i, gx p - o + j]</c> for <c>i, j</c> in <c>0..w-1</c> row-major, <c>o = (w - p) / 2</c>, and
    /// <paramref name="fill"/> where that pixel lies outside the image. With <paramref name="window"/> = <paramref name="patch"/>
    /// it is the plain cut into patches. Returns a new tensor; not recorded on the tape.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong dtype or shape, a patch size that does not divide the image, a window smaller than
    /// the patch or of the other parity, or images that require gradient.</exception>
    public static Tensor PatchWindows(Tensor images, int height, int width, int patch, int window, float fill = 0f)
    {
        Check.DType(images, DType.F32, nameof(images));
        Check.Positive(height, nameof(height));
        Check.Positive(width, nameof(width));
        Check.That(images.Rank == 2 && images.Shape[1] == height * width, nameof(images), images.Shape, $"[B, {height * width}] ({height}x{width} pixels per image)");
        Check.That(patch >= 1 && height % patch == 0 && width % patch == 0, nameof(patch), patch, $"a positive divisor of the height {height} and the width {width}");
        Check.That(window >= patch && (window - patch) % 2 == 0, nameof(window), window, $"a window of at least the patch size {patch}, larger by an even number of pixels");
        var d = images.Device;
        Check.That(!d.Tape.Needs(images), nameof(images), "an input that requires gradient", "image data (the op is not differentiable)");
        int b = images.Shape[0], tokens = (height / patch) * (width / patch);
        var y = Tensor.Empty(d, DType.F32, b * tokens, window * window);
        var w = d.Split(y.Length);
        if (w.N > 0) d.Get(static d => new PatchWindowKernels(d)).Gather(w.Workers, w, images.View, y.View, new PatchWindowShape(height, width, patch, window), fill);
        return y;
    }
}

/// <summary>Sizes of a <see cref="Ops.PatchWindows"/> gather.</summary>
internal readonly struct PatchWindowShape(int height, int width, int patch, int window)
{
    public readonly int Height = height, Width = width, Patch = patch, Window = window;
}

/// <summary>Kernels of <see cref="Ops.PatchWindows"/>.</summary>
internal sealed class PatchWindowKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, PatchWindowShape, float> Gather;

    public PatchWindowKernels(Device d) => Gather = d.LoadKernel(GatherKernel);

    // x: [B, H*W] -> y: [B*P, w*w], P = (H/p)(W/p)
    static void GatherKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, PatchWindowShape s, float fill)
    {
        int gw = s.Width / s.Patch, tokens = (s.Height / s.Patch) * gw, area = s.Window * s.Window, o = (s.Window - s.Patch) / 2;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int e = work.End(st), i = st; i < e; i++)
            {
                int row = i / area, f = i - row * area;
                int b = row / tokens, t = row - b * tokens, gy = t / gw, gx = t - gy * gw;
                int r = gy * s.Patch - o + f / s.Window, c = gx * s.Patch - o + f % s.Window;
                y[i] = r >= 0 && r < s.Height && c >= 0 && c < s.Width ? x[b * s.Height * s.Width + r * s.Width + c] : fill;
            }
    }
}
