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
