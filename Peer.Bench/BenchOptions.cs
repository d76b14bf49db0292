namespace Peer.Bench;

/// <summary>The command line: suites to run (all by default) and options shared by every suite.</summary>
internal sealed record BenchOptions
{
    /// <summary>Suites to run, in the order given; empty means all, in the default order.</summary>
    public IReadOnlyList<string> Suites { get; init; } = [];
    /// <summary>Backends to measure, in order; absent ones are reported, not errors.</summary>
    public IReadOnlyList<string> Devices { get; init; } = ["cpu"];
    /// <summary>Smaller sizes and fewer repeats: the whole run in under two minutes on a 2-core machine.</summary>
    public bool Quick { get; init; }
    /// <summary>Timed runs per measurement (0: the suite's default). More runs steady the medians on a shared machine.</summary>
    public int Repeats { get; init; }
    /// <summary>Folder for results.json, results.md and the PNG plots.</summary>
    public string Output { get; init; } = "bench-results";
    /// <summary>After its timed rounds, the training, peer and torch suites run Peer's steps again under the device's profiler and
    /// print and save its table per configuration (profile-*.txt in the output folder).</summary>
    public bool Profile { get; init; }
    /// <summary>Optimizer of the expert tables and sub-keys in the peer suite's PEER step (as the trainer's train.sparse_optimizer):
    /// adamw (the lazy AdamW step), rowwise-adamw or rowwise-adagrad; the rest of the layer always steps with AdamW.</summary>
    public string SparseOptimizer { get; init; } = "adamw";
    /// <summary>Smaller still than <see cref="Quick"/>: the end-to-end test's sizes, to check that every suite runs (its figures mean little).</summary>
    public bool Smoke { get; init; }

    /// <summary>The half of the torch suite to run: "lm" (the language-model step) or "peer" (the PEER layer step); null runs both.</summary>
    public string? TorchPart { get; init; }

    static readonly string[] TorchParts = ["lm", "peer"];

    static readonly string[] KnownDevices = ["cpu", "opencl", "cuda"];

    /// <summary>Parses the arguments; <paramref name="suites"/> are the known suite names.</summary>
    /// <exception cref="ArgumentException">An unknown suite, device or option, or an option without its value.</exception>
    public static BenchOptions Parse(string[] args, IReadOnlyList<string> suites)
    {
        var o = new BenchOptions();
        var chosen = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value.");
            switch (a)
            {
                case "--quick": o = o with { Quick = true }; break;
                case "--smoke": o = o with { Smoke = true }; break;
                case "--profile": o = o with { Profile = true }; break;
                case "--out": o = o with { Output = Value() }; break;
                case "--repeats":
                {
                    string v = Value();
                    if (!int.TryParse(v, out int r) || r < 1) throw new ArgumentException($"--repeats = '{v}': expected a positive integer.");
                    o = o with { Repeats = r };
                    break;
                }
                case "--sparse-optimizer":
                {
                    string v = Value();
                    if (!Peer.Training.TrainConfig.SparseOptimizers.Contains(v))
                        throw new ArgumentException($"--sparse-optimizer = '{v}': expected one of {string.Join(", ", Peer.Training.TrainConfig.SparseOptimizers)}.");
                    o = o with { SparseOptimizer = v };
                    break;
                }
                case "--torch-part":
                {
                    string v = Value();
                    if (!TorchParts.Contains(v)) throw new ArgumentException($"--torch-part = '{v}': expected lm or peer.");
                    o = o with { TorchPart = v };
                    break;
                }
                case "--devices":
                {
                    string v = Value().Trim().ToLowerInvariant();
                    var list = v == "all" ? KnownDevices : v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    foreach (var d in list)
                        if (!KnownDevices.Contains(d)) throw new ArgumentException($"--devices: unknown device '{d}' (expected cpu, opencl, cuda or all).");
                    o = o with { Devices = list.Distinct().ToArray() };
                    break;
                }
                default:
                    if (a.StartsWith('-')) throw new ArgumentException($"unknown option '{a}'.");
                    if (!suites.Contains(a)) throw new ArgumentException($"unknown suite '{a}' (expected one of {string.Join(", ", suites)}).");
                    if (!chosen.Contains(a)) chosen.Add(a);
                    break;
            }
        }
        return o with { Suites = chosen };
    }

    public static string Usage(IEnumerable<ISuite> suites) =>
        "usage: dotnet run -c Release --project Peer.Bench -- [suites...] [--devices cpu,opencl,cuda|all] [--quick|--smoke] [--repeats N] [--profile] [--out DIR]\n" +
        "       [--sparse-optimizer adamw|rowwise-adamw|rowwise-adagrad] [--torch-part lm|peer]\n" +
        "  no suite named: all of them, in this order. Default devices: cpu. Default output folder: bench-results.\n" +
        "  --quick: small sizes and few repeats; --smoke: the test's tiny sizes, to check that every suite runs (figures mean little).\n" +
        "  --profile: the training, peer and torch suites also profile Peer's steps (after the timed rounds) and write profile-*.txt.\n" +
        "  --sparse-optimizer: the optimizer of the expert tables and sub-keys in the peer suite (default adamw).\n" +
        "  --torch-part: the torch suite runs only its language-model step (lm) or only its PEER layer step (peer); default both.\n" +
        "suites:\n" + string.Join("\n", suites.Select(s => $"  {s.Name,-10} {s.Summary}"));
}
