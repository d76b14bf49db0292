// The tokens of an image model: each image (channels last) cut into a grid of p x p patches, each token the w x w window of
// pixels centred on its patch with all their channels (w >= p, w - p even; pixels outside the image read as a constant).
// With w = p the windows are the patches themselves (ViT's tokens); with w > p neighbouring tokens overlap by w - p pixels,
// as overlapping patch embeddings do; with p = 1 every pixel gets the window around it, so a Linear after it is a
// convolution (a convolutional stem). A gather, one token (output row) per work item. Differentiable: the backward
// gathers, for each input element, the gradients of the window entries that copied it (one image row per work item, in
// window order: deterministic, no atomics). On the CPU accelerator the launcher loads run-copy bodies instead
// (Cpu/PatchWindowsCpu.cs, identical bits).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// The patch windows of <paramref name="images"/> F32 <c>[B, H*W*C]</c> (row-major <c>H x W</c> pixels of
    /// <paramref name="channels"/> C values each): result F32 <c>[B * (H/p) * (W/p), w*w*C]</c>, row <c>b (H/p)(W/p) + gy (W/p) + gx</c>
    /// holding at <c>(i w + j) C + c</c> the value <c>x[b, gy p - o + i, gx p - o + j, c]</c> for <c>i, j</c> in <c>0..w-1</c>,
    /// <c>o = (w - p) / 2</c>, and <paramref name="fill"/> where that pixel lies outside the image. With <paramref name="window"/> =
    /// <paramref name="patch"/> it is the plain cut into patches. Differentiable in <paramref name="images"/>: each input element
    /// receives the sum of the gradients of the entries that copied it.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong dtype or shape, a patch size that does not divide the image, a window smaller than
    /// the patch or of the other parity, or fewer than one channel.</exception>
    public static Tensor PatchWindows(Tensor images, int height, int width, int patch, int window, float fill = 0f, int channels = 1)
    {
        Check.DType(images, DType.F32, nameof(images));
        Check.Positive(height, nameof(height));
        Check.Positive(width, nameof(width));
        Check.Positive(channels, nameof(channels));
        Check.That(images.Rank == 2 && images.Shape[1] == height * width * channels, nameof(images), images.Shape,
            $"[B, {height * width * channels}] ({height}x{width} pixels of {channels} channel(s) per image)");
        Check.That(patch >= 1 && height % patch == 0 && width % patch == 0, nameof(patch), patch, $"a positive divisor of the height {height} and the width {width}");
        Check.That(window >= patch && (window - patch) % 2 == 0, nameof(window), window, $"a window of at least the patch size {patch}, larger by an even number of pixels");
        var d = images.Device;
        int b = images.Shape[0], tokens = (height / patch) * (width / patch);
        var shape = new PatchWindowShape(height, width, patch, window, channels);
        var y = Tensor.Empty(d, DType.F32, b * tokens, window * window * channels);
        var k = d.Get(static d => new PatchWindowKernels(d));
        var w = d.Split(b * tokens);
        if (w.N > 0) k.Gather(w.Workers, w, images.View, y.View, shape, fill);
        if (d.Tape.Needs(images))
            d.Tape.Record(y, [images], g =>
            {
                var dx = Tensor.Empty(d, DType.F32, images.Shape);
                var wx = d.Split(b * height);
                if (wx.N > 0) k.Backward(wx.Workers, wx, g.View, dx.View, shape);
                Tape.Accumulate(images, dx);
            });
        return y;
    }
}

/// <summary>Sizes of a <see cref="Ops.PatchWindows"/> gather.</summary>
internal readonly struct PatchWindowShape(int height, int width, int patch, int window, int channels)
{
    public readonly int Height = height, Width = width, Patch = patch, Window = window, Channels = channels;
}

/// <summary>Kernels of <see cref="Ops.PatchWindows"/>: the portable kernels below, or the run-copy bodies' kernels
/// (Cpu/PatchWindowsCpu.cs) on the CPU accelerator.</summary>
internal sealed class PatchWindowKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, PatchWindowShape, float> Gather;
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<float>, PatchWindowShape> Backward;

    public PatchWindowKernels(Device d)
    {
        Gather = d.LoadKernel(GatherKernel, PatchWindowsCpu.GatherKernel, 0);
        Backward = d.LoadKernel(BackwardKernel, PatchWindowsCpu.BackwardKernel, 0);
    }

    // x: [B, H*W*C] -> y: [B*P, w*w*C], P = (H/p)(W/p); one output row (token) per item, its window copied row by row
    static void GatherKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, PatchWindowShape s, float fill)
    {
        int gw = s.Width / s.Patch, tokens = (s.Height / s.Patch) * gw, c = s.Channels, span = s.Window * c, o = (s.Window - s.Patch) / 2;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int e = work.End(st), row = st; row < e; row++)
            {
                int b = row / tokens, t = row - b * tokens, gy = t / gw, gx = t - gy * gw;
                int r0 = gy * s.Patch - o, c0 = gx * s.Patch - o;
                for (int i = 0; i < s.Window; i++)
                {
                    int r = r0 + i, to = (row * s.Window + i) * span;
                    bool inside = r >= 0 && r < s.Height;
                    for (int j = 0; j < s.Window; j++)
                    {
                        int col = c0 + j, from = ((b * s.Height + r) * s.Width + col) * c;
                        bool valid = inside && col >= 0 && col < s.Width;
                        for (int ch = 0; ch < c; ch++) y[to + j * c + ch] = valid ? x[from + ch] : fill;
                    }
                }
            }
    }

    // dy: [B*P, w*w*C] -> dx: [B, H*W*C]; one image row (b, r) per item. Pixel (r, col) lies in the windows gy with
    // gy p - o <= r <= gy p - o + w - 1 (and likewise gx), whose entries are summed in window order.
    static void BackwardKernel(Index1D w, Work work, ArrayView<float> dy, ArrayView<float> dx, PatchWindowShape s)
    {
        int gh = s.Height / s.Patch, gw = s.Width / s.Patch, c = s.Channels, area = s.Window * s.Window * c, o = (s.Window - s.Patch) / 2;
        for (int st = work.Start(w); st < work.N; st += work.Stride)
            for (int e = work.End(st), line = st; line < e; line++)
            {
                int b = line / s.Height, r = line - b * s.Height;
                // gy from ceil((r + o - w + 1) / p) to floor((r + o) / p), within the grid (r + o >= 0, so the division floors)
                int y0 = Ceil(r + o - s.Window + 1, s.Patch), y1 = (r + o) / s.Patch;
                if (y0 < 0) y0 = 0;
                if (y1 > gh - 1) y1 = gh - 1;
                for (int col = 0; col < s.Width; col++)
                {
                    int x0 = Ceil(col + o - s.Window + 1, s.Patch), x1 = (col + o) / s.Patch;
                    if (x0 < 0) x0 = 0;
                    if (x1 > gw - 1) x1 = gw - 1;
                    int to = (line * s.Width + col) * c;
                    for (int ch = 0; ch < c; ch++)
                    {
                        float sum = 0f;
                        for (int gy = y0; gy <= y1; gy++)
                            for (int gx = x0; gx <= x1; gx++)
                                sum += dy[((b * gh + gy) * gw + gx) * area + ((r - gy * s.Patch + o) * s.Window + col - gx * s.Patch + o) * c + ch];
                        dx[to + ch] = sum;
                    }
                }
            }
    }

    /// <summary>ceil(a / b) for b &gt; 0 and any a (the window range of a pixel; the CPU body uses it too).</summary>
    internal static int Ceil(int a, int b) => a >= 0 ? (a + b - 1) / b : -(-a / b);
}
