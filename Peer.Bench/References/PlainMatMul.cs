// Plain-C# matmul references for the kernels suite; never used by the framework. C = A @ B, row-major
// A [m, k], B [k, n]. Simple: Vector<T> ikj over rows in parallel. Best: packed panels and a register-tiled
// Vector512 FMA micro-kernel (8 x 32 tile, 16 accumulators), one contiguous block of rows per core.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Peer.Bench;

internal static unsafe class PlainMatMul
{
    public static void Simple(float[] a, float[] b, float[] c, int m, int n, int k)
    {
        int w = Vector<float>.Count;
        Parallel.For(0, m, i =>
        {
            var ci = c.AsSpan(i * n, n);
            ci.Clear();
            for (int p = 0; p < k; p++)
            {
                float av = a[i * k + p];
                var va = new Vector<float>(av);
                var bp = b.AsSpan(p * n, n);
                int j = 0;
                for (; j <= n - w; j += w) (new Vector<float>(ci[j..]) + va * new Vector<float>(bp[j..])).CopyTo(ci[j..]);
                for (; j < n; j++) ci[j] += av * bp[j];
            }
        });
    }

    const int MR = 8, NR = 32, KC = 256, NC = 512;
    [ThreadStatic] static float[]? packA, packB, tileBuffer;

    public static void Best(float[] a, float[] b, float[] c, int m, int n, int k)
    {
        int parts = Math.Min(Environment.ProcessorCount, m);
        Parallel.For(0, parts, part =>
        {
            int i0 = (int)((long)m * part / parts), i1 = (int)((long)m * (part + 1) / parts);
            var ap = packA ??= GC.AllocateUninitializedArray<float>(MR * KC, pinned: true);
            var bp = packB ??= GC.AllocateUninitializedArray<float>(KC * (NC + NR), pinned: true);
            var tile = tileBuffer ??= GC.AllocateUninitializedArray<float>(MR * NR, pinned: true);
            fixed (float* A = a, B = b, C = c, Ap = ap, Bp = bp, T = tile)
                Rows(A, B, C, Ap, Bp, T, i0, i1, n, k);
        });
    }

    static void Rows(float* A, float* B, float* C, float* Ap, float* Bp, float* T, int i0, int i1, int n, int k)
    {
        for (int jc = 0; jc < n; jc += NC)
        {
            int nc = Math.Min(NC, n - jc);
            for (int pc = 0; pc < k; pc += KC)
            {
                int kc = Math.Min(KC, k - pc);
                for (int jp = 0; jp < nc; jp += NR)
                {
                    int nr = Math.Min(NR, nc - jp);
                    float* dst = Bp + jp * kc;
                    for (int p = 0; p < kc; p++, dst += NR)
                    {
                        float* src = B + (long)(pc + p) * n + jc + jp;
                        for (int j = 0; j < nr; j++) dst[j] = src[j];
                        for (int j = nr; j < NR; j++) dst[j] = 0f;
                    }
                }
                for (int i = i0; i < i1; i += MR)
                {
                    int mr = Math.Min(MR, i1 - i);
                    for (int p = 0; p < kc; p++)
                        for (int r = 0; r < MR; r++) Ap[p * MR + r] = r < mr ? A[(long)(i + r) * k + pc + p] : 0f;
                    for (int jp = 0; jp < nc; jp += NR)
                    {
                        int nr = Math.Min(NR, nc - jp);
                        float* cij = C + (long)i * n + jc + jp;
                        bool full = mr == MR && nr == NR, add = pc > 0;
                        Micro(kc, Ap, Bp + jp * kc, full ? cij : T, full ? n : NR, full && add);
                        if (!full)
                            for (int r = 0; r < mr; r++)
                                for (int j = 0; j < nr; j++)
                                    cij[(long)r * n + j] = (add ? cij[(long)r * n + j] : 0f) + T[r * NR + j];
                    }
                }
            }
        }
    }

    static void Micro(int kc, float* ap, float* bp, float* c, int ldc, bool add)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < kc; p++, ap += MR, bp += NR)
        {
            var b0 = Vector512.Load(bp);
            var b1 = Vector512.Load(bp + 16);
            var x = Vector512.Create(ap[0]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(ap[1]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(ap[2]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(ap[3]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(ap[4]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(ap[5]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(ap[6]); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(ap[7]); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
        }
        Store(c, c00, c01, add); Store(c + ldc, c10, c11, add); Store(c + 2 * ldc, c20, c21, add); Store(c + 3 * ldc, c30, c31, add);
        Store(c + 4 * ldc, c40, c41, add); Store(c + 5 * ldc, c50, c51, add); Store(c + 6 * ldc, c60, c61, add); Store(c + 7 * ldc, c70, c71, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, Vector512<float> v0, Vector512<float> v1, bool add)
    {
        if (add) { v0 += Vector512.Load(c); v1 += Vector512.Load(c + 16); }
        v0.Store(c);
        v1.Store(c + 16);
    }
}
