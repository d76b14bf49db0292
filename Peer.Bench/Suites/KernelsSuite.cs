// The kernels suite: matmul (GFLOP/s) and an elementwise op (GB/s) on each requested device, through the
// portable kernel and through the path Peer chooses on that device, beside plain-C# references run in the
// same process, interleaved with Peer's runs. Ratios compare Peer's chosen path with the best reference.
namespace Peer.Bench;

internal sealed class KernelsSuite : ISuite
{
    public string Name => "kernels";
    public string Summary => "matmul GFLOP/s and axpy GB/s per device vs plain-C# references";

    public void Run(BenchOptions o, Results results)
    {
        int[] sizes = o.Quick ? [256, 512] : [512, 1024];
        int repeats = o.Repeats > 0 ? o.Repeats : o.Quick ? 3 : 7, warmup = 2;
        int axpyN = o.Quick ? 1 << 22 : 1 << 24;
        var rng = new Random(1);
        float[] Rand(int n) { var v = new float[n]; for (int i = 0; i < n; i++) v[i] = (float)(rng.NextDouble() * 2 - 1); return v; }

        var mm = new Table("device", "op", "size", "portable GF/s", "chosen GF/s", "chosen path", "plain simple", "plain best", "chosen/best");
        var ew = new Table("device", "op", "size", "portable GB/s", "chosen GB/s", "plain SIMD GB/s", "chosen/plain");
        foreach (var (name, device, absent) in Timing.OpenDevices(o))
        {
            if (device is null)
            {
                results.Absent(name, absent!);
                Console.WriteLine($"{name}: absent ({absent})");
                mm.Add(name, "absent", "", null, null, null, null, null, null);
                continue;
            }
            using (device)
            using (Scope.Begin())
            {
                var path = Ops.ChoosePath(device);
                foreach (int s in sizes)
                {
                    var ha = Rand(s * s);
                    var hb = Rand(s * s);
                    var hc = new float[s * s];
                    var a = Tensor.FromArray(device, ha, s, s);
                    var b = Tensor.FromArray(device, hb, s, s);
                    var c = Tensor.Zeros(device, s, s);
                    double gflop = 2.0 * s * s * s / 1e9;
                    void Launch(Ops.MatMulPath p) { Ops.MatMulInto(a, b, c, false, false, 1, s, s, s, false, false, false, p); device.Synchronize(); }
                    // Validate the chosen path against the plain reference before timing it (as llm.c's kernel lab does).
                    Launch(path);
                    PlainMatMul.Best(ha, hb, hc, s, s, s);
                    var got = c.ToArray();
                    double err = 0;
                    for (int i = 0; i < got.Length; i++) err = Math.Max(err, Math.Abs(got[i] - hc[i]));
                    if (err > 1e-3) Console.WriteLine($"WARNING: {name} {path} matmul {s}: max |diff| vs plain reference {err}");
                    // The portable kernel is ~100x slower on the CPU accelerator: timed apart, with fewer runs.
                    int slowRuns = device.IsCpu ? (s > 512 ? 1 : 3) : repeats;
                    double portable = gflop / Timing.MedianSeconds(() => Launch(Ops.MatMulPath.Portable), 1, slowRuns);
                    var t = Timing.InterleavedMedians(warmup, repeats,
                        () => Launch(path),
                        () => PlainMatMul.Simple(ha, hb, hc, s, s, s),
                        () => PlainMatMul.Best(ha, hb, hc, s, s, s));
                    double chosen = gflop / t[0], simple = gflop / t[1], best = gflop / t[2];
                    mm.Add(name, "matmul", $"{s}^3", portable, chosen, path.ToString(), simple, best, $"{chosen / best:F2}x");
                    results.Add(new Measurement(name, $"matmul {s}^3", "portable", "GFLOP/s", portable, best, "plain best"));
                    results.Add(new Measurement(name, $"matmul {s}^3", path.ToString(), "GFLOP/s", chosen, best, "plain best"));
                    results.Add(new Measurement(name, $"matmul {s}^3", "plain simple (Vector<T> ikj)", "GFLOP/s", simple));
                    results.Add(new Measurement(name, $"matmul {s}^3", "plain best (Vector512 micro-kernel)", "GFLOP/s", best));
                }
                var hx = Rand(axpyN);
                var hy = Rand(axpyN);
                var x = Tensor.FromArray(device, hx);
                var y = Tensor.FromArray(device, hy);
                var portableKernels = device.Get(static d => new ElementwiseKernels(d));
                var w = device.Split(axpyN);
                double gb = 12.0 * axpyN / 1e9; // read x, read y, write y
                var e = Timing.InterleavedMedians(warmup, repeats,
                    () => { portableKernels.Axpy(w.Workers, w, y.View, x.View, 1e-3f); device.Synchronize(); },
                    () => { Ops.AddInPlace(y, x, 1e-3f); device.Synchronize(); },
                    () => PlainElementwise.Axpy(hy, hx, 1e-3f));
                AddElementwise(ew, results, name, device, "axpy y += a x", $"{axpyN}", gb / e[0], gb / e[1], gb / e[2]);

                // Bias add, as every Linear layer does: a [rows, n] + b [n] (row broadcast).
                int n = 1024, rows = axpyN / n;
                var hbias = Rand(n);
                var hout = new float[axpyN];
                var bias = Tensor.FromArray(device, hbias);
                var a2 = x.Reshape(rows, n);
                var sum = Tensor.Empty(device, DType.F32, rows, n);
                gb = 8.0 * axpyN / 1e9; // read a, write y (b stays in cache)
                e = Timing.InterleavedMedians(warmup, repeats,
                    () => { portableKernels.Add(w.Workers, w, a2.View, bias.View, sum.View, n, (int)Ops.Broadcast.Row); device.Synchronize(); },
                    () => { Ops.BinaryInto(a2, bias, sum, Ops.BinaryOp.Add, Ops.Broadcast.Row); device.Synchronize(); },
                    () => PlainElementwise.AddRow(hx, hbias, hout, rows, n));
                AddElementwise(ew, results, name, device, "add row-broadcast", $"[{rows}, {n}] + [{n}]", gb / e[0], gb / e[1], gb / e[2]);

                // The op as layers call it: Ops.Add allocates its output tensor (plain: a new array per call).
                gb = 12.0 * axpyN / 1e9;
                e = Timing.InterleavedMedians(warmup, repeats,
                    () => { Ops.Add(x, y).Dispose(); device.Synchronize(); },
                    () => PlainElementwise.AddNew(hx, hy));
                ew.Add(name, "Ops.Add, new output", $"{axpyN}", null, gb / e[0], gb / e[1], $"{e[1] / e[0]:F2}x");
                results.Add(new Measurement(name, $"Ops.Add new output {axpyN}", "Ops.Add", "GB/s", gb / e[0], gb / e[1], "plain SIMD, new array"));
            }
        }
        mm.Print(Console.Out);
        ew.Print(Console.Out);
        Console.WriteLine("Medians after warm-up, Peer and plain-C# runs interleaved; plain columns are host C# on this machine's cores.");
    }

    static void AddElementwise(Table t, Results results, string device, Device d, string op, string size, double portable, double chosen, double plain)
    {
        t.Add(device, op, size, portable, chosen, plain, $"{chosen / plain:F2}x");
        results.Add(new Measurement(device, $"{op} {size}", "portable", "GB/s", portable, plain, "plain SIMD"));
        results.Add(new Measurement(device, $"{op} {size}", d.IsCpu ? "CpuSimd" : "portable", "GB/s", chosen, plain, "plain SIMD"));
        results.Add(new Measurement(device, $"{op} {size}", "plain SIMD (Vector<T>)", "GB/s", plain));
    }
}
