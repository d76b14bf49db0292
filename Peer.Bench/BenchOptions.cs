namespace Peer.Bench;

/// <summary>Options shared by every suite.</summary>
internal sealed record BenchOptions
{
    /// <summary>Backends to measure, in order; absent ones are reported, not errors.</summary>
    public IReadOnlyList<string> Devices { get; init; } = ["cpu"];
    /// <summary>Smaller sizes and fewer repeats.</summary>
    public bool Quick { get; init; }
    /// <summary>Timed runs per measurement (0: the suite's default). More runs steady the medians on a shared machine.</summary>
    public int Repeats { get; init; }
    /// <summary>Where results.json goes.</summary>
    public string Output { get; init; } = "results.json";

    static readonly string[] Known = ["cpu", "opencl", "cuda"];

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value.");
            switch (a)
            {
                case "--quick": o = o with { Quick = true }; break;
                case "--out": o = o with { Output = Value() }; break;
                case "--repeats":
                {
                    string v = Value();
                    if (!int.TryParse(v, out int r) || r < 1) throw new ArgumentException($"--repeats = '{v}': expected a positive integer.");
                    o = o with { Repeats = r };
                    break;
                }
                case "--devices":
                {
                    string v = Value().Trim().ToLowerInvariant();
                    var list = v == "all" ? Known : v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    foreach (var d in list)
                        if (!Known.Contains(d)) throw new ArgumentException($"--devices: unknown device '{d}' (expected cpu, opencl, cuda or all).");
                    o = o with { Devices = list.Distinct().ToArray() };
                    break;
                }
                default: throw new ArgumentException($"unknown option '{a}'.");
            }
        }
        return o;
    }

    public static string Usage(IEnumerable<ISuite> suites) =>
        "usage: dotnet run -c Release --project Peer.Bench -- <suite> [--devices cpu,opencl,cuda|all] [--quick] [--repeats N] [--out results.json]\n" +
        "suites:\n" + string.Join("\n", suites.Select(s => $"  {s.Name,-10} {s.Summary}"));
}
