// Part of the kernels suite: the fused chains of a transformer block against the unfused ops they replace, forward and
// backward, at the tiny preset's shapes (B*T = 512 rows, d = 128, hidden 512), run interleaved in one process: the residual
// add with the LayerNorm after it (Ops.AddLayerNorm against Ops.Add then Ops.LayerNorm, gradients arriving at both outputs,
// as in a block), and the dense FFW's first layer (Ops.LinearGelu against Ops.Linear then Ops.Gelu, its matmuls included).
namespace Peer.Bench;

internal static class FusedChainsBench
{
    public static void Run(SuiteResults s, Table table, string name, Device device, int warmup, int repeats)
    {
        const int rows = 512, d = 128, hidden = 512;
        using var scope = Scope.Begin();
        var x = Ops.Normal(device, 21, 0f, 1f, rows, d);
        var r = Ops.Normal(device, 22, 0f, 1f, rows, d);
        var w = Tensor.Full(device, 1f, d);
        var b = Tensor.Zeros(device, d);
        var w1 = Ops.Normal(device, 23, 0f, 0.1f, hidden, d);
        var b1 = Ops.Normal(device, 24, 0f, 0.1f, hidden);
        Tensor[] leaves = [x, r, w, b, w1, b1];
        foreach (var t in leaves) t.RequiresGrad = true;
        var gs = Ops.Normal(device, 25, 0f, 1f, rows, d);
        var gy = Ops.Normal(device, 26, 0f, 1f, rows, d);
        var gh = Ops.Normal(device, 27, 0f, 1f, rows, hidden);

        void DropGradients()
        {
            foreach (var t in leaves) { t.Grad?.Dispose(); t.Grad = null; }
        }
        void ResidualNorm(bool fused)
        {
            using (Scope.Begin())
            {
                Tensor sum, y;
                if (fused) (sum, y) = Ops.AddLayerNorm(x, r, w, b);
                else y = Ops.LayerNorm(sum = Ops.Add(x, r), w, b);
                sum.Grad = Ops.Scale(gs, 1f); // the residual's gradient from the later blocks, as Backward finds it there
                device.Tape.Backward(y, Ops.Scale(gy, 1f));
                device.Synchronize();
            }
            DropGradients();
        }
        void LinearGelu(bool fused)
        {
            using (Scope.Begin())
            {
                var h = fused ? Ops.LinearGelu(x, w1, b1) : Ops.Gelu(Ops.Linear(x, w1, b1));
                device.Tape.Backward(h, Ops.Scale(gh, 1f));
                device.Synchronize();
            }
            DropGradients();
        }

        var times = Timing.Interleaved(warmup, repeats, () => ResidualNorm(true), () => ResidualNorm(false), () => LinearGelu(true), () => LinearGelu(false));
        foreach (var (chain, shape, fused, unfused) in new[]
        {
            ("residual add + LayerNorm", $"[{rows}, {d}]", times[0], times[1]),
            ("Linear + GELU", $"[{rows}, {d}] -> [{rows}, {hidden}]", times[2], times[3]),
        })
        {
            var (f, u) = (fused.Scaled(1e3), unfused.Scaled(1e3));
            table.Add(name, chain, shape, Fmt.Spread(f.Median, f.Min, f.Max), Fmt.Spread(u.Median, u.Min, u.Max), Fmt.Ratio(u.Median / f.Median));
            s.Add(new Measurement(name, $"{chain} {shape} forward + backward", "fused", "ms", f.Median, f.Min, f.Max) { Reference = u.Median, ReferenceName = "unfused" });
            s.Add(new Measurement(name, $"{chain} {shape} forward + backward", "unfused", "ms", u.Median, u.Min, u.Max));
        }
    }
}
