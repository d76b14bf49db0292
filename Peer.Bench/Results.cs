using System.Text.Json;
using System.Text.Json.Serialization;

namespace Peer.Bench;

/// <summary>One measurement: what ran where, its value, and the plain-C# reference it is compared with.</summary>
internal sealed record Measurement(string Device, string Name, string Variant, string Unit, double Value, double? Reference = null, string? ReferenceName = null)
{
    public double? Ratio => Reference is > 0 ? Value / Reference : null;
}

/// <summary>The measurements of a run, written as results.json (atomically: temporary file, then rename).</summary>
internal sealed class Results(string suite, string[] args)
{
    readonly List<Measurement> items = new();
    readonly Dictionary<string, string> absent = new();

    public string Machine { get; } =
        $"{Environment.ProcessorCount} logical processors, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, " +
        $"Vector512 {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "yes" : "no")}";

    public void Add(Measurement m) => items.Add(m);

    public void Absent(string device, string reason) => absent[device] = reason;

    public void Write(string path)
    {
        var doc = new
        {
            suite,
            command = "dotnet run -c Release --project Peer.Bench -- " + string.Join(' ', args),
            started = DateTime.UtcNow.ToString("O"),
            machine = Machine,
            absent,
            results = items,
        };
        var json = JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, PropertyNamingPolicy = JsonNamingPolicy.CamelCase });
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp";
        File.WriteAllText(tmp, json);
        File.Move(tmp, full, overwrite: true);
    }
}
