// The layers suite: the feed-forward layers behind IFeedForward at one forward FLOPs-per-token budget (the PEER
// layer's, from the cost accounting in Peer.Core/Nn/FeedForward): dense FFW and the MoEs get the hidden width that
// matches the budget; PKM keeps the paper's settings (h = 8, k = 32) and shows its own FLOPs. Forward + backward
// of all of them run interleaved; tokens/s, the ratio to the dense FFW, and the achieved GFLOP/s.
namespace Peer.Bench;

internal sealed class LayersSuite : ISuite
{
    public string Name => "layers";
    public string Summary => "dense FFW, MoE (expert choice, top-2), PKM, PEER at one FLOPs-per-token budget: tokens/s of forward + backward";

    public void Run(BenchRun run, SuiteResults s)
    {
        var o = run.Options;
        var (dim, peerOptions, tokens) = PeerSuite.Shape(o);
        int experts = Sizes.Pick(o, 256 * 256, 128 * 128, 32 * 32);
        int moeExperts = Sizes.Pick(o, 16, 16, 4);
        int repeats = Sizes.Repeats(o), warmup = Sizes.Warmup(o);
        var peerCost = FeedForwardCost.Of(peerOptions with { Experts = experts }, dim);
        long budget = peerCost.MacsPerToken;
        // Hidden widths from the cost formulas (FeedForwardCost, ExpertChoiceMoe, TopKMoe remarks), capacity factor 1.
        int ffwHidden = (int)Math.Max(1, budget / (2 * dim));
        int ecHidden = (int)Math.Max(1, (budget - (long)dim * moeExperts - dim) / (2 * dim));
        int topkHidden = (int)Math.Max(1, (budget - (long)dim * moeExperts - 2L * dim) / (4 * dim));
        var kinds = new (string Label, FeedForwardKind Kind, FeedForwardOptions Options)[]
        {
            ($"ffw (hidden {ffwHidden})", FeedForwardKind.Ffw, new FeedForwardOptions { Dim = dim, Hidden = ffwHidden, Seed = 1 }),
            ($"moe-ec (E = {moeExperts}, hidden {ecHidden})", FeedForwardKind.MoeEc, new FeedForwardOptions { Dim = dim, Hidden = ecHidden, Experts = moeExperts, Seed = 1 }),
            ($"moe-topk (E = {moeExperts}, k = 2, hidden {topkHidden})", FeedForwardKind.MoeTopK, new FeedForwardOptions { Dim = dim, Hidden = topkHidden, Experts = moeExperts, TopK = 2, Seed = 1 }),
            ($"pkm (N = {Fmt.Experts(experts)}, h = {peerOptions.Heads}, k = 32)", FeedForwardKind.Pkm, new FeedForwardOptions { Dim = dim, Experts = experts, Heads = peerOptions.Heads, TopK = 32, QueryDim = peerOptions.QueryDim, Seed = 1 }),
            ($"peer (N = {Fmt.Experts(experts)}, h = {peerOptions.Heads}, k = {peerOptions.TopK})", FeedForwardKind.Peer, new FeedForwardOptions { Dim = dim, Experts = experts, Heads = peerOptions.Heads, TopK = peerOptions.TopK, QueryDim = peerOptions.QueryDim, Seed = 1 }),
        };
        foreach (var (name, device) in run.Open)
        {
            var layers = kinds.Select(k => FeedForwardFactory.Create(device, k.Kind, k.Options)).ToArray();
            try
            {
                int seed = 0;
                Action Step(FeedForwardLayer layer) => () =>
                {
                    using (Scope.Begin())
                    {
                        ulong sd = (ulong)(5000 + seed++);
                        var x = Ops.Normal(device, sd, 0f, 1f, tokens, dim);
                        var gy = Ops.Normal(device, sd + 7919, 0f, 1f, tokens, dim);
                        var y = layer.Forward(x);
                        device.Tape.Backward(y, gy);
                        device.Synchronize();
                    }
                    layer.ZeroGrad();
                };
                var t = Timing.Interleaved(warmup, repeats, layers.Select(Step).ToArray());
                var table = new Table("layer", "forward FLOPs/token", "of budget", "params", "tokens/s", "vs ffw", "GFLOP/s (fwd+bwd)", "of matmul ceiling");
                double ffw = tokens / t[0].Median;
                for (int i = 0; i < layers.Length; i++)
                {
                    var l = layers[i];
                    var tps = t[i].Per(tokens);
                    // forward + backward ~ 3x the forward FLOPs (two products per forward product in the backward)
                    double gfs = 3.0 * l.ForwardFlopsPerToken * tokens / t[i].Median / 1e9;
                    var of = run.Results.OfMatMul(name, gfs);
                    table.Add(kinds[i].Label, l.ForwardFlopsPerToken, $"{(double)l.ForwardFlopsPerToken / (2 * budget):F2}", l.TotalParameters,
                        tps.ToString(), Fmt.Ratio(tps.Median / ffw), gfs, Fmt.Percent(of));
                    s.Add(new Measurement(name, kinds[i].Label, "forward + backward", "tokens/s", tps.Median, tps.Low, tps.High) { Reference = ffw, ReferenceName = "ffw tokens/s", OfCeiling = of });
                    s.Add(new Measurement(name, kinds[i].Label, "forward FLOPs per token", "FLOP", l.ForwardFlopsPerToken));
                }
                run.Show(s, $"{name}: d = {dim}, T = {tokens}, budget {2 * budget} forward FLOPs/token (the PEER layer's)", table);
                s.Plots.Add(Plots.Bars(o.Output, $"layers-{name}.png", kinds.Select(k => k.Label.Split(' ')[0]).ToArray(),
                    t.Select(x => tokens / x.Median).ToArray(), "tokens/s (forward + backward)", $"Feed-forward layers at equal FLOPs ({name}, T = {tokens})"));
            }
            finally { foreach (var l in layers) l.Dispose(); }
        }
        s.Notes.Add("FLOPs per token from each layer's ForwardFlopsPerToken (Peer.Core/Nn/FeedForward: multiply-add = 2 FLOPs; elementwise work, " +
            "softmax, norms and top-k not counted). Soft MoE is left out: it mixes positions, so it is refused in a causal language model. " +
            "GFLOP/s takes forward + backward as 3x the forward FLOPs.");
    }
}
