namespace Peer.Bench;

/// <summary>One benchmark suite, selected by its name on the command line.</summary>
internal interface ISuite
{
    /// <summary>Command-line name (e.g. <c>kernels</c>).</summary>
    string Name { get; }

    /// <summary>One line for the usage text.</summary>
    string Summary { get; }

    /// <summary>Runs the suite: prints its tables and adds its measurements to <paramref name="results"/>.</summary>
    void Run(BenchOptions options, Results results);
}
