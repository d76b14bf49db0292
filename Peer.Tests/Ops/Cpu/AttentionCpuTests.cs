using ILGPU.Runtime;

namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD attention bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator, and the public op (which takes the
/// SIMD path there) against a double host reference.</summary>
public sealed class AttentionCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;
    const double U = 1.0 / (1 << 24); // float32 unit roundoff

    sealed record Outputs(float[] O, float[] Lse, float[] Delta, float[] DQ, float[] DK, float[] DV);

    // Forward and both backward kernels on [bh * t, dh] rows, as device d's launcher loads them.
    // dirt: when non-zero, the outputs start filled with random values of that seed instead of whatever the pool held.
    static Outputs Run(Device d, float[] q, float[] k, float[] v, float[] dO, int bh, int t, int dh, bool causal, int dirt = 0)
    {
        using var s = Scope.Begin();
        var kern = d.Get(static d => new AttentionKernels(d));
        int rows = bh * t;
        var shape = new AttentionShape(t, dh, 1f / MathF.Sqrt(dh), causal);
        var tq = Tensor.FromArray(d, q, rows, dh);
        var tk = Tensor.FromArray(d, k, rows, dh);
        var tv = Tensor.FromArray(d, v, rows, dh);
        var tg = Tensor.FromArray(d, dO, rows, dh);
        Tensor Out(params int[] shape)
        {
            var x = Tensor.Empty(d, DType.F32, shape);
            if (dirt != 0) x.View.SubView(0, x.Length).CopyFromCPU(GradCheck.Rand((int)x.Length, dirt++, 1e3f));
            return x;
        }
        var o = Out(rows, dh);
        var lse = Out(rows);
        var delta = Out(rows);
        var dq = Out(rows, dh);
        var dk = Out(rows, dh);
        var dv = Out(rows, dh);
        var w = d.Split(rows);
        kern.Forward(w.Workers, w, shape, tq.View, tk.View, tv.View, o.View, lse.View);
        kern.BackwardQuery(w.Workers, w, shape, tq.View, tk.View, tv.View, o.View, tg.View, lse.View, delta.View, dq.View);
        kern.BackwardKey(w.Workers, w, shape, tq.View, tk.View, tv.View, tg.View, lse.View, delta.View, dk.View, dv.View);
        return new Outputs(o.ToArray(), lse.ToArray(), delta.ToArray(), dq.ToArray(), dk.ToArray(), dv.ToArray());
    }

    // q, k (spread 2) and v, dO (spread 1) of n values each, from seeds seed .. seed + 3.
    static (float[] Q, float[] K, float[] V, float[] DO) Inputs(int n, int seed) =>
        (GradCheck.Rand(n, seed, 2f), GradCheck.Rand(n, seed + 1, 2f), GradCheck.Rand(n, seed + 2), GradCheck.Rand(n, seed + 3));

    // Odd sizes: T = 1 (a single key), Dh below, at and across the 8-lane width with scalar tails, B*H > workers; both masks,
    // and the vision model's short rows (T = 16 and 49 tokens, Dh = 16) without the mask. The last three of each mask
    // exceed the short-sequence path's stack block ((T + 8) Dh > 4096 floats) and run the row-at-a-time bodies; the others
    // take the short path (AttentionCpu.ShortRows, asserted).
    [TestCase(1, 1, 8, true)]
    [TestCase(3, 13, 5, true)]
    [TestCase(5, 17, 24, true)]
    [TestCase(2, 70, 37, true)]
    [TestCase(1, 33, 64, true)]
    [TestCase(2, 60, 72, true)]
    [TestCase(1, 130, 33, true)]
    [TestCase(3, 300, 16, true)]
    [TestCase(1, 1, 8, false)]
    [TestCase(3, 13, 5, false)]
    [TestCase(5, 17, 24, false)]
    [TestCase(2, 70, 37, false)]
    [TestCase(7, 16, 16, false)]
    [TestCase(3, 49, 16, false)]
    [TestCase(2, 60, 72, false)]
    [TestCase(1, 130, 33, false)]
    [TestCase(3, 300, 16, false)]
    public void SimdBodiesAgreeWithPortableKernels(int bh, int t, int dh, bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        Assert.That(AttentionCpu.ShortRows(new AttentionShape(t, dh, 1f, causal)), Is.EqualTo((t + 8) * dh <= 4096), "the path this case is meant to take");
        AgreeWithPortable(bh, t, dh, causal);
    }

    // The short-sequence path at every kind of length against the 8-lane width (below it, at one more or one less than a
    // multiple, the 16-key step and its 8-key tail) and the head sizes that step its FMA columns 16 and 8 at a time.
    [Test]
    public void ShortPathAgreesWithPortableKernelsAtEveryLengthAndWidth([Values(1, 2, 3, 7, 9, 15, 17, 33, 49)] int t,
        [Values(8, 16, 24, 32)] int dh, [Values] bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        Assert.That(AttentionCpu.ShortRows(new AttentionShape(t, dh, 1f, causal)), Is.True, "a short-path case");
        AgreeWithPortable(3, t, dh, causal);
    }

    // A row that sees one key (every row at T = 1, the first query of each sequence under the mask) has softmax weight 1
    // exactly: o = v, dV = dO (at T = 1), and dS = p (dO·v - dO·o) scale = 0, so dQ = dK = 0 exactly on that path.
    // The portable kernels give exactly that; the short path must too (with exp(0) rounded to 1.0000001 and delta summed in
    // another order than dO·v it left dQ and dK tiny non-zero values, which a resumed training run could not repeat bit for
    // bit once the global-norm clipping summed them in another order). Also bit-equal to the portable kernels there.
    [TestCase(1, 8, false)]
    [TestCase(1, 16, false)]
    [TestCase(1, 12, true)]
    [TestCase(5, 8, true)]
    public void RowsWithOneKeyAreExact(int t, int dh, bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        int bh = 37, n = bh * t * dh;
        var (q, k, v, dO) = Inputs(n, 41);
        var fast = Run(D, q, k, v, dO, bh, t, dh, causal);
        var portable = Run(P, q, k, v, dO, bh, t, dh, causal);
        for (int b = 0; b < bh; b++)
        {
            int r = b * t; // the sequence's first row sees key 0 alone (t = 1, or the mask)
            for (int c = 0; c < dh; c++)
            {
                int e = r * dh + c;
                Assert.That(fast.O[e], Is.EqualTo(v[e]), $"o, row {r}");
                Assert.That(fast.DQ[e], Is.EqualTo(0f), $"dQ, row {r}");
                if (t > 1) continue; // key 0 is seen by the later queries too
                Assert.That(fast.DV[e], Is.EqualTo(dO[e]), $"dV, row {r}");
                Assert.That(fast.DK[e], Is.EqualTo(0f), $"dK, row {r}");
            }
        }
        if (t == 1)
        {
            Assert.That(fast.O, Is.EqualTo(portable.O));
            Assert.That(fast.DQ, Is.EqualTo(portable.DQ));
            Assert.That(fast.DK, Is.EqualTo(portable.DK));
            Assert.That(fast.DV, Is.EqualTo(portable.DV));
        }
    }

    // The bodies' stack blocks (skipped initialisation) and the output tensors hold whatever was there before; lanes past T
    // must never reach a result. The same inputs, run with different values in the outputs beforehand and after calls of
    // other shapes (which leave their own values on the workers' stacks), give the same bits.
    [TestCase(1, 8, false)]
    [TestCase(3, 8, true)]
    [TestCase(9, 16, false)]
    [TestCase(17, 24, true)]
    [TestCase(49, 16, false)]
    public void ResultsDoNotDependOnWhatTheBuffersHeld(int t, int dh, bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        int bh = 64, n = bh * t * dh;
        var (q, k, v, dO) = Inputs(n, 51);
        var first = Run(D, q, k, v, dO, bh, t, dh, causal, dirt: 100);
        foreach (var (ot, odh) in new[] { (49, 16), (40, 24), (7, 32) })
        {
            int m = 32 * ot * odh;
            Run(D, GradCheck.Rand(m, 61, 50f), GradCheck.Rand(m, 62, 50f), GradCheck.Rand(m, 63, 1e4f), GradCheck.Rand(m, 64, 1e4f), 32, ot, odh, !causal);
        }
        var second = Run(D, q, k, v, dO, bh, t, dh, causal, dirt: 200);
        Assert.That(second.O, Is.EqualTo(first.O));
        Assert.That(second.Lse, Is.EqualTo(first.Lse));
        Assert.That(second.Delta, Is.EqualTo(first.Delta));
        Assert.That(second.DQ, Is.EqualTo(first.DQ));
        Assert.That(second.DK, Is.EqualTo(first.DK));
        Assert.That(second.DV, Is.EqualTo(first.DV));
    }

    void AgreeWithPortable(int bh, int t, int dh, bool causal)
    {
        int n = bh * t * dh;
        var q = GradCheck.Rand(n, 11 + dh, 2f);
        var k = GradCheck.Rand(n, 12 + t, 2f);
        var v = GradCheck.Rand(n, 13);
        var dO = GradCheck.Rand(n, 14);
        var fast = Run(D, q, k, v, dO, bh, t, dh, causal);
        var portable = Run(P, q, k, v, dO, bh, t, dh, causal);

        // Row-at-a-time bodies: the same loops in the same order; only the Dh-long dot products (8 lanes, then the lanes summed)
        // and the FMA row updates round differently. Short-sequence bodies: each dot one FMA per element in order, the softmax
        // in two passes instead of online, Vector256.Exp (within 3 u of MathF.Exp). Either way the paths differ by float32
        // rounding, not bit for bit. Bound per element: every
        // score carries at most (Dh + 2) u S absolute error (S the largest scale Σ_c |q_c k_c|), which exp turns into that
        // relative error of each P; each further dot, sum over at most T keys and row update adds (T + Dh + 6) u relative
        // to the sum of absolute terms of the element (Magnitudes). Either path may err that much, hence the 2.
        var (mag, s) = Magnitudes(q, k, v, dO, bh, t, dh, causal);
        double rel = 2 * ((dh + 2) * U * s + (t + dh + 6) * U);
        Close(fast.O, portable.O, rel, mag.O, "o");
        Close(fast.Lse, portable.Lse, rel, mag.Lse, "lse");
        Close(fast.Delta, portable.Delta, rel, mag.Delta, "delta");
        Close(fast.DQ, portable.DQ, rel, mag.DQ, "dQ");
        Close(fast.DK, portable.DK, rel, mag.DK, "dK");
        Close(fast.DV, portable.DV, rel, mag.DV, "dV");
    }

    // In double: per output element the sum of absolute values of the terms that make it (the scale of its float32 error),
    // and S = max over (i, j) of scale Σ_c |q_ic k_jc|. For dS_ij = P_ij (dO_i·v_j - delta_i) scale the error scale is
    // A_ij = P_ij scale (|dO_i·v_j - delta_i| + Σ_c |dO_ic v_jc| + Σ_c |dO_ic o_ic|); dQ_i sums A_ij |k_j|, dK_j sums A_ij |q_i|.
    static (Outputs Mag, double S) Magnitudes(float[] q, float[] k, float[] v, float[] dO, int bh, int t, int dh, bool causal)
    {
        int n = bh * t * dh;
        double scale = 1 / Math.Sqrt(dh), sMax = 0;
        var mo = new double[n]; var mlse = new double[bh * t]; var mdelta = new double[bh * t];
        var mdq = new double[n]; var mdk = new double[n]; var mdv = new double[n];
        for (int b = 0; b < bh; b++)
        {
            var p = new double[t, t];
            var o = new double[t, dh];
            for (int i = 0; i < t; i++)
            {
                int seen = causal ? i + 1 : t;
                var sc = new double[seen];
                for (int j = 0; j < seen; j++)
                {
                    double acc = 0, abs = 0;
                    for (int c = 0; c < dh; c++)
                    {
                        double term = (double)q[(b * t + i) * dh + c] * k[(b * t + j) * dh + c];
                        acc += term;
                        abs += Math.Abs(term);
                    }
                    sc[j] = acc * scale;
                    sMax = Math.Max(sMax, abs * scale);
                }
                double m = sc.Max(), z = sc.Sum(x => Math.Exp(x - m));
                mlse[b * t + i] = Math.Abs(m) + Math.Log(z);
                for (int j = 0; j < seen; j++) p[i, j] = Math.Exp(sc[j] - m) / z;
                for (int c = 0; c < dh; c++)
                    for (int j = 0; j < seen; j++)
                    {
                        o[i, c] += p[i, j] * v[(b * t + j) * dh + c];
                        mo[(b * t + i) * dh + c] += p[i, j] * Math.Abs(v[(b * t + j) * dh + c]);
                    }
            }
            for (int i = 0; i < t; i++)
            {
                double delta = 0, deltaAbs = 0;
                for (int c = 0; c < dh; c++)
                {
                    delta += dO[(b * t + i) * dh + c] * o[i, c];
                    deltaAbs += Math.Abs(dO[(b * t + i) * dh + c] * o[i, c]);
                }
                mdelta[b * t + i] = deltaAbs;
                for (int j = 0, seen = causal ? i + 1 : t; j < seen; j++)
                {
                    double dp = 0, dpAbs = 0;
                    for (int c = 0; c < dh; c++)
                    {
                        double term = (double)dO[(b * t + i) * dh + c] * v[(b * t + j) * dh + c];
                        dp += term;
                        dpAbs += Math.Abs(term);
                    }
                    double a = p[i, j] * scale * (Math.Abs(dp - delta) + dpAbs + deltaAbs);
                    for (int c = 0; c < dh; c++)
                    {
                        mdq[(b * t + i) * dh + c] += a * Math.Abs(k[(b * t + j) * dh + c]);
                        mdk[(b * t + j) * dh + c] += a * Math.Abs(q[(b * t + i) * dh + c]);
                        mdv[(b * t + j) * dh + c] += p[i, j] * Math.Abs(dO[(b * t + i) * dh + c]);
                    }
                }
            }
        }
        static float[] F(double[] x) => x.Select(e => (float)e).ToArray();
        return (new Outputs(F(mo), F(mlse), F(mdelta), F(mdq), F(mdk), F(mdv)), sMax);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void PublicOpOnTheCpuMatchesDoubleReference(bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        using var s = Scope.Begin();
        int b = 2, h = 3, t = 21, dh = 24, n = b * h * t * dh;
        var q = GradCheck.Rand(n, 21, 2f);
        var k = GradCheck.Rand(n, 22, 2f);
        var v = GradCheck.Rand(n, 23);
        var got = Peer.Ops.Attention(Tensor.FromArray(D, q, b, h, t, dh), Tensor.FromArray(D, k, b, h, t, dh), Tensor.FromArray(D, v, b, h, t, dh), causal).ToArray();
        int bh = b * h;
        for (int bi = 0; bi < bh; bi++)
            for (int i = 0; i < t; i++)
            {
                int seen = causal ? i + 1 : t;
                var scores = new double[seen];
                for (int j = 0; j < seen; j++)
                {
                    double acc = 0;
                    for (int c = 0; c < dh; c++) acc += (double)q[(bi * t + i) * dh + c] * k[(bi * t + j) * dh + c];
                    scores[j] = acc / Math.Sqrt(dh);
                }
                double m = scores.Max(), z = scores.Sum(x => Math.Exp(x - m));
                for (int c = 0; c < dh; c++)
                {
                    double want = 0;
                    for (int j = 0; j < seen; j++) want += Math.Exp(scores[j] - m) / z * v[(bi * t + j) * dh + c];
                    // As the portable op's own test (AttentionTests): values in [-1, 1], scores of a few units.
                    Assert.That(got[(bi * t + i) * dh + c], Is.EqualTo(want).Within(1e-5), $"row {bi * t + i}, column {c}");
                }
            }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void PublicOpGradientsMatchFiniteDifferencesOnSimdWidths(bool causal)
    {
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");
        int[] shape = [1, 2, 5, 11]; // Dh = 11: one 8-lane step and a 3-element tail
        int n = 110;
        GradCheck.Check(D, x => Peer.Ops.Attention(x[0], x[1], x[2], causal),
            [(GradCheck.Rand(n, 31, 1.5f), shape), (GradCheck.Rand(n, 32, 1.5f), shape), (GradCheck.Rand(n, 33), shape)]);
    }

    [Test]
    public void PublicOpOnEmptyHeadsRunsOnTheBodies()
    {
        // Dh = 0 reaches the bodies with empty rows: they must read none of them (an out-of-range view access ends the process).
        using var s = Scope.Begin();
        var q = Tensor.Zeros(D, 2, 3, 5, 0);
        q.RequiresGrad = true;
        var y = Peer.Ops.CausalAttention(q, Tensor.Zeros(D, 2, 3, 5, 0), Tensor.Zeros(D, 2, 3, 5, 0));
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, 5, 0 }));
        D.Tape.Backward(y, Tensor.Zeros(D, 2, 3, 5, 0));
        Assert.That(q.Grad!.Shape, Is.EqualTo(new[] { 2, 3, 5, 0 }));
    }

    static void Close(float[] fast, float[] portable, double rel, float[] magnitude, string what)
    {
        Assert.That(fast.Length, Is.EqualTo(portable.Length));
        for (int i = 0; i < fast.Length; i++)
            Assert.That(fast[i], Is.EqualTo(portable[i]).Within(rel * magnitude[i] + 1e-7), $"{what} element {i}");
    }
}
