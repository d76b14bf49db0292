// Part of the kernels suite: the lazy sparse step of each table optimizer (AdamW, row-wise AdaGrad, row-wise AdamW)
// over R listed rows of an [N, d] table, through the portable kernels and the path Peer chooses (the CPU bodies on the
// CPU accelerator), run interleaved in one process. GB/s counts each element's reads and writes once: AdamW reads
// g, p, m, v and writes p, m, v (28 bytes); row-wise AdaGrad reads g, p and writes p (12); row-wise AdamW reads g, p, m
// and writes p, m (20); the per-row state is left out.
namespace Peer.Bench;

internal static class OptimizerStepBench
{
    static readonly (string Name, int BytesPerElement, Func<IEnumerable<(string, Tensor)>, Optimizer> Create)[] Kinds =
    [
        ("AdamW sparse step", 28, p => new AdamW(p)),
        ("row-wise AdaGrad sparse step", 12, p => new RowWiseAdagrad(p)),
        ("row-wise AdamW sparse step", 20, p => new RowWiseAdamW(p)),
    ];

    public static void Run(BenchRun run, SuiteResults s, Table ew, string name, Device device, int warmup, int repeats)
    {
        var o = run.Options;
        var (n, d, r) = Sizes.Pick(o, (262144, 256, 65536), (65536, 256, 16384), (1024, 64, 256));
        var rng = new Random(4);
        int[] rows = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(r).Order().ToArray();
        float[] values = Enumerable.Range(0, r * d).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        // The portable kernels run on a twin of the CPU accelerator that loads no CPU body; other backends load them themselves.
        using var twin = device.IsCpu ? Device.Open("cpu", new DeviceOptions { PortableKernels = true }) : null;
        var pd = twin ?? device;
        foreach (var (op, bytes, create) in Kinds)
        {
            using var scope = Scope.Begin();
            var setups = new[] { pd, device }.Select(dev =>
            {
                var table = Ops.Normal(dev, 5, 0f, 0.1f, n, d);
                table.RequiresGrad = true;
                table.SparseGrad = new RowSparseGrad(Tensor.FromArray(dev, rows, r), Tensor.FromArray(dev, values, r, d));
                return (Device: dev, Optimizer: create([("t", table)]), Table: table);
            }).ToArray();
            try
            {
                double gb = (double)bytes * r * d / 1e9;
                var t = Timing.Interleaved(warmup, repeats,
                    () => { setups[0].Optimizer.Step(); setups[0].Device.Synchronize(); },
                    () => { setups[1].Optimizer.Step(); setups[1].Device.Synchronize(); });
                var portable = t[0].Per(gb);
                var chosen = t[1].Per(gb);
                var of = run.Results.OfCopy(name, chosen.Median);
                string size = $"{r} of [{n}, {d}]";
                ew.Add(name, op, size, portable.ToString(), chosen.ToString(), "GB/s", null, null, Fmt.Percent(of));
                s.Add(new Measurement(name, $"{op} {size}", "portable", "GB/s", portable.Median, portable.Low, portable.High));
                s.Add(new Measurement(name, $"{op} {size}", device.IsCpu ? "cpu body" : "portable", "GB/s", chosen.Median, chosen.Low, chosen.High)
                    { Reference = portable.Median, ReferenceName = "portable", OfCeiling = of });
            }
            finally
            {
                foreach (var x in setups) x.Optimizer.Dispose(); // the tables and their gradients go with the scope
            }
        }
    }
}
