// The ablation suite: the same PEER layer (same options, same initialisation) computed the way public
// implementations do (NaivePeer: expert rows gathered into [T, h*k, d] tensors, dense [N, d] gradients, dense
// AdamW over the whole tables) against PeerLayer's fused kernels with row-sparse gradients and the lazy step,
// run alternately. Goal: fused/sparse at least 3x faster at N = 256^2, the ratio growing with N, at no
// more than a third of the peak memory. Before timing, the two designs' outputs are compared on one batch, and
// outputs and expert gradients on a small layer (NaivePeerCheck).
namespace Peer.Bench;

internal sealed class AblationSuite : ISuite
{
    public string Name => "ablation";
    public string Summary => "fused kernels + sparse AdamW vs gathered [T, h, k, d] tensors + dense AdamW (public implementations' design)";

    /// <summary>Bytes both designs at N need together: the two layers with AdamW state, the naive dense gradients, the gathered rows.</summary>
    static long Estimate(int experts, int dim, PeerOptions o, int tokens) =>
        2 * PeerSuite.Estimate(experts, dim) + (long)(1.3 * 4.0 * (2L * experts * dim + 6L * tokens * o.Heads * o.TopK * dim));

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        var (dim, options, tokens) = PeerSuite.Shape(o);
        int[] experts = Sizes.Pick<int[]>(o, [256 * 256, 512 * 512, 1024 * 1024], [64 * 64, 128 * 128], [16 * 16, 32 * 32]);
        int repeats = Sizes.Repeats(o, 5, 2, 2), warmup = Sizes.Warmup(o);
        foreach (var (name, device) in run.Open)
        {
            var (checkY, checkGrad) = NaivePeerCheck.Run(device);
            s.Add(new Measurement(name, "naive vs fused check (N = 64, d = 16)", "max |y diff|", "abs", checkY));
            s.Add(new Measurement(name, "naive vs fused check (N = 64, d = 16)", "max |d experts.down diff|", "abs", checkGrad));
            var table = new Table("N", "fused step ms", "naive step ms", "speed-up", "fused optimizer ms", "naive optimizer ms", "fused peak", "naive peak", "peak ratio", "transient ratio", "max abs y diff");
            var points = new List<(int N, double Fused, double Naive, long FusedPeak, long NaivePeak)>();
            double? firstSpeedup = null;
            foreach (int n in experts)
            {
                if (Estimate(n, dim, options, tokens) > PeerSuite.Budget(device))
                {
                    s.Notes.Add($"{name}: N = {Fmt.Experts(n)} skipped: both designs together need about {Fmt.Bytes(Estimate(n, dim, options, tokens))}, " +
                        $"over the {Fmt.Bytes(PeerSuite.Budget(device))} this run plans on.");
                    continue;
                }
                run.Log.WriteLine($"  {name} N = {Fmt.Experts(n)} ...");
                var opts = options with { Experts = n };
                using var fused = new PeerStepRunner(device, dim, opts, tokens, naive: false);
                using var naive = new PeerStepRunner(device, dim, opts, tokens, naive: true);
                double diff = MaxDiff(device, fused.Layer, tokens);
                for (int i = 0; i < warmup; i++) { fused.Run(false); naive.Run(false); }
                for (int i = 0; i < repeats; i++) { fused.Run(); naive.Run(); }
                var f = Stat.Of(fused.Total).Scaled(1e3);
                var nv = Stat.Of(naive.Total).Scaled(1e3);
                var fo = Stat.Of(fused.Step).Scaled(1e3);
                var no = Stat.Of(naive.Step).Scaled(1e3);
                double speedup = nv.Median / f.Median, memory = (double)fused.PeakBytes / naive.PeakBytes;
                double transient = (double)fused.TransientBytes / naive.TransientBytes;
                table.Add(Fmt.Experts(n), Fmt.Spread(f.Median, f.Min, f.Max), Fmt.Spread(nv.Median, nv.Min, nv.Max), Fmt.Ratio(speedup),
                    fo.Median, no.Median, Fmt.Bytes(fused.PeakBytes), Fmt.Bytes(naive.PeakBytes), $"{memory:F2}", $"{transient:F2}", diff.ToString("G2"));
                string label = $"N = {Fmt.Experts(n)}";
                s.Add(new Measurement(name, label, "fused + sparse AdamW step", "ms", f.Median, f.Min, f.Max) { Reference = nv.Median, ReferenceName = "naive + dense AdamW step" });
                s.Add(new Measurement(name, label, "naive + dense AdamW step", "ms", nv.Median, nv.Min, nv.Max));
                s.Add(new Measurement(name, label, "fused optimizer step", "ms", fo.Median, fo.Min, fo.Max));
                s.Add(new Measurement(name, label, "naive optimizer step", "ms", no.Median, no.Min, no.Max));
                s.Add(new Measurement(name, label, "speed-up (naive / fused)", "x", speedup));
                s.Add(new Measurement(name, label, "fused peak memory", "bytes", fused.PeakBytes) { Reference = naive.PeakBytes, ReferenceName = "naive peak memory" });
                s.Add(new Measurement(name, label, "naive peak memory", "bytes", naive.PeakBytes));
                s.Add(new Measurement(name, label, "fused transient memory", "bytes", fused.TransientBytes) { Reference = naive.TransientBytes, ReferenceName = "naive transient memory" });
                s.Add(new Measurement(name, label, "naive transient memory", "bytes", naive.TransientBytes));
                s.Add(new Measurement(name, label, "parameters + AdamW state (each design)", "bytes", fused.PersistentBytes));
                s.Add(new Measurement(name, label, "max |y fused - y naive|", "abs", diff));
                points.Add((n, f.Median, nv.Median, fused.PeakBytes, naive.PeakBytes));
                bool paperSize = n >= 256 * 256;
                string reduced = paperSize ? "" : " (reduced size of this mode; the goal is stated for N >= 256^2)";
                if (firstSpeedup is null)
                    s.Goals.Add(new Goal(name, $"fused/sparse speed-up at N = {Fmt.Experts(n)}{reduced}", ">= 3x", speedup, speedup >= 3,
                        $"{speedup:F2}x ({f.Median:F0} ms vs {nv.Median:F0} ms)"));
                else
                    s.Goals.Add(new Goal(name, $"speed-up grows with N: N = {Fmt.Experts(n)} vs N = {Fmt.Experts(experts[0])}{reduced}", $"> {firstSpeedup:F2}x",
                        speedup, speedup > firstSpeedup, $"{speedup:F2}x"));
                s.Goals.Add(new Goal(name, $"fused/sparse peak memory at N = {Fmt.Experts(n)}{reduced}", "<= 1/3 of naive", memory, memory <= 1.0 / 3,
                    $"{memory:F2} ({Fmt.Bytes(fused.PeakBytes)} vs {Fmt.Bytes(naive.PeakBytes)}, of which parameters + AdamW state {Fmt.Bytes(fused.PersistentBytes)} in each; " +
                    $"transient memory alone {transient:F2}: {Fmt.Bytes(fused.TransientBytes)} vs {Fmt.Bytes(naive.TransientBytes)})"));
                firstSpeedup ??= speedup;
            }
            run.Show(s, $"{name}: d = {dim}, h = {options.Heads}, k = {options.TopK}, dq = {options.QueryDim}, T = {tokens}; step = forward + backward + AdamW", table);
            if (points.Count > 0)
                s.Plots.Add(Plots.Ablation(o.Output, $"ablation-{name}.png", points, $"PEER: fused + sparse vs gathered + dense ({name}, T = {tokens})"));
        }
        s.Notes.Add("Both designs share the retrieval (query, BatchNorm, product-key top-k, router softmax) and start from the same initialisation. " +
            "Naive: Ops.Embedding with dense gradients gathers experts.down/up rows into [T, h*k, d], batched matmuls do the dot products and the " +
            "weighted sum, AdamW then steps the whole [N, d] tables densely. Peak memory includes parameters and AdamW state (the same in both), " +
            "gradients and activations; transient = peak minus parameters and AdamW state (gradients, activations, scratch). max abs y diff compares the two designs' outputs on one batch before timing.");
    }

    /// <summary>Max |fused - naive| of the outputs of one layer on one random batch (no gradients recorded).</summary>
    static double MaxDiff(Device device, PeerLayer layer, int tokens)
    {
        using var scope = Scope.Begin();
        using var noGrad = device.Tape.NoGrad();
        var x = Ops.Normal(device, 7, 0f, 1f, tokens, layer.Dim);
        layer.Eval();
        var a = layer.Forward(x).ToArray();
        var b = NaivePeer.Forward(layer, x).ToArray();
        layer.Train();
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }
}
