using System.Diagnostics;

namespace Peer.Bench;

/// <summary>Median wall time of repeated runs after warm-up.</summary>
internal static class Timing
{
    public static double MedianSeconds(Action run, int warmup, int repeats)
    {
        for (int i = 0; i < warmup; i++) run();
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        Array.Sort(times);
        return repeats % 2 == 1 ? times[repeats / 2] : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
    }

    /// <summary>
    /// Median wall time of each run, the runs interleaved round by round after warm-up, so that load from other
    /// processes on a shared machine falls on all of them alike and their ratios stay meaningful.
    /// </summary>
    public static double[] InterleavedMedians(int warmup, int repeats, params Action[] runs)
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
        return times.Select(t => { Array.Sort(t); return repeats % 2 == 1 ? t[repeats / 2] : 0.5 * (t[repeats / 2 - 1] + t[repeats / 2]); }).ToArray();
    }

    /// <summary>Opens each requested device, or reports why it is absent.</summary>
    public static IEnumerable<(string Name, Device? Device, string? Absent)> OpenDevices(BenchOptions options)
    {
        foreach (var name in options.Devices)
        {
            Device? d = null;
            string? why = null;
            try { d = Device.Open(name); }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or DllNotFoundException or TypeInitializationException or NotSupportedException)
            {
                why = e.Message;
            }
            yield return (name, d, why);
        }
    }
}
