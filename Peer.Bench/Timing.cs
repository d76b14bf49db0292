// Clocks for the suites: every run is followed by a device synchronisation inside the timed action (the
// suites' actions end with device.Synchronize()), repeats come after warm-up, and compared variants run
// interleaved round by round so that load from other processes on a shared machine falls on all of them.
using System.Diagnostics;

namespace Peer.Bench;

/// <summary>Median and extremes of repeated timings, in seconds.</summary>
internal readonly record struct Stat(double Median, double Min, double Max)
{
    public static Stat Of(IEnumerable<double> samples)
    {
        var t = samples.ToArray();
        if (t.Length == 0) return new Stat(double.NaN, double.NaN, double.NaN);
        Array.Sort(t);
        int n = t.Length;
        double median = n % 2 == 1 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
        return new Stat(median, t[0], t[n - 1]);
    }

    /// <summary>A rate (work per second) from these times: the median rate and its range (fastest run gives the max).</summary>
    public Rate Per(double work) => new(work / Median, work / Max, work / Min);

    /// <summary>The times scaled (e.g. 1e3 for milliseconds).</summary>
    public Stat Scaled(double factor) => new(Median * factor, Min * factor, Max * factor);
}

/// <summary>A measured figure with its spread: median and the range over repeats.</summary>
internal readonly record struct Rate(double Median, double Low, double High)
{
    public override string ToString() => Fmt.Spread(Median, Low, High);
}

/// <summary>Number formatting shared by tables and markdown.</summary>
internal static class Fmt
{
    public static string Num(double d) =>
        double.IsNaN(d) ? "-" : Math.Abs(d) >= 100 ? d.ToString("F0") : Math.Abs(d) >= 10 ? d.ToString("F1") : Math.Abs(d) >= 0.1 ? d.ToString("F2") : d.ToString("G2");

    public static string Spread(double median, double low, double high) => $"{Num(median)} ({Num(low)}..{Num(high)})";

    public static string? Percent(double? f) => f is not { } v ? null : v >= 0.1 ? $"{100 * v:F0} %" : $"{100 * v:F1} %";

    public static string Ratio(double r) => double.IsNaN(r) ? "-" : $"{r:F2}x";

    public static string Bytes(long b) => b >= 1L << 30 ? $"{b / (double)(1L << 30):F2} GiB" : $"{b / (double)(1 << 20):F0} MiB";

    public static string Experts(int n)
    {
        int s = (int)Math.Round(Math.Sqrt(n));
        return s * s == n ? $"{s}^2" : n.ToString();
    }
}

internal static class Timing
{
    /// <summary>Times of <paramref name="repeats"/> runs after <paramref name="warmup"/> unmeasured ones.</summary>
    public static Stat Measure(Action run, int warmup, int repeats) => Interleaved(warmup, repeats, run)[0];

    /// <summary>
    /// Times of each run, the runs interleaved round by round after warm-up, so that load from other processes on a
    /// shared machine falls on all of them alike and their ratios stay meaningful.
    /// </summary>
    public static Stat[] Interleaved(int warmup, int repeats, params Action[] runs)
    {
        for (int i = 0; i < warmup; i++) foreach (var r in runs) r();
        var times = runs.Select(_ => new double[repeats]).ToArray();
        for (int i = 0; i < repeats; i++)
            for (int j = 0; j < runs.Length; j++)
            {
                long t0 = Stopwatch.GetTimestamp();
                runs[j]();
                times[j][i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            }
        return times.Select(Stat.Of).ToArray();
    }

    /// <summary>Seconds one action takes (for per-phase clocks inside a step).</summary>
    public static double Seconds(Action run)
    {
        long t0 = Stopwatch.GetTimestamp();
        run();
        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }
}
