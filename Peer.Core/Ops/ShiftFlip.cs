// Data augmentation of an image batch on the device: each image is mirrored left to right or not, then translated by a
// whole number of pixels, the pixels moved in from outside filled with a constant (a blank border). The per-image moves
// come from the caller (drawn on the host from a seeded generator), so the op itself is deterministic; it is a gather, one
// output pixel per element, and is not differentiable (images are data).
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

public static partial class Ops
{
    /// <summary>
    /// Moves every image of <paramref name="images"/> F32 <c>[B, H*W]</c> (row-major <c>H x W</c> pixels):
    /// <c>y[b, r, c] = x[b, r - dy, c']</c> with <c>c' = W - 1 - (c - dx)</c> when image b is flipped and <c>c' = c - dx</c>
    /// otherwise (mirrored, then shifted by dy rows down and dx columns right), and <paramref name="fill"/> where the source pixel
    /// lies outside the image. <paramref name="moves"/> I32 <c>[B, 3]</c>
    /// holds <c>(dy, dx, flip)</c> per image (flip 0 or 1; a shift may be any integer, one of at least the image's size gives a
    /// blank image). Returns a new tensor; not recorded on the tape.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong dtypes or shapes, devices that differ, or images that require gradient.</exception>
    public static Tensor ShiftFlip(Tensor images, int height, int width, Tensor moves, float fill)
    {
        Check.DType(images, DType.F32, nameof(images));
        Check.DType(moves, DType.I32, nameof(moves));
        Check.SameDevice(images, moves, nameof(moves));
        Check.Positive(height, nameof(height));
        Check.Positive(width, nameof(width));
        Check.That(images.Rank == 2 && images.Shape[1] == height * width, nameof(images), images.Shape, $"[B, {height * width}] ({height}x{width} pixels per image)");
        int b = images.Shape[0];
        Check.Shape(moves, nameof(moves), b, 3);
        var d = images.Device;
        Check.That(!d.Tape.Needs(images), nameof(images), "an input that requires gradient", "image data (the op is not differentiable)");
        var y = Tensor.Empty(d, DType.F32, images.Shape);
        var w = d.Split(images.Length);
        if (w.N > 0) d.Get(static d => new ShiftFlipKernels(d)).Move(w.Workers, w, images.View, moves.IntView, y.View, height, width, fill);
        return y;
    }
}

/// <summary>Kernels of <see cref="Ops.ShiftFlip"/>.</summary>
internal sealed class ShiftFlipKernels
{
    public readonly Action<Index1D, Work, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, float> Move;

    public ShiftFlipKernels(Device d) => Move = d.LoadKernel(MoveKernel);

    // x: [B, H*W], moves: [B, 3] (dy, dx, flip) -> y: [B, H*W]
    static void MoveKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<int> moves, ArrayView<float> y, int height, int width, float fill)
    {
        int size = height * width;
        for (int s = work.Start(w); s < work.N; s += work.Stride)
            for (int i = s, e = work.End(s); i < e; i++)
            {
                int b = i / size, p = i - b * size, r = p / width, c = p - r * width;
                int sr = r - moves[3 * b], sc = c - moves[3 * b + 1];
                if (moves[3 * b + 2] != 0) sc = width - 1 - sc; // mirrored first, then shifted: undo the shift, then the mirror
                y[i] = sr >= 0 && sr < height && sc >= 0 && sc < width ? x[b * size + sr * width + sc] : fill;
            }
    }
}
