namespace Peer.Bench;

/// <summary>One benchmark suite, selected by its name on the command line.</summary>
internal interface ISuite
{
    /// <summary>Command-line name (e.g. <c>kernels</c>).</summary>
    string Name { get; }

    /// <summary>One line for the usage text and the report.</summary>
    string Summary { get; }

    /// <summary>Runs the suite on every open device: prints its tables and records them, its figures and goals in <paramref name="results"/>.</summary>
    void Run(BenchRun run, SuiteResults results);
}

/// <summary>What a suite runs with: the options, the devices (opened once per run), the run's results, the output folder.</summary>
internal sealed class BenchRun(BenchOptions options, IReadOnlyList<(string Name, Device? Device)> devices, Results results, TextWriter log)
{
    public BenchOptions Options { get; } = options;
    public IReadOnlyList<(string Name, Device? Device)> Devices { get; } = devices;
    public Results Results { get; } = results;
    public TextWriter Log { get; } = log;

    /// <summary>The open devices (absent ones were reported once at the start).</summary>
    public IEnumerable<(string Name, Device Device)> Open => Devices.Where(d => d.Device is not null).Select(d => (d.Name, d.Device!));

    /// <summary>Prints a table and keeps it for results.md.</summary>
    public void Show(SuiteResults s, string title, Table table)
    {
        if (title.Length > 0) Log.WriteLine(title + ":");
        table.Print(Log);
        s.Tables.Add((title, table));
    }
}
