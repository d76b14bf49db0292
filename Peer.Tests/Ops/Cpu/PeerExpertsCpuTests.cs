namespace Peer.Tests.Ops.Cpu;

/// <summary>The CPU SIMD fused-expert bodies (loaded on <see cref="Devices.Cpu"/>) against the portable kernels (the definition,
/// loaded on <see cref="Devices.CpuPortable"/>), launched directly on the CPU accelerator; the public op is checked against
/// double references in PeerExpertsTests.</summary>
public sealed class PeerExpertsCpuTests
{
    static Device D => Devices.Cpu;
    static Device P => Devices.CpuPortable;

    static void RequireBody() =>
        Assume.That(D.CpuBodyBits, Is.GreaterThanOrEqualTo(256), "no 256-bit vector unit: the CPU device loads the portable kernels");

    internal sealed record Outputs(float[] Y, float[] Z, float[] Dx, float[] DG, float[] CoefDown, float[] CoefUp);

    // The fused forward, then the backward, as device d's launcher loads them. The backward gets the pre-activations
    // `z` given (the portable ones), so that the differences between devices are the backward's own.
    static Outputs Run(Device d, ExpertShape shape, int t, int dm, int n, int[] hIdx, float[] hx, float[] hg, float[] hDown, float[] hUp, float[] hDy, float[]? z = null) =>
        Run(d, d.Get(static d => new PeerExpertKernels(d)), shape, t, dm, n, hIdx, hx, hg, hDown, hUp, hDy, z);

    /// <summary>The fused forward, then the backward, through the launcher <paramref name="k"/> built on <paramref name="d"/>.</summary>
    internal static Outputs Run(Device d, PeerExpertKernels k, ExpertShape shape, int t, int dm, int n, int[] hIdx, float[] hx, float[] hg,
        float[] hDown, float[] hUp, float[] hDy, float[]? z = null)
    {
        using var s = Scope.Begin();
        int p = hIdx.Length;
        var x = Tensor.FromArray(d, hx, t, dm);
        var idx = Tensor.FromArray(d, hIdx, p);
        var g = Tensor.FromArray(d, hg, p);
        var down = Tensor.FromArray(d, hDown, n, dm);
        var up = Tensor.FromArray(d, hUp, n, dm);
        var dy = Tensor.FromArray(d, hDy, t, dm);
        Tensor Empty(params int[] shape) => Tensor.Empty(d, DType.F32, shape);
        var (y, zOut) = (Empty(t, dm), Empty(p));
        if (dm > 0 && t > 0) k.RunForward(d, shape, t, x.View, idx.IntView, g.View, down.View, up.View, y.View, zOut.View);
        var zIn = z is null ? zOut : Tensor.FromArray(d, z, p);
        var (dx, dg, cd, cu) = (Empty(t, dm), Empty(p), Empty(p), Empty(p));
        if (t > 0) k.RunBackward(d, shape, t, x.View, idx.IntView, g.View, down.View, up.View, zIn.View, dy.View, dx.View, dg.View, cd.View, cu.View);
        return new Outputs(y.ToArray(), zOut.ToArray(), dx.ToArray(), dg.ToArray(), cd.ToArray(), cu.ToArray());
    }
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
        RequireBody();
        int hk = h * k, p = t * hk;
        var rng = new Random(t * 1000 + dm * 10 + hk);
        var hIdx = Enumerable.Range(0, p).Select(_ => rng.Next(n)).ToArray();
        float[] hx = GradCheck.Rand(t * dm, dm + 1, 2f), hg = GradCheck.Rand(p, hk + 2), hDown = GradCheck.Rand(n * dm, n + 3),
            hUp = GradCheck.Rand(n * dm, n + 4), hDy = GradCheck.Rand(t * dm, dm + 5);
        var shape = new ExpertShape(dm, hk, activation == PeerActivation.Relu ? 1 : 0, n);
        var portable = Run(P, shape, t, dm, n, hIdx, hx, hg, hDown, hUp, hDy);
        var fast = Run(D, shape, t, dm, n, hIdx, hx, hg, hDown, hUp, hDy, portable.Z);

        float[] fz = fast.Z, pz = portable.Z, fy = fast.Y, py = portable.Y, fdx = fast.Dx, pdx = portable.Dx;
        float[] fdg = fast.DG, pdg = portable.DG, fcd = fast.CoefDown, pcd = portable.CoefDown;
        // coefUp = g act(z) reads only z and g, computed by the same expression: identical bits.
        Assert.That(fast.CoefUp, Is.EqualTo(portable.CoefUp), "coefUp");

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
        RequireBody();
        const int t = 37, dm = 29, hk = 6, n = 17;
        var rng = new Random(5);
        var hIdx = Enumerable.Range(0, t * hk).Select(_ => rng.Next(n)).ToArray();
        float[] hx = GradCheck.Rand(t * dm, 1), hg = GradCheck.Rand(t * hk, 2), hDown = GradCheck.Rand(n * dm, 3), hUp = GradCheck.Rand(n * dm, 4),
            hDy = GradCheck.Rand(t * dm, 5);
        var shape = new ExpertShape(dm, hk, 0, n);
        var first = Run(D, shape, t, dm, n, hIdx, hx, hg, hDown, hUp, hDy);
        for (int r = 0; r < 3; r++)
            Assert.That(Run(D, shape, t, dm, n, hIdx, hx, hg, hDown, hUp, hDy), Is.EqualTo(first).Using<Outputs>(Same), $"run {r}");
    }

    internal static bool Same(Outputs a, Outputs b) =>
        a.Y.SequenceEqual(b.Y) && a.Z.SequenceEqual(b.Z) && a.Dx.SequenceEqual(b.Dx) && a.DG.SequenceEqual(b.DG)
        && a.CoefDown.SequenceEqual(b.CoefDown) && a.CoefUp.SequenceEqual(b.CoefUp);

    [Test]
    public void PublicOpRunsTheDevicesKernel()
    {
        // The op gives the SIMD body's bits on the CPU device and the portable kernel's on the PortableKernels device.
        RequireBody();
        const int t = 5, dm = 19, h = 2, k = 3, n = 9;
        var rng = new Random(9);
        var hIdx = Enumerable.Range(0, t * h * k).Select(_ => rng.Next(n)).ToArray();
        float[] hx = GradCheck.Rand(t * dm, 11, 3f), hg = GradCheck.Rand(t * h * k, 12), hDown = GradCheck.Rand(n * dm, 13), hUp = GradCheck.Rand(n * dm, 14);
        var shape = new ExpertShape(dm, h * k, 0, n);
        foreach (var d in new[] { D, P })
        {
            using var s = Scope.Begin();
            var y = Peer.Ops.PeerExperts(Tensor.FromArray(d, hx, t, dm), Tensor.FromArray(d, hIdx, t, h, k), Tensor.FromArray(d, hg, t, h, k),
                Tensor.FromArray(d, hDown, n, dm), Tensor.FromArray(d, hUp, n, dm));
            Assert.That(y.ToArray(), Is.EqualTo(Run(d, shape, t, dm, n, hIdx, hx, hg, hDown, hUp, new float[t * dm]).Y), d.Name);
        }
    }

    [Test]
    public void PublicOpWithoutSlotsOrWidthRunsOnTheBodies()
    {
        // h*k = 0 (no slots) and d = 0 (empty rows) reach the bodies with empty operands: they must read none of them.
        RequireBody();
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, GradCheck.Rand(12, 1), 4, 3);
        x.RequiresGrad = true;
        var y = Peer.Ops.PeerExperts(x, Tensor.FromArray(D, Array.Empty<int>(), 4, 2, 0), Tensor.Zeros(D, 4, 2, 0), Tensor.Zeros(D, 0, 3), Tensor.Zeros(D, 0, 3));
        Assert.That(y.ToArray(), Is.EqualTo(new float[12]));
        D.Tape.Backward(y, Tensor.FromArray(D, GradCheck.Rand(12, 2), 4, 3));
        Assert.That(x.Grad!.ToArray(), Is.EqualTo(new float[12]));

        var narrow = Tensor.Zeros(D, 4, 0);
        narrow.RequiresGrad = true;
        var weights = Tensor.FromArray(D, GradCheck.Rand(8, 3), 4, 2, 1);
        weights.RequiresGrad = true;
        var yn = Peer.Ops.PeerExperts(narrow, Tensor.FromArray(D, new[] { 0, 1, 1, 0, 0, 0, 1, 1 }, 4, 2, 1), weights, Tensor.Zeros(D, 2, 0), Tensor.Zeros(D, 2, 0));
        Assert.That(yn.Shape, Is.EqualTo(new[] { 4, 0 }));
        D.Tape.Backward(yn, Tensor.Zeros(D, 4, 0));
        Assert.That(narrow.Grad!.Shape, Is.EqualTo(new[] { 4, 0 }));
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
}
