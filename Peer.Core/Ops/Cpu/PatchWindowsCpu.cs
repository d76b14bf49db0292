// The CPU accelerator's bodies for Ops.PatchWindows, reached through [External] so that each run of pixels a window row
// shares with the image is one block copy (the gather) or one vector add (the backward) instead of one ArrayView index
// computation per float. Measured reason: with the convolutional stem of the vision presets, the two gathers and the
// backward cost 22 ms of a ~200 ms step through the portable kernels (a window around each of 100k pixels, then 7 x 7 x 16
// windows of 2,048 tokens). The gather only moves floats; the backward adds each input element's entries in the portable
// kernel's order (windows by gy, then gx, onto 0): both give the portable kernels' bits (PatchWindows.cs, the definition).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>Run-copy bodies of <see cref="Ops.PatchWindows"/> over CPU memory and the kernels that call them, which
/// <see cref="PatchWindowKernels"/> loads in place of its portable kernels on the CPU accelerator.</summary>
internal static class PatchWindowsCpu
{
    // x: [B, H*W*C] -> y: [B*P, w*w*C]; one index per worker, whose chunks of tokens the body fills
    internal static void GatherKernel(Index1D w, Work work, ArrayView<float> x, ArrayView<float> y, PatchWindowShape s, float fill)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Gather(x, y, s, fill, st, work.End(st));
    }

    // dy: [B*P, w*w*C] -> dx: [B, H*W*C]; chunks of image rows (b, r)
    internal static void BackwardKernel(Index1D w, Work work, ArrayView<float> dy, ArrayView<float> dx, PatchWindowShape s)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Backward(dy, dx, s, st, work.End(st));
    }

    /// <summary>Tokens <c>[start, end)</c> of the gather: each window row is fill, one copied run of the image row, fill.</summary>
    [External("peer_patch_windows_gather_cpu")]
    public static void Gather(ArrayView<float> x, ArrayView<float> y, PatchWindowShape s, float fill, int start, int end)
    {
        ref float x0 = ref CpuView.First(x), y0 = ref y[0];
        int gw = s.Width / s.Patch, tokens = (s.Height / s.Patch) * gw, c = s.Channels, span = s.Window * c, o = (s.Window - s.Patch) / 2;
        for (int row = start; row < end; row++)
        {
            int b = row / tokens, t = row - b * tokens, gy = t / gw, gx = t - gy * gw;
            int r0 = gy * s.Patch - o, c0 = gx * s.Patch - o;
            // The window's columns j in [j0, j1) lie inside the image; the rest read as fill.
            int j0 = Math.Max(0, -c0), j1 = Math.Min(s.Window, s.Width - c0);
            for (int i = 0; i < s.Window; i++)
            {
                int r = r0 + i;
                ref float to = ref Unsafe.Add(ref y0, ((nint)row * s.Window + i) * span);
                if (r < 0 || r >= s.Height || j1 <= j0)
                {
                    CpuView.Fill(ref to, fill, span);
                    continue;
                }
                CpuView.Fill(ref to, fill, j0 * c);
                CpuView.Copy(ref Unsafe.Add(ref x0, (((nint)b * s.Height + r) * s.Width + c0 + j0) * c), ref Unsafe.Add(ref to, j0 * c), (j1 - j0) * c);
                CpuView.Fill(ref Unsafe.Add(ref to, j1 * c), fill, (s.Window - j1) * c);
            }
        }
    }

    /// <summary>Image rows <c>[start, end)</c> (row <c>b H + r</c>) of the backward: the row is cleared, then the runs of every window
    /// that covers it are added, windows by gy then gx, which is the order the portable kernel sums each element in.</summary>
    [External("peer_patch_windows_backward_cpu")]
    public static void Backward(ArrayView<float> dy, ArrayView<float> dx, PatchWindowShape s, int start, int end)
    {
        ref float dy0 = ref CpuView.First(dy), dx0 = ref dx[0];
        int gh = s.Height / s.Patch, gw = s.Width / s.Patch, c = s.Channels, area = s.Window * s.Window * c, o = (s.Window - s.Patch) / 2;
        int line = s.Width * c;
        for (int l = start; l < end; l++)
        {
            int b = l / s.Height, r = l - b * s.Height;
            ref float to = ref Unsafe.Add(ref dx0, (nint)l * line);
            CpuView.Fill(ref to, 0f, line);
            // gy from ceil((r + o - w + 1) / p) to floor((r + o) / p), within the grid, as the portable kernel
            int y0 = Math.Max(0, PatchWindowKernels.Ceil(r + o - s.Window + 1, s.Patch)), y1 = Math.Min(gh - 1, (r + o) / s.Patch);
            for (int gy = y0; gy <= y1; gy++)
            {
                int i = r - gy * s.Patch + o; // the window row that holds image row r
                for (int gx = 0; gx < gw; gx++)
                {
                    int c0 = gx * s.Patch - o, j0 = Math.Max(0, -c0), j1 = Math.Min(s.Window, s.Width - c0);
                    if (j1 <= j0) continue;
                    ref float from = ref Unsafe.Add(ref dy0, (((nint)b * gh + gy) * gw + gx) * area + ((nint)i * s.Window + j0) * c);
                    Add(ref from, ref Unsafe.Add(ref to, (c0 + j0) * c), (j1 - j0) * c);
                }
            }
        }
    }

    // to[k] += from[k]: element by element, so the vector width does not change the bits
    static void Add(ref float from, ref float to, int n)
    {
        int k = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; k <= n - 8; k += 8)
                (Vector256.LoadUnsafe(ref to, (nuint)k) + Vector256.LoadUnsafe(ref from, (nuint)k)).StoreUnsafe(ref to, (nuint)k);
        for (; k < n; k++) Unsafe.Add(ref to, k) += Unsafe.Add(ref from, k);
    }
}
