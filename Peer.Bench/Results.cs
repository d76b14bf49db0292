// What a run measured, and how it is written: results.json (machine, devices, versions, every figure with its
// spread), results.md (the tables as printed, the goals with their figures, the plots). Files are written
// atomically (temporary file, then rename).
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Peer.Bench;

/// <summary>One figure: what ran where, its median and range over repeats, and what it is compared with.</summary>
internal sealed record Measurement(string Device, string Name, string Variant, string Unit, double Value, double? Low = null, double? High = null)
{
    /// <summary>The same figure from a reference run in the same process (plain C#, the naive design, the smallest N).</summary>
    public double? Reference { get; init; }
    public string? ReferenceName { get; init; }
    /// <summary>Value / Reference.</summary>
    public double? Ratio => Reference is > 0 ? Value / Reference : null;
    /// <summary>Value as a fraction of the device's ceiling (copy GB/s or best matmul GFLOP/s) measured in this run.</summary>
    public double? OfCeiling { get; init; }
}

/// <summary>A bench goal (Peer.Bench/README.md) and whether this run met it, with the figure that decides.</summary>
internal sealed record Goal(string Device, string Name, string Target, double Figure, bool Met, string Detail);

/// <summary>The results of one suite.</summary>
internal sealed class SuiteResults(string name, string summary)
{
    public string Name { get; } = name;
    public string Summary { get; } = summary;
    public List<Measurement> Measurements { get; } = new();
    public List<Goal> Goals { get; } = new();
    public List<string> Notes { get; } = new();
    public List<string> Plots { get; } = new();
    [JsonIgnore] public List<(string Title, Table Table)> Tables { get; } = new();
    public double Seconds { get; set; }

    public void Add(Measurement m) => Measurements.Add(m);
}

/// <summary>A requested device: opened (name, backend, memory) or absent (why).</summary>
internal sealed record DeviceRecord(string Requested, string? Name, string? Backend, long? MemoryBytes, string? Absent);

/// <summary>Everything a run produced.</summary>
internal sealed class Results(string[] args)
{
    readonly Dictionary<string, (double CopyGBs, double MatMulGFs)> ceilings = new();

    public string Command { get; } = "dotnet run -c Release --project Peer.Bench --" + (args.Length == 0 ? "" : " " + string.Join(' ', args));
    public DateTime Started { get; } = DateTime.UtcNow;
    public MachineInfo Machine { get; } = MachineInfo.Current();
    public List<DeviceRecord> Devices { get; } = new();
    public List<SuiteResults> Suites { get; } = new();

    /// <summary>Records a device's ceilings (the ceilings suite) for later suites' fractions.</summary>
    public void SetCeilings(string device, double copyGBs, double matMulGFs) => ceilings[device] = (copyGBs, matMulGFs);

    /// <summary>Value / the device's memory-copy ceiling in GB/s, when the ceilings suite ran.</summary>
    public double? OfCopy(string device, double gbs) => ceilings.TryGetValue(device, out var c) && c.CopyGBs > 0 ? gbs / c.CopyGBs : null;

    /// <summary>Value / the device's best matmul in GFLOP/s, when the ceilings suite ran.</summary>
    public double? OfMatMul(string device, double gfs) => ceilings.TryGetValue(device, out var c) && c.MatMulGFs > 0 ? gfs / c.MatMulGFs : null;

    static readonly JsonSerializerOptions json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(new
    {
        command = Command,
        started = Started.ToString("O"),
        machine = Machine,
        devices = Devices,
        suites = Suites,
    }, json);

    public string ToMarkdown()
    {
        var s = new StringBuilder();
        s.AppendLine($"# Peer.Bench results, {Started:yyyy-MM-dd HH:mm} UTC");
        s.AppendLine();
        s.AppendLine($"`{Command}`");
        s.AppendLine();
        s.AppendLine($"Machine: {Machine.Describe()}.");
        s.AppendLine();
        foreach (var d in Devices)
            s.AppendLine(d.Absent is null ? $"- {d.Requested}: {d.Name}" : $"- {d.Requested}: absent ({d.Absent})");
        s.AppendLine();
        s.AppendLine("Figures are medians over repeats after warm-up, with (min..max) in brackets; compared variants ran interleaved.");
        foreach (var suite in Suites)
        {
            s.AppendLine();
            s.AppendLine($"## {suite.Name}: {suite.Summary}");
            foreach (var (title, table) in suite.Tables)
            {
                s.AppendLine();
                if (title.Length > 0) { s.AppendLine($"{title}:"); s.AppendLine(); }
                s.Append(table.ToMarkdown());
            }
            if (suite.Goals.Count > 0)
            {
                s.AppendLine();
                s.AppendLine("Goals:");
                s.AppendLine();
                foreach (var g in suite.Goals)
                    s.AppendLine($"- {(g.Met ? "MET" : "NOT MET")} ({g.Device}) {g.Name}: target {g.Target}; measured {g.Detail}");
            }
            foreach (var n in suite.Notes) { s.AppendLine(); s.AppendLine(n); }
            foreach (var p in suite.Plots) { s.AppendLine(); s.AppendLine($"![{Path.GetFileNameWithoutExtension(p)}]({p})"); }
        }
        return s.ToString();
    }

    /// <summary>Writes results.json and results.md into <paramref name="folder"/>.</summary>
    public void Write(string folder)
    {
        Directory.CreateDirectory(folder);
        WriteAtomic(Path.Combine(folder, "results.json"), ToJson());
        WriteAtomic(Path.Combine(folder, "results.md"), ToMarkdown());
    }

    public static void WriteAtomic(string path, string text)
    {
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}

/// <summary>The machine a run ran on.</summary>
internal sealed record MachineInfo(int Cores, string? Cpu, string Os, string Dotnet, string Ilgpu, string Date, bool Vector512, string? LoadAverage, long MemoryBytes)
{
    public static MachineInfo Current() => new(
        Environment.ProcessorCount,
        CpuModel(),
        RuntimeInformation.OSDescription,
        Environment.Version.ToString(),
        typeof(ILGPU.Context).Assembly.GetName().Version?.ToString() ?? "?",
        DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'"),
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated,
        LoadAverageNow(),
        GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);

    /// <summary>The 1, 5 and 15 minute load averages (Linux), or null.</summary>
    public static string? LoadAverageNow()
    {
        try { return File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : null; }
        catch (IOException) { return null; }
    }

    /// <summary>The CPU's model name as the kernel reports it (Linux: /proc/cpuinfo, what lscpu shows), or null.</summary>
    static string? CpuModel()
    {
        try
        {
            return File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
                : null;
        }
        catch (IOException) { return null; }
    }

    public string Describe() =>
        $"{Cpu ?? "CPU model unknown"}, {Cores} logical processors, {Fmt.Bytes(MemoryBytes)} memory, {Os}, .NET {Dotnet}, ILGPU {Ilgpu}, Vector512 {(Vector512 ? "yes" : "no")}" +
        (LoadAverage is null ? "" : $", load average {LoadAverage} at start");
}
