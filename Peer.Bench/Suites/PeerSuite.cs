// The peer suite: a PEER layer's training step (forward, backward, lazy sparse optimizer step: AdamW, or for the
// tables the optimizer --sparse-optimizer names) at d = 256, h = 8, k = 16, T = 1024 tokens for N from 128^2 to
// 1024^2: tokens/s, peak device memory, and the step time against N beside
// the FLOPs-proportional line. Each N runs interleaved with the smallest N, so the time ratio that decides the
// goal, time(N) / time(N0) <= 1.25 * FLOPs(N) / FLOPs(N0), sees the same machine load on both.
namespace Peer.Bench;

internal sealed class PeerSuite : ISuite
{
    public string Name => "peer";
    public string Summary => "PEER layer forward, backward, optimizer step: tokens/s and peak memory against N";

    /// <summary>The layer's shape in each mode: (d, options without N, T, the N values).</summary>
    public static (int Dim, PeerOptions Options, int Tokens) Shape(BenchOptions o) => Sizes.Pick(o,
        (256, new PeerOptions { Heads = 8, TopK = 16, QueryDim = 128, Seed = 1 }, 1024),
        (256, new PeerOptions { Heads = 8, TopK = 16, QueryDim = 128, Seed = 1 }, 256),
        (64, new PeerOptions { Heads = 2, TopK = 4, QueryDim = 32, Seed = 1 }, 64));

    /// <summary>Bytes a runner needs at N with the tables' <paramref name="sparseOptimizer"/>: the two [N, d] tables and their state
    /// (AdamW's two moments: 6 N d floats in all; row-wise AdamW's first moment and one float per row; row-wise AdaGrad's one float per row), with a margin.</summary>
    public static long Estimate(int experts, int dim, string sparseOptimizer = "adamw") =>
        (long)(1.3 * 2 * 4.0 * experts * (sparseOptimizer switch { "rowwise-adagrad" => dim + 1, "rowwise-adamw" => 2 * dim + 1, _ => 3 * dim }));

    /// <summary>Memory the suites may plan on: the device's, or on the CPU half of the machine's (it is shared).</summary>
    public static long Budget(Device device) =>
        device.IsCpu ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2 : device.Accelerator.MemorySize * 9 / 10;

    public static double Flops(int experts, int dim, PeerOptions o, int tokens) => PeerBench.Flops(experts, dim, o.Heads, o.TopK, o.QueryDim, tokens);

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        var (dim, options, tokens) = Shape(o);
        int[] experts = Sizes.Pick<int[]>(o, [128 * 128, 256 * 256, 512 * 512, 1024 * 1024], [64 * 64, 256 * 256], [16 * 16, 32 * 32]);
        int repeats = Sizes.Repeats(o, 5, 2, 2), warmup = Sizes.Warmup(o);
        string sparse = o.SparseOptimizer;
        foreach (var (name, device) in run.Open)
        {
            var table = new Table("N", "forward ms", "backward ms", "optimizer ms", "step ms", "tokens/s", "peak memory", "FLOPs/N0", "time/N0");
            var points = new List<(int N, double TimeRatio, double FlopsRatio)>();
            int n0 = experts[0];
            using var reference = new PeerStepRunner(device, dim, options with { Experts = n0 }, tokens, naive: false, sparse);
            reference.Run(record: false);
            foreach (int n in experts)
            {
                if (Estimate(n, dim, sparse) + Estimate(n0, dim, sparse) > Budget(device))
                {
                    s.Notes.Add($"{name}: N = {Fmt.Experts(n)} skipped: it needs about {Fmt.Bytes(Estimate(n, dim, sparse))}, over the {Fmt.Bytes(Budget(device))} this run plans on.");
                    continue;
                }
                run.Log.WriteLine($"  {name} N = {Fmt.Experts(n)} ...");
                PeerStepRunner runner = n == n0 ? reference : new PeerStepRunner(device, dim, options with { Experts = n }, tokens, naive: false, sparse);
                try
                {
                    int from = reference.Total.Count;
                    for (int i = 0; i < warmup; i++) { if (runner != reference) reference.Run(false); runner.Run(false); }
                    for (int i = 0; i < repeats; i++) { if (runner != reference) reference.Run(); runner.Run(); }
                    var total = Stat.Of(runner.Total.Skip(runner == reference ? from : 0));
                    var refTotal = Stat.Of(reference.Total.Skip(from));
                    var f = Stat.Of(runner.Forward.Skip(runner == reference ? from : 0)).Scaled(1e3);
                    var b = Stat.Of(runner.Backward.Skip(runner == reference ? from : 0)).Scaled(1e3);
                    var st = Stat.Of(runner.Step.Skip(runner == reference ? from : 0)).Scaled(1e3);
                    var ms = total.Scaled(1e3);
                    var tps = total.Per(tokens);
                    double flopsRatio = Flops(n, dim, options, tokens) / Flops(n0, dim, options, tokens);
                    double timeRatio = total.Median / refTotal.Median;
                    table.Add(Fmt.Experts(n), f.Median, b.Median, st.Median, Fmt.Spread(ms.Median, ms.Min, ms.Max), tps.ToString(),
                        Fmt.Bytes(runner.PeakBytes), Fmt.Ratio(flopsRatio), Fmt.Ratio(timeRatio));
                    string label = $"N = {Fmt.Experts(n)}";
                    s.Add(new Measurement(name, label, "forward", "ms", f.Median, f.Min, f.Max));
                    s.Add(new Measurement(name, label, "backward", "ms", b.Median, b.Min, b.Max));
                    s.Add(new Measurement(name, label, "optimizer step", "ms", st.Median, st.Min, st.Max));
                    s.Add(new Measurement(name, label, "step", "ms", ms.Median, ms.Min, ms.Max) { Reference = refTotal.Median * 1e3, ReferenceName = $"step at N = {Fmt.Experts(n0)}, interleaved" });
                    s.Add(new Measurement(name, label, "training", "tokens/s", tps.Median, tps.Low, tps.High));
                    s.Add(new Measurement(name, label, "peak memory", "bytes", runner.PeakBytes));
                    s.Add(new Measurement(name, label, "transient memory (peak minus parameters and optimizer state)", "bytes", runner.TransientBytes));
                    s.Add(new Measurement(name, label, "FLOPs per step (forward + backward)", "FLOP", Flops(n, dim, options, tokens)));
                    points.Add((n, timeRatio, flopsRatio));
                    Profiles.Capture(run, s, device, $"{name}, PEER step, N = {Fmt.Experts(n)}", repeats, () => runner.Run(record: false));
                    if (n == experts[^1] && n != n0)
                    {
                        bool full = n0 == 128 * 128 && n == 1024 * 1024;
                        s.Goals.Add(new Goal(name, $"step time follows FLOPs: time({Fmt.Experts(n)}) / time({Fmt.Experts(n0)}){(full ? "" : " (reduced sizes of this mode; the goal is stated for 1024^2 / 128^2)")}",
                            $"<= 1.25 x FLOPs ratio = {1.25 * flopsRatio:F2}", timeRatio, timeRatio <= 1.25 * flopsRatio,
                            $"{timeRatio:F2} (step {ms.Median:F0} ms vs {refTotal.Median * 1e3:F0} ms interleaved; FLOPs ratio {flopsRatio:F2})"));
                    }
                }
                finally { if (runner != reference) runner.Dispose(); }
            }
            run.Show(s, $"{name}: d = {dim}, h = {options.Heads}, k = {options.TopK}, dq = {options.QueryDim}, T = {tokens} tokens, BatchNorm query, " +
                (sparse == "adamw" ? "AdamW (sparse rows for experts and keys)" : $"AdamW, {sparse} for the experts and keys (sparse rows)"), table);
            if (points.Count >= 2)
                s.Plots.Add(Plots.PeerScaling(o.Output, $"peer-step-vs-n-{name}.png", points, $"PEER step time against N, relative to N = {Fmt.Experts(n0)} ({name}, T = {tokens})"));
        }
        s.Notes.Add("Step = forward + backward + optimizer step, each ending with a device synchronisation. FLOPs/N0 counts forward and backward " +
            "(PeerBench.Flops: query projection, sub-key scores, k^2 candidates, experts; the retrieval backward only through the kept scores). " +
            "time/N0 is the median step at N over the median step at the smallest N, the two run alternately. Peak memory: the layer's parameters, " +
            "optimizer state, gradients and activations (the rise of device.PeakBytes during a step plus the layer's parameters and optimizer state).");
    }
}
