// The torch suite's PEER layer step (Peer's through PeerStepRunner, PyTorch's through torch/peer_step.py) at the
// small and the large N, against each PyTorch design, and the tables and figures both parts share. Each
// configuration runs in its own PyTorch process beside Peer's runner of that N when the memory the machine
// has available holds both; otherwise the two run one after the other (said in the table), or not at all.
namespace Peer.Bench;

internal sealed partial class TorchSuite
{
    /// <summary>The PEER layer step's shape by mode: d, the options without N, T, and the N values (small, large).</summary>
    static (int Dim, PeerOptions Options, int Tokens, int[] Experts) PeerShape(BenchOptions o) => Sizes.Pick(o,
        (256, new PeerOptions { Heads = 8, TopK = 16, QueryDim = 256, Seed = 1 }, 1024, new[] { 128 * 128, 1024 * 1024 }),
        (256, new PeerOptions { Heads = 8, TopK = 16, QueryDim = 256, Seed = 1 }, 256, new[] { 64 * 64, 256 * 256 }),
        (64, new PeerOptions { Heads = 2, TopK = 4, QueryDim = 32, Seed = 1 }, 64, new[] { 16 * 16 }));

    /// <summary>The configurations compared: PyTorch's optimizer (torch/peer_step.py's --optimizer) and the optimizer of Peer's expert
    /// tables and sub-keys. The third measures the memory goal, which asks for row-wise optimizer state, against dense AdamW.</summary>
    static readonly (string Torch, string Peer)[] Designs = [("adamw", "adamw"), ("sparseadam", "adamw"), ("adamw", RowWise)];

    /// <summary>The row-wise optimizer of Peer's tables in the third configuration: one float of state per row.</summary>
    const string RowWise = "rowwise-adagrad";

    static string Variant(string torch, string peer) => (torch == "adamw" ? "dense AdamW" : "SparseAdam") + (peer == "adamw" ? "" : $" (Peer: {peer})");

    /// <summary>Peak bytes of PyTorch's step: the tables, their dense gradients (adamw) and the optimizer's two moments, the gathered
    /// [T, h, k, d] rows with their gradients, and the interpreter with torch; with a margin.</summary>
    static long TorchEstimate(int experts, int dim, PeerOptions o, int tokens, string design) =>
        (long)(1.35 * 4.0 * ((design == "adamw" ? 8L : 6L) * experts * dim + 4L * tokens * o.Heads * o.TopK * dim)) + (400L << 20);

    /// <summary>Memory the machine has available now (MemAvailable on Linux, else half the memory .NET sees), less 1.5 GiB for the rest of the machine.</summary>
    static long Available()
    {
        long bytes = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;
        try
        {
            var line = File.Exists("/proc/meminfo") ? File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:")) : null;
            if (line is not null && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], out long kb)) bytes = kb * 1024;
        }
        catch (IOException) { }
        return bytes - (3L << 29);
    }

    void PeerStep(BenchRun run, SuiteResults s, TorchPython python, string name, Device device)
    {
        var o = run.Options;
        var (dim, options, tokens, experts) = PeerShape(o);
        int repeats = Sizes.Repeats(o, 5, 2, 2), warmup = Sizes.Warmup(o);
        bool full = !o.Quick && !o.Smoke;
        var rows = new List<SideBySide>();
        foreach (int n in experts)
        {
            var opts = options with { Experts = n };
            PeerStepRunner? peer = null;
            bool profiled = false; // one profile per N: Peer's step is the same beside either design
            try
            {
                foreach (var (design, sparse) in Designs)
                {
                    string label = $"PEER step, N = {Fmt.Experts(n)}";
                    var c = new SideBySide(label, Variant(design, sparse), tokens, Threads, [PeerKey(device)]);
                    long need = TorchEstimate(n, dim, opts, tokens, design);
                    if (peer is not null && peer.SparseOptimizer != sparse)
                    {
                        peer.Dispose();
                        peer = null;
                    }
                    // Together when what is available holds PyTorch's process beside Peer's runner; else one after the other.
                    if (peer is null && need + PeerSuite.Estimate(n, dim, sparse) <= Available()) peer = Warm(new PeerStepRunner(device, dim, opts, tokens, naive: false, sparse), warmup);
                    c.Interleaved = peer is not null && need <= Available();
                    if (!c.Interleaved)
                    {
                        peer?.Dispose();
                        peer = null;
                        if (need > Available())
                        {
                            s.Notes.Add($"WARNING: {label}, PyTorch with {c.Variant}: not run: its process needs about {Fmt.Bytes(need)}, over the {Fmt.Bytes(Available())} available.");
                            continue;
                        }
                    }
                    run.Log.WriteLine($"  {label}, PyTorch with {c.Variant}{(c.Interleaved ? "" : " (one after the other: memory)")} ...");
                    try
                    {
                        if (peer is null) // Peer alone first, then PyTorch alone
                        {
                            using var alone = Warm(new PeerStepRunner(device, dim, opts, tokens, naive: false, sparse), warmup);
                            for (int i = 0; i < repeats; i++) alone.Run();
                            Record(c, alone, 0);
                            c.Parameters = alone.Layer.ParameterCount;
                            if (!profiled) Profiles.Capture(run, s, device, label, repeats, () => alone.Run(record: false));
                            profiled = true;
                        }
                        using var torch = new TorchWorker(python, "peer_step.py", PeerArgs(dim, opts, tokens, design), Answer);
                        c.Parameters = CheckParameters(peer?.Layer.ParameterCount ?? c.Parameters, torch, label);
                        int from = peer?.Total.Count ?? 0;
                        Rounds(warmup, repeats, c, torch, peer is null ? null : (_, record) => peer.Run(record));
                        (c.TorchPeakRss, c.TorchImportRss) = torch.Quit();
                        if (peer is not null) Record(c, peer, from);
                        rows.Add(c);
                        if (peer is not null && !profiled) Profiles.Capture(run, s, device, label, repeats, () => peer.Run(record: false));
                        profiled = true;
                    }
                    catch (InvalidOperationException e) when (e is not ParameterMismatchException)
                    {
                        s.Notes.Add($"WARNING: {label}, PyTorch with {c.Variant}: not run: {e.Message}");
                    }
                }
            }
            finally { peer?.Dispose(); }
        }
        Report(run, s, name, rows, [PeerKey(device)], $"PEER layer step: d = {dim}, h = {options.Heads}, k = {options.TopK}, dq = {options.QueryDim}, T = {tokens}, BatchNorm query " +
            "(forward, backward, optimizer step)");
        PeerGoals(s, name, rows, experts, full);
        s.Notes.Add("PEER step: Peer's is PeerStepRunner's (as the peer suite: PeerLayer's fused kernels, row-sparse gradients, the lazy AdamW step over " +
            "the rows retrieved); PyTorch's (torch/peer_step.py) gathers the retrieved expert rows into [T, h, k, d] tensors and combines them with " +
            "einsum, with dense nn.Embedding tables and torch.optim.AdamW over all of them (dense AdamW) or nn.Embedding(sparse=True) experts and " +
            "sub-keys stepped by torch.optim.SparseAdam and AdamW for the rest (SparseAdam). Peer's tables are stepped by the lazy AdamW, or in the third " +
            $"configuration by {RowWise} (one float of state per row, Peer.Optim.RowWiseAdagrad) beside PyTorch's dense AdamW again, for the memory goal. " +
            "Peer's peak is the step's peak device bytes plus the layer's parameters and optimizer state (as the peer suite); PyTorch's the process's " +
            "peak resident memory above what it held once torch was imported.");
    }

    static PeerStepRunner Warm(PeerStepRunner runner, int warmup)
    {
        for (int i = 0; i < warmup; i++) runner.Run(record: false);
        return runner;
    }

    static void Record(SideBySide c, PeerStepRunner peer, int from)
    {
        for (int i = from; i < peer.Total.Count; i++) c.PeerAt.Values.Single().Add(peer.Forward[i], peer.Backward[i], peer.Step[i], peer.Total[i]);
        c.PeerPeak = peer.PeakBytes;
    }

    static IEnumerable<string> PeerArgs(int dim, PeerOptions o, int tokens, string design) =>
        ["--dim", $"{dim}", "--experts", $"{o.Experts}", "--heads", $"{o.Heads}", "--top-k", $"{o.TopK}", "--query-dim", $"{o.QueryDim}",
         "--tokens", $"{tokens}", "--optimizer", design, "--seed", $"{o.Seed}"];

    static void PeerGoals(SuiteResults s, string name, List<SideBySide> rows, int[] experts, bool full)
    {
        string Reduced(string stated) => full ? "" : $" (reduced sizes of this mode; the goal is stated for {stated})";
        int small = experts[0], large = experts[^1];
        var at = (int n) => rows.Where(r => r.Label.EndsWith($"N = {Fmt.Experts(n)}")).ToList();
        bool adamW(SideBySide c) => c.Variant is "dense AdamW" or "SparseAdam"; // Peer's tables with AdamW, as PyTorch's
        foreach (var c in at(large).Where(adamW))
        {
            double target = c.Variant == "dense AdamW" ? 10 : 4;
            s.Goals.Add(new Goal(name, $"{c.Label}: Peer / PyTorch's best with {c.Variant}{Reduced("N = 1024^2")}", $">= {target}x", c.Ratio, c.Ratio >= target, Detail(c)));
        }
        if (small != large && at(small).Any(adamW))
        {
            var slowest = at(small).Where(adamW).MinBy(c => c.Ratio)!;
            s.Goals.Add(new Goal(name, $"{slowest.Label}: Peer / PyTorch's best of both designs{Reduced("N = 128^2")}", ">= 3x", slowest.Ratio, slowest.Ratio >= 3,
                $"{Detail(slowest)}, against {slowest.Variant}"));
        }
        foreach (int n in experts.Distinct())
        {
            var peers = at(n);
            if (peers.Count == 0) continue;
            var f = Stat.Of(peers.SelectMany(c => c.Peer.Forward)).Median;
            var b = Stat.Of(peers.SelectMany(c => c.Peer.Backward)).Median;
            s.Goals.Add(new Goal(name, $"PEER step, N = {Fmt.Experts(n)}: Peer's backward / forward", "<= 2x", b / f, b / f <= 2,
                $"{b / f:F2}x ({b * 1e3:F0} ms vs {f * 1e3:F0} ms, medians over all of Peer's measured steps at this N)"));
        }
        // The memory goal asks for row-wise optimizer state: Peer's peak with row-wise AdaGrad for the tables, against PyTorch's dense AdamW.
        if (at(large).FirstOrDefault(c => c.Variant == Variant("adamw", RowWise)) is { } rowWise)
        {
            double m = (double)rowWise.PeerPeak / rowWise.TorchPeak;
            s.Goals.Add(new Goal(name, $"{rowWise.Label}: Peer's peak memory with {RowWise} for the tables / PyTorch's with dense AdamW{Reduced("N = 1024^2")}",
                "<= 0.35", m, m <= 0.35, $"{m:F2} ({Fmt.Bytes(rowWise.PeerPeak)} vs {Fmt.Bytes(rowWise.TorchPeak)})"));
        }
    }

    static string Detail(SideBySide c) =>
        $"{c.Ratio:F2}x (Peer {Fmt.Num(c.PeerBest.Median)} tokens/s{SideBySide.At(c.PeerBestThreads)} vs PyTorch {Fmt.Num(c.TorchRate(c.BestThreads).Median)} " +
        $"at {c.BestThreads} thread(s){(c.Interleaved ? "" : ", not interleaved")})";

    /// <summary>The two tables of one part (speed; phases and memory) and its measurements.</summary>
    /// <param name="peerThreads">Peer's thread counts measured in every row (0 alone: a device that is not the CPU accelerator).</param>
    static void Report(BenchRun run, SuiteResults s, string name, List<SideBySide> rows, int[] peerThreads, string title)
    {
        var threads = Threads;
        bool several = peerThreads.Length > 1;
        var speed = new Table(["work", "PyTorch", .. peerThreads.Select(t => t > 0 ? $"Peer {t} thr tokens/s" : "Peer tokens/s"),
            .. threads.Select(t => $"PyTorch {t} thr tokens/s"), "Peer / PyTorch best"]);
        var phases = new Table("work", "PyTorch", "params", "Peer fwd / bwd / opt ms", "PyTorch fwd / bwd / opt ms", "Peer bwd/fwd", "PyTorch bwd/fwd",
            "Peer peak", "PyTorch peak", "memory Peer/PyTorch");
        foreach (var c in rows)
        {
            string work = c.Label + (c.Interleaved ? "" : " (not interleaved: memory)");
            int best = c.BestThreads, mine = c.PeerBestThreads;
            speed.Add([work, c.Variant, .. peerThreads.Select(t => (several && t == mine ? "*" : "") + c.PeerRate(t)),
                .. threads.Select(t => (t == best ? "*" : "") + c.TorchRate(t)), Fmt.Ratio(c.Ratio)]);
            phases.Add(work, c.Variant, c.Parameters.ToString("N0"), c.Peer.Describe() + (several ? $" ({mine} thr)" : ""), $"{c.Torch[best].Describe()} ({best} thr)",
                Fmt.Ratio(c.Peer.BackwardOverForward), Fmt.Ratio(c.Torch[best].BackwardOverForward),
                Fmt.Bytes(c.PeerPeak), Fmt.Bytes(c.TorchPeak), $"{(double)c.PeerPeak / c.TorchPeak:F2}");
            string label = $"{c.Label}, {c.Variant}";
            var peer = c.PeerBest;
            var top = c.TorchRate(best);
            // "Peer" is Peer's best thread count (the figure the ratio uses); each thread count's own figure follows when there are several.
            s.Add(new Measurement(name, label, "Peer", "tokens/s", peer.Median, peer.Low, peer.High) { Reference = top.Median, ReferenceName = $"PyTorch, {best} thread(s)" });
            if (mine > 0) s.Add(new Measurement(name, label, "Peer best thread count", "threads", mine));
            if (several)
                foreach (int t in peerThreads)
                {
                    var r = c.PeerRate(t);
                    s.Add(new Measurement(name, label, $"Peer {t} thread(s)", "tokens/s", r.Median, r.Low, r.High));
                }
            foreach (int t in threads)
            {
                var r = c.TorchRate(t);
                s.Add(new Measurement(name, label, $"PyTorch {t} thread(s)", "tokens/s", r.Median, r.Low, r.High));
            }
            s.Add(new Measurement(name, label, "Peer / PyTorch best", "x", c.Ratio));
            s.Add(new Measurement(name, label, "Peer backward / forward", "x", c.Peer.BackwardOverForward));
            s.Add(new Measurement(name, label, "PyTorch backward / forward", "x", c.Torch[best].BackwardOverForward));
            s.Add(new Measurement(name, label, "Peer peak memory", "bytes", c.PeerPeak) { Reference = c.TorchPeak, ReferenceName = "PyTorch peak memory" });
            s.Add(new Measurement(name, label, "PyTorch peak memory above import", "bytes", c.TorchPeak));
            s.Add(new Measurement(name, label, "PyTorch peak resident memory", "bytes", c.TorchPeakRss));
            s.Add(new Measurement(name, label, "parameters (each side)", "count", c.Parameters));
        }
        string side = several ? "each side's best thread count" : "PyTorch's best thread count";
        run.Show(s, $"{name}: {title}; tokens/s median (min..max), * marks {side}", speed);
        run.Show(s, $"{name}: phases (medians; {(several ? "each side" : "PyTorch")} at its best thread count) and peak memory", phases);
    }
}

/// <summary>Phase times in seconds of one side's measured steps.</summary>
internal sealed class Phases
{
    public List<double> Forward { get; } = new();
    public List<double> Backward { get; } = new();
    public List<double> Optimizer { get; } = new();
    public List<double> Total { get; } = new();

    public void Add(double forward, double backward, double optimizer, double total)
    {
        Forward.Add(forward);
        Backward.Add(backward);
        Optimizer.Add(optimizer);
        Total.Add(total);
    }

    public double BackwardOverForward => Stat.Of(Backward).Median / Stat.Of(Forward).Median;

    public string Describe() => $"{Fmt.Num(Stat.Of(Forward).Median * 1e3)} / {Fmt.Num(Stat.Of(Backward).Median * 1e3)} / {Fmt.Num(Stat.Of(Optimizer).Median * 1e3)}";
}

/// <summary>One piece of work measured on both sides in the same rounds.</summary>
/// <param name="peerThreads">Peer's CPU accelerator thread counts measured (0 alone: a device that is not the CPU accelerator).</param>
internal sealed class SideBySide(string label, string variant, double tokens, int[] threads, int[] peerThreads)
{
    public string Label { get; } = label;
    public string Variant { get; } = variant;
    /// <summary>Tokens per step.</summary>
    public double Tokens { get; } = tokens;
    /// <summary>Peer's phases by its thread count (0: the device's own, not the CPU accelerator).</summary>
    public Dictionary<int, Phases> PeerAt { get; } = peerThreads.ToDictionary(t => t, _ => new Phases());
    public Dictionary<int, Phases> Torch { get; } = threads.ToDictionary(t => t, _ => new Phases());
    public long Parameters { get; set; }
    public long PeerPeak { get; set; }
    public long TorchPeakRss { get; set; }
    public long TorchImportRss { get; set; }
    /// <summary>PyTorch's own memory: its peak resident bytes above those it held once torch was imported.</summary>
    public long TorchPeak => TorchPeakRss - TorchImportRss;
    /// <summary>False when memory made the two sides run one after the other.</summary>
    public bool Interleaved { get; set; } = true;

    public Rate PeerRate(int threads) => Stat.Of(PeerAt[threads].Total).Per(Tokens);
    public int PeerBestThreads => PeerAt.Keys.MaxBy(t => PeerRate(t).Median);
    /// <summary>Peer's phases at its best thread count.</summary>
    public Phases Peer => PeerAt[PeerBestThreads];
    public Rate PeerBest => PeerRate(PeerBestThreads);
    public Rate TorchRate(int threads) => Stat.Of(Torch[threads].Total).Per(Tokens);
    public int BestThreads => Torch.Keys.MaxBy(t => TorchRate(t).Median);
    /// <summary>Peer's best thread count over PyTorch's best.</summary>
    public double Ratio => PeerBest.Median / TorchRate(BestThreads).Median;

    /// <summary>"at 1 thread(s)", or nothing for a device that is not the CPU accelerator.</summary>
    public static string At(int threads) => threads > 0 ? $" at {threads} thread(s)" : "";
}
