// The CPU accelerator's matmul body, reached from an ILGPU kernel through [External] so that it runs as
// plain .NET code: op(B) is packed into panels (packing absorbs its transpose and the batch strides), A is read in place
// through strides, its MR rows (or, transposed, columns) as MR streams (packing A cost about half of a product with few
// columns: a [2048, 784] x [784, 64] took 5.3 ms packed, 2.7 in place), and a register-tiled FMA micro-kernel computes MR x NR tiles of C, with Vector512 where
// the device allows it (DeviceOptions.MaxCpuVectorBits) and Vector256 otherwise. Never compiled for GPUs; the portable
// kernel in MatMul.cs is the definition and the tests hold this body to it.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Frontend;
using ILGPU.Runtime;

namespace Peer;

/// <summary>SIMD matmul over CPU memory and the kernels that call it, which <see cref="MatMulKernels"/> loads in place of its
/// portable kernel on the CPU accelerator (the body cannot compile for GPUs).</summary>
internal static unsafe class MatMulCpu
{
    // a, b as MatMulKernels' portable kernel -> c: rows of worker w's chunks, through the 256-bit micro-kernel
    internal static void Rows256Kernel(Index1D w, Work work, MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Rows256(s, a, b, c, st, work.End(st));
    }

    // as Rows256Kernel, through the 512-bit micro-kernel
    internal static void Rows512Kernel(Index1D w, Work work, MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        for (int st = work.Start(w); st < work.N; st += work.Stride) Rows512(s, a, b, c, st, work.End(st));
    }

    /// <summary>Depth of a packed block of K (its B panel, KC x NR floats, stays in L1/L2).</summary>
    const int KC = 256;
    /// <summary>Width of a packed block of B's columns (KC x NC floats stay in L2).</summary>
    const int NC = 512;

    // Micro-tile rows and columns of the 512- and the 256-bit micro-kernel.
    static int MR(bool wide) => wide ? 8 : 6;
    static int NR(bool wide) => wide ? 32 : 16;

    [ThreadStatic] static float[]? packB, tile;

    static float* Pinned(ref float[]? buffer, int length)
    {
        if (buffer is null || buffer.Length < length) buffer = GC.AllocateUninitializedArray<float>(length, pinned: true);
        return (float*)Unsafe.AsPointer(ref buffer[0]);
    }

    /// <summary>
    /// Computes rows <c>[rowStart, rowEnd)</c> of the flattened <c>[batch * M, N]</c> output <c>c (+)= op(a) @ op(b)</c> with the
    /// 256-bit micro-kernel. Views are CPU memory; shapes were validated on the host.
    /// </summary>
    [External("peer_matmul_cpu_rows_256")]
    public static void Rows256(MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int rowStart, int rowEnd) =>
        Rows(s, a, b, c, rowStart, rowEnd, wide: false);

    /// <summary>As <see cref="Rows256"/>, with the 512-bit micro-kernel (only where 512-bit vectors are accelerated).</summary>
    [External("peer_matmul_cpu_rows_512")]
    public static void Rows512(MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int rowStart, int rowEnd) =>
        Rows(s, a, b, c, rowStart, rowEnd, wide: true);

    static void Rows(MatMulShape s, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int rowStart, int rowEnd, bool wide)
    {
        float* pa = (float*)Unsafe.AsPointer(ref a[0]);
        float* pb = (float*)Unsafe.AsPointer(ref b[0]);
        float* pc = (float*)Unsafe.AsPointer(ref c[0]);
        for (int row = rowStart; row < rowEnd;)
        {
            int bi = row / s.M, i0 = row - bi * s.M;
            int i1 = Math.Min(s.M, i0 + (rowEnd - row));
            Block(s, pa + (long)bi * s.StrideA, pb + (long)bi * s.StrideB, pc + (long)bi * s.M * s.N, i0, i1, wide);
            row += i1 - i0;
        }
    }

    // Rows [i0, i1) of one batch entry: C[i, :] (+)= sum_p op(A)[i, p] op(B)[p, :]
    static void Block(MatMulShape s, float* A, float* B, float* C, int i0, int i1, bool wide)
    {
        int M = s.M, N = s.N, K = s.K, mrMax = MR(wide), nrMax = NR(wide);
        bool ta = s.TransA != 0, tb = s.TransB != 0;
        if (K == 0)
        {
            if (s.Accumulate == 0) new Span<float>(C + (long)i0 * N, (i1 - i0) * N).Clear();
            return;
        }
        long rs = ta ? 1 : K, ps = ta ? M : 1; // strides of op(A)'s rows and columns in A
        float* Bp = Pinned(ref packB, KC * (NC + nrMax));
        float* T = Pinned(ref tile, mrMax * nrMax);
        for (int jc = 0; jc < N; jc += NC)
        {
            int nc = Math.Min(NC, N - jc);
            for (int pc = 0; pc < K; pc += KC)
            {
                int kc = Math.Min(KC, K - pc);
                // B block [pc, pc+kc) x [jc, jc+nc) as panels of NR columns, p-major inside a panel, zero-padded.
                for (int jp = 0; jp < nc; jp += nrMax)
                {
                    float* dst = Bp + (long)jp * kc;
                    int nr = Math.Min(nrMax, nc - jp);
                    for (int p = 0; p < kc; p++, dst += nrMax)
                    {
                        int q = pc + p;
                        for (int j = 0; j < nr; j++) dst[j] = tb ? B[(long)(jc + jp + j) * K + q] : B[(long)q * N + jc + jp + j];
                        for (int j = nr; j < nrMax; j++) dst[j] = 0f;
                    }
                }
                bool add = pc > 0 || s.Accumulate != 0;
                for (int i = i0; i < i1; i += mrMax)
                {
                    int mr = Math.Min(mrMax, i1 - i);
                    // op(A)[i + r, pc + p] lies at Ai[r * rs + p * ps]: A is read in place, by rows or (transposed) by columns.
                    float* Ai = ta ? A + (long)pc * M + i : A + (long)i * K + pc;
                    for (int jp = 0; jp < nc; jp += nrMax)
                    {
                        float* cij = C + (long)i * N + jc + jp;
                        int nr = Math.Min(nrMax, nc - jp);
                        bool full = mr == mrMax && nr == nrMax;
                        float* bj = Bp + (long)jp * kc, cOut = full ? cij : T;
                        int ldc = full ? N : nrMax;
                        if (wide) Micro512(kc, Ai, rs, ps, mr, bj, cOut, ldc, full && add);
                        else Micro256(kc, Ai, rs, ps, mr, bj, cOut, ldc, full && add);
                        if (!full)
                            for (int r = 0; r < mr; r++)
                                for (int j = 0; j < nr; j++)
                                    cij[(long)r * N + j] = add ? cij[(long)r * N + j] + T[r * nrMax + j] : T[r * nrMax + j];
                    }
                }
            }
        }
    }


    // c[8, 32] (+)= op(A)[8, kc] x bp[kc, 32] (B packed p-major); op(A)[r, p] at a[r * rs + p * ps], rows past mr repeat row 0,
    // whose results land in tile rows the caller does not copy. 16 zmm accumulators.
    static void Micro512(int kc, float* a, long rs, long ps, int mr, float* bp, float* c, int ldc, bool add)
    {
        float* a0 = a, a1 = mr > 1 ? a + rs : a, a2 = mr > 2 ? a + 2 * rs : a, a3 = mr > 3 ? a + 3 * rs : a;
        float* a4 = mr > 4 ? a + 4 * rs : a, a5 = mr > 5 ? a + 5 * rs : a, a6 = mr > 6 ? a + 6 * rs : a, a7 = mr > 7 ? a + 7 * rs : a;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (long p = 0, q = 0; p < kc; p++, q += ps, bp += 32)
        {
            var b0 = Vector512.Load(bp);
            var b1 = Vector512.Load(bp + 16);
            var x = Vector512.Create(a0[q]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a1[q]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a2[q]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[q]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a4[q]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a5[q]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a6[q]); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a7[q]); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
        }
        Store512(c, c00, c01, add); Store512(c + ldc, c10, c11, add);
        Store512(c + 2 * ldc, c20, c21, add); Store512(c + 3 * ldc, c30, c31, add);
        Store512(c + 4 * ldc, c40, c41, add); Store512(c + 5 * ldc, c50, c51, add);
        Store512(c + 6 * ldc, c60, c61, add); Store512(c + 7 * ldc, c70, c71, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store512(float* c, Vector512<float> v0, Vector512<float> v1, bool add)
    {
        if (add) { v0 += Vector512.Load(c); v1 += Vector512.Load(c + 16); }
        v0.Store(c);
        v1.Store(c + 16);
    }


    // c[6, 16] (+)= op(A)[6, kc] x bp[kc, 16], A read as in Micro512; 12 ymm accumulators
    static void Micro256(int kc, float* a, long rs, long ps, int mr, float* bp, float* c, int ldc, bool add)
    {
        float* a0 = a, a1 = mr > 1 ? a + rs : a, a2 = mr > 2 ? a + 2 * rs : a;
        float* a3 = mr > 3 ? a + 3 * rs : a, a4 = mr > 4 ? a + 4 * rs : a, a5 = mr > 5 ? a + 5 * rs : a;
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (long p = 0, q = 0; p < kc; p++, q += ps, bp += 16)
        {
            var b0 = Vector256.Load(bp);
            var b1 = Vector256.Load(bp + 8);
            var x = Vector256.Create(a0[q]); c00 = Vector256.FusedMultiplyAdd(x, b0, c00); c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a1[q]); c10 = Vector256.FusedMultiplyAdd(x, b0, c10); c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a2[q]); c20 = Vector256.FusedMultiplyAdd(x, b0, c20); c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a3[q]); c30 = Vector256.FusedMultiplyAdd(x, b0, c30); c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
            x = Vector256.Create(a4[q]); c40 = Vector256.FusedMultiplyAdd(x, b0, c40); c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
            x = Vector256.Create(a5[q]); c50 = Vector256.FusedMultiplyAdd(x, b0, c50); c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
        }
        Store256(c, c00, c01, add); Store256(c + ldc, c10, c11, add); Store256(c + 2 * ldc, c20, c21, add);
        Store256(c + 3 * ldc, c30, c31, add); Store256(c + 4 * ldc, c40, c41, add); Store256(c + 5 * ldc, c50, c51, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store256(float* c, Vector256<float> v0, Vector256<float> v1, bool add)
    {
        if (add) { v0 += Vector256.Load(c); v1 += Vector256.Load(c + 8); }
        v0.Store(c);
        v1.Store(c + 8);
    }
}
