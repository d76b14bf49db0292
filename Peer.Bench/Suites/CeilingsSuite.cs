// The ceilings suite: what each device can do at best, measured in the same run, so later figures can be shown
// as a fraction of them: device memory copy (GB/s, bytes read + written) beside a host memcpy of the same size,
// and the best matmul GFLOP/s over a few square sizes through the path Peer chooses on that device.
namespace Peer.Bench;

internal sealed class CeilingsSuite : ISuite
{
    public string Name => "ceilings";
    public string Summary => "device memory copy GB/s and best matmul GFLOP/s (later figures are shown as fractions of them)";

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        int n = Sizes.Pick(o, 1 << 25, 1 << 23, 1 << 20);
        int[] sizes = Sizes.Pick<int[]>(o, [256, 512, 1024], [256, 512], [128]);
        int repeats = Sizes.Repeats(o), warmup = Sizes.Warmup(o);
        var table = new Table("device", "copy floats", "copy GB/s", "host memcpy GB/s", "best matmul GFLOP/s", "at size");
        foreach (var (name, device) in run.Open)
        {
            Rate copy, host;
            using (Scope.Begin())
            {
                var a = Ops.Normal(device, 1, 0f, 1f, n);
                var b = Tensor.Zeros(device, n);
                var ha = new float[n];
                var hb = new float[n];
                double gb = 8.0 * n / 1e9;
                var t = Timing.Interleaved(warmup, repeats,
                    () => { b.View.CopyFrom(a.View); device.Synchronize(); },
                    () => ha.AsSpan().CopyTo(hb));
                copy = t[0].Per(gb);
                host = t[1].Per(gb);
            }
            s.Add(new Measurement(name, $"copy {n} floats", "device copy", "GB/s", copy.Median, copy.Low, copy.High) { Reference = host.Median, ReferenceName = "host memcpy" });
            s.Add(new Measurement(name, $"copy {n} floats", "host memcpy", "GB/s", host.Median, host.Low, host.High));
            Rate best = new(0, 0, 0);
            int bestSize = 0;
            foreach (int size in sizes)
            {
                var r = MatMulBench.Chosen(device, size, warmup, repeats);
                s.Add(new Measurement(name, $"matmul {size}^3", MatMulBench.ChosenName(device), "GFLOP/s", r.Median, r.Low, r.High));
                if (r.Median > best.Median) { best = r; bestSize = size; }
            }
            s.Add(new Measurement(name, "best matmul", $"{bestSize}^3", "GFLOP/s", best.Median, best.Low, best.High));
            table.Add(name, n, copy.ToString(), host.ToString(), best.ToString(), $"{bestSize}^3");
            // On the CPU accelerator device memory is host memory: the better of the two copies is its ceiling.
            run.Results.SetCeilings(name, device.IsCpu ? Math.Max(copy.Median, host.Median) : copy.Median, best.Median);
        }
        run.Show(s, "", table);
        s.Notes.Add("Copy GB/s counts bytes read plus bytes written; on the CPU accelerator the copy ceiling is the better of the device copy and the host " +
            "memcpy (the same memory). Fractions above 100 % mean the data partly fit in cache. The best matmul is the highest median over the sizes " +
            $"{string.Join(", ", sizes.Select(x => x + "^3"))}, through the path Peer chooses on the device.");
    }
}
