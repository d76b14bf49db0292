// The kernels suite: matmul (GFLOP/s) and axpy (GB/s) through the portable kernel and the path Peer chooses on
// each device, beside plain-C# references run interleaved in the same process (the bench's goal: on the CPU
// accelerator at least 0.5x of the vectorised reference) and, for matmul, OpenBLAS's sgemm as the machine's
// ceiling when it is installed; softmax and layer norm (GB/s, one read and one write of the rows) and causal
// attention (GFLOP/s), forward, as fractions of the device's ceilings; the table optimizers' sparse steps, portable
// and chosen (OptimizerStepBench); and the fixed cost of a launch (a kernel over one element) and of an op with a
// fresh output, in µs, which bounds small models' steps; the fused chains against the unfused ops (FusedChainsBench). The
// references are checked first.
namespace Peer.Bench;

internal sealed class KernelsSuite : ISuite
{
    public string Name => "kernels";
    public string Summary => "matmul, axpy, bias add, softmax, layer norm, attention, table optimizer steps, fused chains per device; matmul and elementwise vs plain-C# references, matmul vs OpenBLAS sgemm";

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        int[] sizes = Sizes.Pick<int[]>(o, [512, 1024], [256], [128]);
        int repeats = Sizes.Repeats(o), warmup = Sizes.Warmup(o);
        int axpyN = Sizes.Pick(o, 1 << 24, 1 << 22, 1 << 18);
        int rows = Sizes.Pick(o, 4096, 1024, 128), cols = Sizes.Pick(o, 1024, 1024, 256);
        int heads = 4, seq = Sizes.Pick(o, 512, 256, 64), headDim = 64;
        var mm = new Table("device", "size", "portable GF/s", "chosen GF/s", "path", "plain simple GF/s", "OpenBLAS GF/s", "chosen/OpenBLAS", "of ceiling");
        ReferenceCheck.Run(s);
        run.Log.WriteLine($"OpenBLAS: {OpenBlas.Describe()}");
        var ew = new Table("device", "op", "shape", "portable", "Peer (chosen)", "unit", "plain SIMD", "Peer/plain", "of ceiling");
        var fixedCosts = new Table("device", "what", "us per call", "plain C# us per call");
        var fusedChains = new Table("device", "chain", "shape", "fused ms", "unfused ms", "unfused/fused");
        foreach (var (name, device) in run.Open)
        {
            string path = MatMulBench.ChosenName(device);
            foreach (int size in sizes)
            {
                using var m = new MatMulBench(device, size);
                double err = m.Validate();
                if (err > 1e-3 * Math.Sqrt(size)) s.Notes.Add($"WARNING: {name} {path} matmul {size}^3 differs from double-precision host dot products by {err}.");
                // The portable kernel is ~30x slower on the CPU accelerator: timed apart, with fewer runs.
                int slowRuns = device.IsCpu ? Math.Min(repeats, size > 512 ? 1 : 3) : repeats;
                var portable = Timing.Measure(m.LaunchPortable, device.IsCpu ? 0 : warmup, slowRuns).Per(m.GigaFlop);
                var runs = new List<Action> { m.Launch, () => PlainMatMul.Simple(m.A, m.B, m.C, size, size, size) };
                if (OpenBlas.Present) runs.Add(() => OpenBlas.Sgemm(m.A, m.B, m.C, size, size, size));
                var t = Timing.Interleaved(warmup, repeats, runs.ToArray());
                var chosen = t[0].Per(m.GigaFlop);
                var simple = t[1].Per(m.GigaFlop);
                Rate? blas = null;
                if (OpenBlas.Present)
                {
                    blas = t[2].Per(m.GigaFlop);
                    double blasErr = m.HostError(m.C); // C holds OpenBLAS's product: it ran last
                    if (!(blasErr <= 1e-3 * Math.Sqrt(size)))
                        throw new BenchCheckException($"OpenBLAS sgemm {size}^3 differs from double-precision host dot products by {blasErr:G3}");
                }
                var (refValue, refName) = blas is { } ceiling ? (ceiling.Median, "OpenBLAS sgemm") : (simple.Median, "plain simple");
                var of = run.Results.OfMatMul(name, chosen.Median);
                mm.Add(name, $"{size}^3", portable.ToString(), chosen.ToString(), path, simple.ToString(), blas?.ToString() ?? "absent",
                    blas is null ? "absent" : Fmt.Ratio(chosen.Median / refValue), Fmt.Percent(of));
                string op = $"matmul {size}^3";
                s.Add(new Measurement(name, op, "portable", "GFLOP/s", portable.Median, portable.Low, portable.High) { Reference = refValue, ReferenceName = refName });
                s.Add(new Measurement(name, op, path, "GFLOP/s", chosen.Median, chosen.Low, chosen.High) { Reference = refValue, ReferenceName = refName, OfCeiling = of });
                s.Add(new Measurement(name, op, "plain simple (Vector<T> ikj)", "GFLOP/s", simple.Median, simple.Low, simple.High));
                if (blas is { } bl) s.Add(new Measurement(name, op, "OpenBLAS sgemm", "GFLOP/s", bl.Median, bl.Low, bl.High));
                if (device.IsCpu && size == sizes[^1])
                    s.Goals.Add(new Goal(name, $"matmul {size}^3 on the CPU accelerator vs the plain-C# vectorised reference", ">= 0.5x",
                        chosen.Median / simple.Median, chosen.Median / simple.Median >= 0.5, $"{chosen.Median:F1} vs {simple.Median:F1} GFLOP/s = {chosen.Median / simple.Median:F2}x"));
            }
            Elementwise(run, s, ew, name, device, axpyN, warmup, repeats);
            RowOps(run, s, ew, name, device, rows, cols, warmup, repeats);
            Attention(run, s, ew, name, device, heads, seq, headDim, warmup, repeats);
            LaunchCost(s, fixedCosts, name, device, warmup, repeats);
            OptimizerStepBench.Run(run, s, ew, name, device, warmup, repeats);
            FusedChainsBench.Run(s, fusedChains, name, device, warmup, repeats);
        }
        run.Show(s, "matmul C = A B (row-major, fp32)", mm);
        run.Show(s, "memory-bound ops and attention (forward)", ew);
        run.Show(s, "fused chains against the unfused ops, forward + backward (ms per chain, interleaved)", fusedChains);
        run.Show(s, "fixed costs: a launch of a kernel over one element, and an op that allocates its one-element output (µs per call, median of batches of 200)", fixedCosts);
        s.Notes.Add($"OpenBLAS (the machine's matmul ceiling, an implementation independent of Peer): {OpenBlas.Describe()}.");
        s.Notes.Add("Peer, plain-C# and OpenBLAS runs interleaved; plain and OpenBLAS columns are host code on this machine's cores. Softmax and layer norm count one read " +
            "and one write of the rows; attention counts 2 * 2 * T * T * Dh / 2 FLOPs per head (QK^T and PV, causal half).");
    }

    static void Elementwise(BenchRun run, SuiteResults s, Table ew, string name, Device device, int n, int warmup, int repeats)
    {
        var rng = new Random(2);
        var hx = new float[n];
        var hy = new float[n];
        for (int i = 0; i < n; i++) { hx[i] = (float)rng.NextDouble(); hy[i] = (float)rng.NextDouble(); }
        // The portable kernels run on a twin of the CPU accelerator that loads no CPU body (DeviceOptions.PortableKernels);
        // other backends load the portable kernels themselves.
        using var twin = device.IsCpu ? Device.Open("cpu", new DeviceOptions { PortableKernels = true }) : null;
        var pd = twin ?? device;
        using var scope = Scope.Begin();
        var x = Tensor.FromArray(device, hx);
        var y = Tensor.FromArray(device, hy);
        var (px, py) = (Tensor.FromArray(pd, hx), Tensor.FromArray(pd, hy));
        var portableKernels = pd.Get(static d => new ElementwiseKernels(d));
        var w = device.Split(n);
        double gb = 12.0 * n / 1e9; // read x, read y, write y
        var t = Timing.Interleaved(warmup, repeats,
            () => { portableKernels.Axpy(w.Workers, w, py.View, px.View, 1e-3f); pd.Synchronize(); },
            () => { Ops.AddInPlace(y, x, 1e-3f); device.Synchronize(); },
            () => PlainElementwise.Axpy(hy, hx, 1e-3f));
        var chosen = AddElementwise(run, s, ew, name, device, "axpy y += a x", $"{n}", t[0].Per(gb), t[1].Per(gb), t[2].Per(gb));
        if (device.IsCpu)
            s.Goals.Add(new Goal(name, $"axpy {n} on the CPU accelerator vs the plain-C# vectorised reference", ">= 0.5x",
                chosen.Ratio, chosen.Ratio >= 0.5, $"{chosen.Peer:F2} vs {chosen.Plain:F2} GB/s = {chosen.Ratio:F2}x"));

        // Bias add, as every Linear layer does: a [rows, cols] + b [cols] (row broadcast).
        int cols = 1024, rows = n / cols;
        var hbias = new float[cols];
        for (int i = 0; i < cols; i++) hbias[i] = (float)rng.NextDouble();
        var hout = new float[rows * cols];
        var bias = Tensor.FromArray(device, hbias);
        var a2 = x.Reshape(rows, cols);
        var sum = Tensor.Empty(device, DType.F32, rows, cols);
        var (pbias, pa2, psum) = (Tensor.FromArray(pd, hbias), px.Reshape(rows, cols), Tensor.Empty(pd, DType.F32, rows, cols));
        gb = 8.0 * rows * cols / 1e9; // read a, write the sum (b stays in cache)
        t = Timing.Interleaved(warmup, repeats,
            () => { portableKernels.Add(w.Workers, w, pa2.View, pbias.View, psum.View, cols, (int)Ops.Broadcast.Row); pd.Synchronize(); },
            () => { Ops.BinaryInto(a2, bias, sum, Ops.BinaryOp.Add, Ops.Broadcast.Row); device.Synchronize(); },
            () => PlainElementwise.AddRow(hx, hbias, hout, rows, cols));
        AddElementwise(run, s, ew, name, device, "add row-broadcast", $"[{rows}, {cols}] + [{cols}]", t[0].Per(gb), t[1].Per(gb), t[2].Per(gb));

        // The op as layers call it: Ops.Add allocates its output tensor (plain: a new array per call).
        gb = 12.0 * n / 1e9;
        t = Timing.Interleaved(warmup, repeats,
            () => { Ops.Add(x, y).Dispose(); device.Synchronize(); },
            () => PlainElementwise.AddNew(hx, hy));
        var peer = t[0].Per(gb);
        var plain = t[1].Per(gb);
        ew.Add(name, "Ops.Add, new output", $"{n}", null, peer.ToString(), "GB/s", plain.ToString(), Fmt.Ratio(peer.Median / plain.Median), Fmt.Percent(run.Results.OfCopy(name, peer.Median)));
        s.Add(new Measurement(name, $"Ops.Add new output {n}", "Ops.Add", "GB/s", peer.Median, peer.Low, peer.High) { Reference = plain.Median, ReferenceName = "plain SIMD, new array" });
        s.Add(new Measurement(name, $"Ops.Add new output {n}", "plain SIMD, new array", "GB/s", plain.Median, plain.Low, plain.High));
    }

    static (double Peer, double Plain, double Ratio) AddElementwise(BenchRun run, SuiteResults s, Table ew, string name, Device device, string op, string size,
        Rate portable, Rate chosen, Rate plain)
    {
        var of = run.Results.OfCopy(name, chosen.Median);
        ew.Add(name, op, size, portable.ToString(), chosen.ToString(), "GB/s", plain.ToString(), Fmt.Ratio(chosen.Median / plain.Median), Fmt.Percent(of));
        s.Add(new Measurement(name, $"{op} {size}", "portable", "GB/s", portable.Median, portable.Low, portable.High) { Reference = plain.Median, ReferenceName = "plain SIMD" });
        s.Add(new Measurement(name, $"{op} {size}", device.IsCpu ? "cpu body" : "portable", "GB/s", chosen.Median, chosen.Low, chosen.High) { Reference = plain.Median, ReferenceName = "plain SIMD", OfCeiling = of });
        s.Add(new Measurement(name, $"{op} {size}", "plain SIMD (Vector<T>)", "GB/s", plain.Median, plain.Low, plain.High));
        return (chosen.Median, plain.Median, chosen.Median / plain.Median);
    }

    static void RowOps(BenchRun run, SuiteResults s, Table ew, string name, Device device, int rows, int cols, int warmup, int repeats)
    {
        using var scope = Scope.Begin();
        var x = Ops.Normal(device, 3, 0f, 1f, rows, cols);
        var w = Tensor.Full(device, 1f, cols);
        var b = Tensor.Zeros(device, cols);
        double gb = 8.0 * rows * cols / 1e9;
        var t = Timing.Interleaved(warmup, repeats,
            () => { using (Scope.Begin()) { Ops.Softmax(x); device.Synchronize(); } },
            () => { using (Scope.Begin()) { Ops.LayerNorm(x, w, b); device.Synchronize(); } });
        foreach (var (op, stat) in new[] { ("softmax", t[0]), ("layer norm", t[1]) })
        {
            var r = stat.Per(gb);
            var of = run.Results.OfCopy(name, r.Median);
            ew.Add(name, op, $"[{rows}, {cols}]", null, r.ToString(), "GB/s", null, null, Fmt.Percent(of));
            s.Add(new Measurement(name, $"{op} [{rows}, {cols}]", "forward", "GB/s", r.Median, r.Low, r.High) { OfCeiling = of });
        }
    }

    // A kernel over one element (Fill, one index): what every launch pays whatever its work. Ops.Scale on one element: the
    // launch plus what an op adds (checks, a fresh output tensor, its disposal). Plain C#: the same one-element work
    // through a delegate call, interleaved.
    static void LaunchCost(SuiteResults s, Table table, string name, Device device, int warmup, int repeats)
    {
        const int batch = 200;
        using var scope = Scope.Begin();
        var one = Tensor.Zeros(device, 1);
        var k = device.Get(static d => new ElementwiseKernels(d));
        var w = device.Split(1);
        var host = new float[1];
        Action<float[], float> plainFill = static (h, v) => h[0] = v;
        var t = Timing.Interleaved(warmup, repeats,
            () => { for (int i = 0; i < batch; i++) k.Fill(w.Workers, w, one.View, i); device.Synchronize(); },
            () => { for (int i = 0; i < batch; i++) Ops.Scale(one, 2f).Dispose(); device.Synchronize(); },
            () => { for (int i = 0; i < batch; i++) plainFill(host, i); });
        var launch = t[0].Scaled(1e6 / batch);
        var op = t[1].Scaled(1e6 / batch);
        var plain = t[2].Scaled(1e6 / batch);
        table.Add(name, "kernel launch (Fill, 1 element)", Fmt.Spread(launch.Median, launch.Min, launch.Max), Fmt.Spread(plain.Median, plain.Min, plain.Max));
        table.Add(name, "op with a new output (Ops.Scale, 1 element)", Fmt.Spread(op.Median, op.Min, op.Max), null);
        s.Add(new Measurement(name, "launch fixed cost", "kernel over 1 element", "us", launch.Median, launch.Min, launch.Max) { Reference = plain.Median, ReferenceName = "plain C# delegate call" });
        s.Add(new Measurement(name, "launch fixed cost", "op with a new 1-element output", "us", op.Median, op.Min, op.Max));
        s.Add(new Measurement(name, "launch fixed cost", "plain C# delegate call", "us", Math.Max(plain.Median, 1e-6), Math.Max(plain.Min, 1e-6), Math.Max(plain.Max, 1e-6)));
    }

    static void Attention(BenchRun run, SuiteResults s, Table ew, string name, Device device, int heads, int seq, int dh, int warmup, int repeats)
    {
        using var scope = Scope.Begin();
        var q = Ops.Normal(device, 4, 0f, 1f, 1, heads, seq, dh);
        var k = Ops.Normal(device, 5, 0f, 1f, 1, heads, seq, dh);
        var v = Ops.Normal(device, 6, 0f, 1f, 1, heads, seq, dh);
        double gflop = 2.0 * heads * seq * (double)seq * dh / 1e9;
        var r = Timing.Measure(() => { using (Scope.Begin()) { Ops.CausalAttention(q, k, v); device.Synchronize(); } }, warmup, repeats).Per(gflop);
        var of = run.Results.OfMatMul(name, r.Median);
        ew.Add(name, "causal attention", $"[1, {heads}, {seq}, {dh}]", null, r.ToString(), "GFLOP/s", null, null, Fmt.Percent(of));
        s.Add(new Measurement(name, $"causal attention [1, {heads}, {seq}, {dh}]", "forward", "GFLOP/s", r.Median, r.Low, r.High) { OfCeiling = of });
    }
}
