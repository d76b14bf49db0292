namespace Peer.Tests.Ops;

/// <summary>The CPU SIMD fused-expert bodies against the portable kernels (the definition), both launched directly on the CPU
/// accelerator; the public op (which takes the SIMD path there) is checked against double references in PeerExpertsTests.</summary>
public sealed class PeerCpuPathTests
{
    static Device D => Devices.Cpu;
    const double U = 1.0 / (1 << 24); // float32 unit roundoff
    // A bound on |act'| (GELU exact: max 1.129 near z = 2.4; ReLU: 1), so an error e in z moves act(z) by at most L e.
    const double L = 1.13;

    // Odd sizes: d below, across and not a multiple of the 8-lane width, k = 1, one or several heads, h*k below, at and
    // across the four-slot grouping (scalar tails on both axes), one token, repeated expert ids (N small).
    [TestCase(1, 1, 1, 1, 3, PeerActivation.Gelu)]
    [TestCase(5, 13, 3, 1, 7, PeerActivation.Gelu)]
    [TestCase(7, 5, 1, 1, 4, PeerActivation.Relu)]
    [TestCase(9, 37, 2, 3, 11, PeerActivation.Gelu)]
    [TestCase(6, 20, 3, 5, 9, PeerActivation.Relu)]
    [TestCase(4, 64, 4, 8, 50, PeerActivation.Gelu)]
    [TestCase(3, 71, 8, 2, 13, PeerActivation.Relu)]
    public void SimdBodiesAgreeWithPortableKernels(int t, int dm, int h, int k, int n, PeerActivation activation)
    {
        Assume.That(PeerCpu.IsSupported, "no 256-bit vector unit");
        using var s = Scope.Begin();
        var fast = D.Get(static d => new PeerExpertCpuKernels(d));
        var portable = D.Get(static d => new PeerExpertKernels(d));
        int hk = h * k, p = t * hk;
        var rng = new Random(t * 1000 + dm * 10 + hk);
        var hIdx = Enumerable.Range(0, p).Select(_ => rng.Next(n)).ToArray();
        float[] hx = GradCheck.Rand(t * dm, dm + 1, 2f), hg = GradCheck.Rand(p, hk + 2), hDown = GradCheck.Rand(n * dm, n + 3),
            hUp = GradCheck.Rand(n * dm, n + 4), hDy = GradCheck.Rand(t * dm, dm + 5);
        var x = Tensor.FromArray(D, hx, t, dm);
        var idx = Tensor.FromArray(D, hIdx, p);
        var g = Tensor.FromArray(D, hg, p);
        var down = Tensor.FromArray(D, hDown, n, dm);
        var up = Tensor.FromArray(D, hUp, n, dm);
        var dy = Tensor.FromArray(D, hDy, t, dm);
        var shape = new ExpertShape(dm, hk, activation == PeerActivation.Relu ? 1 : 0);
        var w = D.Split(t);

        var (y1, z1, y2, z2) = (Empty(t, dm), Empty(p), Empty(t, dm), Empty(p));
        fast.Forward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, y1.View, z1.View);
        portable.Forward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, y2.View, z2.View);
        // Both backward passes get the portable pre-activations, so their differences are the backward's own.
        var (dx1, dg1, cd1, cu1) = (Empty(t, dm), Empty(p), Empty(p), Empty(p));
        var (dx2, dg2, cd2, cu2) = (Empty(t, dm), Empty(p), Empty(p), Empty(p));
        fast.Backward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, z2.View, dy.View, dx1.View, dg1.View, cd1.View, cu1.View);
        portable.Backward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, z2.View, dy.View, dx2.View, dg2.View, cd2.View, cu2.View);

        float[] fz = z1.ToArray(), pz = z2.ToArray(), fy = y1.ToArray(), py = y2.ToArray(), fdx = dx1.ToArray(), pdx = dx2.ToArray();
        float[] fdg = dg1.ToArray(), pdg = dg2.ToArray(), fcd = cd1.ToArray(), pcd = cd2.ToArray();
        // coefUp = g act(z) reads only z and g, computed by the same expression: identical bits.
        Assert.That(cu1.ToArray(), Is.EqualTo(cu2.ToArray()), "coefUp");

        // A dot product of d terms summed in order or in eight lanes has error at most d u sum |a_c b_c| on either path,
        // hence 2 d u between the paths. Through act the error grows at most by L; the y / dX sums then take h*k + 1
        // roundings of terms in the same order on both paths (2 (hk + 2) u of sum |terms|, with a few ulps for act itself).
        double dotRel = 2 * dm * U, sumRel = 2 * (hk + 4) * U;
        var ez = new double[p];
        var ev = new double[p];
        for (int q = 0; q < p; q++)
        {
            int tok = q / hk, row = hIdx[q];
            double sz = 0, sv = 0;
            for (int c = 0; c < dm; c++)
            {
                sz += Math.Abs((double)hDown[row * dm + c] * hx[tok * dm + c]);
                sv += Math.Abs((double)hUp[row * dm + c] * hDy[tok * dm + c]);
            }
            ez[q] = dotRel * sz;
            ev[q] = dotRel * sv;
            Assert.That(fz[q], Is.EqualTo(pz[q]).Within(ez[q] + 1e-30), $"z[{q}]");
            double a = Math.Abs(Act(pz[q], activation)), da = Math.Abs(ActGrad(pz[q], activation));
            Assert.That(fdg[q], Is.EqualTo(pdg[q]).Within(a * ev[q] + 2 * U * Math.Abs(pdg[q]) + 1e-30), $"dG[{q}]");
            Assert.That(fcd[q], Is.EqualTo(pcd[q]).Within(Math.Abs(hg[q]) * da * ev[q] + 3 * U * Math.Abs(pcd[q]) + 1e-30), $"coefDown[{q}]");
        }
        for (int tok = 0; tok < t; tok++)
            for (int c = 0; c < dm; c++)
            {
                double tolY = 0, tolDx = 0, sy = 0, sdx = 0;
                for (int slot = 0; slot < hk; slot++)
                {
                    int q = tok * hk + slot, row = hIdx[q];
                    double u = Math.Abs(hUp[row * dm + c]), dn = Math.Abs(hDown[row * dm + c]);
                    double a = Math.Abs(Act(pz[q], activation)), da = Math.Abs(ActGrad(pz[q], activation));
                    tolY += Math.Abs(hg[q]) * L * ez[q] * u;
                    sy += Math.Abs(hg[q]) * (a + L * ez[q]) * u;
                    tolDx += Math.Abs(hg[q]) * da * ev[q] * dn;
                    sdx += Math.Abs(pcd[q]) * dn + tolDx;
                }
                int i = tok * dm + c;
                Assert.That(fy[i], Is.EqualTo(py[i]).Within(tolY + sumRel * sy + 1e-30), $"y[{tok}, {c}]");
                Assert.That(fdx[i], Is.EqualTo(pdx[i]).Within(tolDx + sumRel * sdx + 1e-30), $"dX[{tok}, {c}]");
            }
    }

    [Test]
    public void SimdBodiesAreDeterministic()
    {
        Assume.That(PeerCpu.IsSupported, "no 256-bit vector unit");
        using var s = Scope.Begin();
        const int t = 37, dm = 29, hk = 6, n = 17;
        var fast = D.Get(static d => new PeerExpertCpuKernels(d));
        var rng = new Random(5);
        var idx = Tensor.FromArray(D, Enumerable.Range(0, t * hk).Select(_ => rng.Next(n)).ToArray(), t * hk);
        var x = Tensor.FromArray(D, GradCheck.Rand(t * dm, 1), t, dm);
        var g = Tensor.FromArray(D, GradCheck.Rand(t * hk, 2), t * hk);
        var down = Tensor.FromArray(D, GradCheck.Rand(n * dm, 3), n, dm);
        var up = Tensor.FromArray(D, GradCheck.Rand(n * dm, 4), n, dm);
        var dy = Tensor.FromArray(D, GradCheck.Rand(t * dm, 5), t, dm);
        var w = D.Split(t);
        var shape = new ExpertShape(dm, hk, 0);
        float[][] Run()
        {
            var (y, z, dx, dg, cd, cu) = (Empty(t, dm), Empty(t * hk), Empty(t, dm), Empty(t * hk), Empty(t * hk), Empty(t * hk));
            fast.Forward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, y.View, z.View);
            fast.Backward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, z.View, dy.View, dx.View, dg.View, cd.View, cu.View);
            return [y.ToArray(), z.ToArray(), dx.ToArray(), dg.ToArray(), cd.ToArray(), cu.ToArray()];
        }
        var first = Run();
        for (int r = 0; r < 3; r++)
        {
            var again = Run();
            for (int j = 0; j < first.Length; j++) Assert.That(again[j], Is.EqualTo(first[j]), $"output {j}, run {r}");
        }
    }

    [Test]
    public void PublicOpTakesTheSimdPathOnCpu()
    {
        // The op on the CPU accelerator must give the SIMD body's bits, and the portable kernel's when told to prefer it.
        Assume.That(PeerCpu.IsSupported, "no 256-bit vector unit");
        using var s = Scope.Begin();
        const int t = 5, dm = 19, h = 2, k = 3, n = 9;
        var rng = new Random(9);
        var idx = Tensor.FromArray(D, Enumerable.Range(0, t * h * k).Select(_ => rng.Next(n)).ToArray(), t, h, k);
        var x = Tensor.FromArray(D, GradCheck.Rand(t * dm, 11, 3f), t, dm);
        var g = Tensor.FromArray(D, GradCheck.Rand(t * h * k, 12), t, h, k);
        var down = Tensor.FromArray(D, GradCheck.Rand(n * dm, 13), n, dm);
        var up = Tensor.FromArray(D, GradCheck.Rand(n * dm, 14), n, dm);
        var fast = D.Get(static d => new PeerExpertCpuKernels(d));
        var portable = D.Get(static d => new PeerExpertKernels(d));
        var w = D.Split(t);
        var shape = new ExpertShape(dm, h * k, 0);
        var (y1, z1, y2, z2) = (Empty(t, dm), Empty(t * h * k), Empty(t, dm), Empty(t * h * k));
        fast.Forward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, y1.View, z1.View);
        portable.Forward(w.Workers, w, shape, x.View, idx.IntView, g.View, down.View, up.View, y2.View, z2.View);
        Assert.That(Peer.Ops.PeerExperts(x, idx, g, down, up).ToArray(), Is.EqualTo(y1.ToArray()));
        bool saved = PeerExpertKernels.PreferPortable;
        try
        {
            PeerExpertKernels.PreferPortable = true;
            Assert.That(Peer.Ops.PeerExperts(x, idx, g, down, up).ToArray(), Is.EqualTo(y2.ToArray()));
        }
        finally { PeerExpertKernels.PreferPortable = saved; }
    }

    // The CPU selection body runs the portable kernel's algorithm with the same comparisons in the same order: identical
    // ids and scores. Odd sizes (one token, one head, k = 1, k = n) and coarse values, so that ties occur and must break alike.
    [TestCase(1, 1, 2, 1, 1, false)]
    [TestCase(5, 3, 6, 7, 1, false)]
    [TestCase(7, 2, 10, 9, 4, true)]
    [TestCase(4, 4, 16, 64, 8, false)]
    [TestCase(3, 2, 8, 20, 20, true)]
    [TestCase(9, 5, 4, 33, 16, true)]
    public void SelectionBodyMatchesPortableKernelBitForBit(int t, int h, int dq, int n, int k, bool ties)
    {
        using var s = Scope.Begin();
        float[] Data(int count, int seed) =>
            GradCheck.Rand(count, seed).Select(v => ties ? MathF.Round(v * 2f) / 2f : v).ToArray();
        var q = Tensor.FromArray(D, Data(t * h * dq, 21), t, h * dq);
        var sub1 = Tensor.FromArray(D, Data(n * dq / 2, 22), n, dq / 2);
        var sub2 = Tensor.FromArray(D, Data(n * dq / 2, 23), n, dq / 2);
        var (fi, fs) = Peer.Ops.ProductKeyTopK(q, sub1, sub2, h, k);
        bool saved = ProductKeyKernels.PreferPortable;
        try
        {
            ProductKeyKernels.PreferPortable = true;
            var (pi, ps) = Peer.Ops.ProductKeyTopK(q, sub1, sub2, h, k);
            Assert.That(fi.ToIntArray(), Is.EqualTo(pi.ToIntArray()), "indices");
            Assert.That(fs.ToArray(), Is.EqualTo(ps.ToArray()), "scores");
        }
        finally { ProductKeyKernels.PreferPortable = saved; }
    }

    static double Act(double z, PeerActivation a) => a == PeerActivation.Relu ? Math.Max(z, 0) : 0.5 * z * (1 + Erf(z / Math.Sqrt(2)));

    static double ActGrad(double z, PeerActivation a) =>
        a == PeerActivation.Relu ? (z > 0 ? 1 : 0) : 0.5 * (1 + Erf(z / Math.Sqrt(2))) + z * Math.Exp(-0.5 * z * z) / Math.Sqrt(2 * Math.PI);

    // Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): enough for the error bounds, which only scale by act and act'.
    static double Erf(double v)
    {
        double s = Math.Sign(v), a = Math.Abs(v), tt = 1 / (1 + 0.3275911 * a);
        double y = 1 - ((((1.061405429 * tt - 1.453152027) * tt + 1.421413741) * tt - 0.284496736) * tt + 0.254829592) * tt * Math.Exp(-a * a);
        return s * y;
    }

    static Tensor Empty(params int[] shape) => Tensor.Empty(D, DType.F32, shape);
}
