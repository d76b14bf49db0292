// The kernels suite: matmul (GFLOP/s) and an elementwise op (GB/s) on each requested device, through the
// portable kernel and through the path Peer chooses on that device, beside plain-C# references run in the
// same process. Ratios compare Peer's chosen path with the best plain-C# reference.
namespace Peer.Bench;

internal sealed class KernelsSuite : ISuite
{
    public string Name => "kernels";
    public string Summary => "matmul GFLOP/s and axpy GB/s per device vs plain-C# references";

    public void Run(BenchOptions o, Results results)
    {
        int[] sizes = o.Quick ? [256, 512] : [512, 1024];
        int repeats = o.Quick ? 3 : 7, warmup = 2;
        int axpyN = o.Quick ? 1 << 22 : 1 << 24;
        var rng = new Random(1);
        float[] Rand(int n) { var v = new float[n]; for (int i = 0; i < n; i++) v[i] = (float)(rng.NextDouble() * 2 - 1); return v; }

        // Plain-C# references (host; the same for every device row).
        var host = new Dictionary<int, (float[] A, float[] B, double Simple, double Best, float[] C)>();
        foreach (int s in sizes)
        {
            var a = Rand(s * s);
            var b = Rand(s * s);
            var c = new float[s * s];
            double flop = 2.0 * s * s * s;
            double simple = flop / Timing.MedianSeconds(() => PlainMatMul.Simple(a, b, c, s, s, s), warmup, Math.Min(repeats, 3)) / 1e9;
            double best = flop / Timing.MedianSeconds(() => PlainMatMul.Best(a, b, c, s, s, s), warmup, repeats) / 1e9;
            host[s] = (a, b, simple, best, (float[])c.Clone());
        }
        var hx = Rand(axpyN);
        var hy = Rand(axpyN);
        double axpyBytes = 12.0 * axpyN; // read x, read y, write y
        double plainAxpy = axpyBytes / Timing.MedianSeconds(() => PlainElementwise.Axpy(hy, hx, 1e-3f), warmup, repeats) / 1e9;

        var mm = new Table("device", "op", "size", "portable GF/s", "chosen GF/s", "chosen path", "plain simple", "plain best", "chosen/best");
        var ew = new Table("device", "op", "n", "Peer GB/s", "plain SIMD GB/s", "Peer/plain");
        foreach (var (name, device, absent) in Timing.OpenDevices(o))
        {
            if (device is null)
            {
                results.Absent(name, absent!);
                mm.Add(name, "absent", "", null, null, absent!.Length > 60 ? absent[..60] + "..." : absent, null, null, null);
                continue;
            }
            using (device)
            using (Scope.Begin())
            {
                var path = Ops.ChoosePath(device);
                foreach (int s in sizes)
                {
                    var (ha, hb, simple, best, hc) = host[s];
                    var a = Tensor.FromArray(device, ha, s, s);
                    var b = Tensor.FromArray(device, hb, s, s);
                    var c = Tensor.Zeros(device, s, s);
                    double flop = 2.0 * s * s * s;
                    void Launch(Ops.MatMulPath p) { Ops.MatMulInto(a, b, c, false, false, 1, s, s, s, false, false, false, p); device.Synchronize(); }
                    // Validate the chosen path against the plain reference before timing it (as llm.c's kernel lab does).
                    Launch(path);
                    var got = c.ToArray();
                    double err = 0;
                    for (int i = 0; i < got.Length; i++) err = Math.Max(err, Math.Abs(got[i] - hc[i]));
                    if (err > 1e-3) Console.WriteLine($"WARNING: {name} {path} matmul {s}: max |diff| vs plain reference {err}");
                    // The portable kernel is ~30x slower on the CPU accelerator: fewer runs there.
                    bool slow = device.IsCpu;
                    double portable = flop / Timing.MedianSeconds(() => Launch(Ops.MatMulPath.Portable), slow ? 1 : warmup, slow ? 3 : repeats) / 1e9;
                    double chosen = flop / Timing.MedianSeconds(() => Launch(path), warmup, repeats) / 1e9;
                    mm.Add(name, "matmul", $"{s}^3", portable, chosen, path.ToString(), simple, best, $"{chosen / best:F2}x");
                    results.Add(new Measurement(name, $"matmul {s}^3", "portable", "GFLOP/s", portable, best, "plain best"));
                    results.Add(new Measurement(name, $"matmul {s}^3", path.ToString(), "GFLOP/s", chosen, best, "plain best"));
                    results.Add(new Measurement("host", $"matmul {s}^3", "plain simple (Vector<T> ikj)", "GFLOP/s", simple));
                    results.Add(new Measurement("host", $"matmul {s}^3", "plain best (Vector512 micro-kernel)", "GFLOP/s", best));
                }
                var x = Tensor.FromArray(device, hx);
                var y = Tensor.FromArray(device, hy);
                double peer = axpyBytes / Timing.MedianSeconds(() => { Ops.AddInPlace(y, x, 1e-3f); device.Synchronize(); }, warmup, repeats) / 1e9;
                ew.Add(name, "axpy y += a x", axpyN, peer, plainAxpy, $"{peer / plainAxpy:F2}x");
                results.Add(new Measurement(name, $"axpy {axpyN}", "AddInPlace", "GB/s", peer, plainAxpy, "plain SIMD"));
            }
        }
        mm.Print(Console.Out);
        ew.Print(Console.Out);
        Console.WriteLine("Medians after warm-up; plain columns are host C# on this machine's cores. On a shared machine expect noise of 2x.");
    }
}
