// Timing of one PEER layer training step (forward, backward, and a lazy sparse AdamW step over the same
// layer) at a given number of experts, for the goal that the PEER step cost does not grow with N: the step time at
// N = 1024^2 should follow the FLOPs ratio against N = 128^2, with no term proportional to N.
using System.Diagnostics;
using Peer.Nn;
using Peer.Optim;

namespace Peer.Bench;

/// <summary>Median times of a PEER layer step, in milliseconds, and the layer's FLOPs per step.</summary>
/// <param name="Experts">N.</param>
/// <param name="Tokens">T.</param>
/// <param name="ForwardMs">Median wall time of the forward.</param>
/// <param name="BackwardMs">Median wall time of the backward.</param>
/// <param name="StepMs">Median wall time of the AdamW step (0 when disabled).</param>
/// <param name="TotalMs">Sum of the three medians.</param>
/// <param name="CpuMs">Median process CPU time of a whole step (robust on a shared machine, where wall time is not).</param>
/// <param name="Flops">FLOPs of forward + backward (see <see cref="PeerBench.Flops"/>).</param>
/// <param name="InitMs">Wall time to build the layer (and the optimizer).</param>
public sealed record PeerBenchResult(int Experts, int Tokens, double ForwardMs, double BackwardMs, double StepMs, double TotalMs, double CpuMs, double Flops, double InitMs);

/// <summary>Times a PEER layer step at one size.</summary>
public static class PeerBench
{
    /// <summary>
    /// FLOPs of one forward + backward (multiply-add = 2): query projection 3 * 2*T*d*h*dq, retrieval 2*T*h*n*dq (+ its
    /// backward 4*T*h*k*dq), k*k candidate sums, experts 2*2*T*h*k*d forward and 2x that backward. BatchNorm, router
    /// and sorts are O(T*h*(dq + k)) and left out.
    /// </summary>
    public static double Flops(int experts, int dim, int heads, int topK, int queryDim, int tokens)
    {
        double n = Math.Sqrt(experts), t = tokens, hk = heads * topK;
        double query = 3 * 2 * t * dim * heads * queryDim;
        double retrieval = 2 * t * heads * n * queryDim + t * heads * topK * topK + 4 * t * hk * queryDim;
        double expertsF = 3 * 2 * 2 * t * hk * dim;
        return query + retrieval + expertsF;
    }

    /// <summary>
    /// Builds a layer (h, k, dq as given; BatchNorm query), then runs <paramref name="warmup"/> + <paramref name="steps"/> steps on
    /// random tokens and returns the median times. With <paramref name="adamW"/>, one AdamW over all parameters steps after each
    /// backward (lazy row-sparse for keys.* and experts.*) and is timed as StepMs; gradients are cleared after every step.
    /// </summary>
    public static PeerBenchResult Run(Device device, int experts, int dim = 256, int heads = 8, int topK = 16, int queryDim = 128,
        int tokens = 1024, int steps = 3, int warmup = 1, bool adamW = true, Action<string>? log = null)
    {
        var sw = Stopwatch.StartNew();
        using var layer = new PeerLayer(device, dim, new PeerOptions { Experts = experts, Heads = heads, TopK = topK, QueryDim = queryDim, Seed = 1 });
        using var optimizer = adamW ? new AdamW(layer.NamedParameters(), lr: 1e-3f) : null;
        device.Synchronize();
        double initMs = sw.Elapsed.TotalMilliseconds;
        var fwd = new List<double>();
        var bwd = new List<double>();
        var opt = new List<double>();
        var cpu = new List<double>();
        using var process = Process.GetCurrentProcess();
        for (int s = 0; s < warmup + steps; s++)
        {
            using (Scope.Begin())
            {
                var x = Ops.Normal(device, (ulong)(100 + s), 0f, 1f, tokens, dim);
                var gy = Ops.Normal(device, (ulong)(200 + s), 0f, 1f, tokens, dim);
                device.Synchronize();
                process.Refresh();
                var cpu0 = process.TotalProcessorTime;
                sw.Restart();
                var y = layer.Forward(x);
                device.Synchronize();
                double f = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                device.Tape.Backward(y, gy);
                device.Synchronize();
                double b = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                optimizer?.Step();
                device.Synchronize();
                double o = sw.Elapsed.TotalMilliseconds;
                process.Refresh();
                double cpuMs = (process.TotalProcessorTime - cpu0).TotalMilliseconds;
                layer.ZeroGrad();
                log?.Invoke($"N={experts} step {s}{(s < warmup ? " (warm-up)" : "")}: forward {f:F0} ms, backward {b:F0} ms, optimizer {o:F0} ms; cpu {cpuMs:F0} ms");
                if (s >= warmup) { fwd.Add(f); bwd.Add(b); opt.Add(o); cpu.Add(cpuMs); }
            }
        }
        static double Median(List<double> v) { v.Sort(); return v.Count == 0 ? 0 : v[v.Count / 2]; }
        double mf = Median(fwd), mb = Median(bwd), mo = Median(opt);
        return new PeerBenchResult(experts, tokens, mf, mb, mo, mf + mb + mo, Median(cpu), Flops(experts, dim, heads, topK, queryDim, tokens), initMs);
    }
}
