// The run: open each requested device once (an absent one is recorded with the reason, not an error), run the
// chosen suites in order on the open devices, write results.json, results.md and the plots to the output folder.
using System.Diagnostics;

namespace Peer.Bench;

internal static class Bench
{
    /// <summary>Every suite, in the default order (ceilings first: later suites show fractions of them).</summary>
    public static ISuite[] All() =>
        [new CeilingsSuite(), new KernelsSuite(), new PeerSuite(), new AblationSuite(), new LayersSuite(), new TrainingSuite(), new VisionSuite(), new TorchSuite(), new DistributedSuite()];

    public static Results Run(BenchOptions options, string[] args, TextWriter log)
    {
        var all = All();
        var chosen = options.Suites.Count == 0 ? all : options.Suites.Select(n => all.First(s => s.Name == n)).ToArray();
        var results = new Results(args);
        log.WriteLine($"Peer.Bench: {results.Machine.Describe()}");
        var devices = new List<(string, Device?)>();
        foreach (var name in options.Devices)
        {
            try
            {
                var d = Device.Open(name);
                devices.Add((name, d));
                results.Devices.Add(new DeviceRecord(name, d.Name, d.Backend.ToString(), d.Accelerator.MemorySize, null));
                log.WriteLine($"{name}: {d.Name}");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or DllNotFoundException or TypeInitializationException or NotSupportedException or EntryPointNotFoundException)
            {
                devices.Add((name, null));
                results.Devices.Add(new DeviceRecord(name, null, null, null, e.Message));
                log.WriteLine($"{name}: absent ({e.Message})");
            }
        }
        Directory.CreateDirectory(options.Output);
        var run = new BenchRun(options, devices, results, log);
        try
        {
            foreach (var suite in chosen)
            {
                var s = new SuiteResults(suite.Name, suite.Summary);
                results.Suites.Add(s);
                log.WriteLine();
                log.WriteLine($"== {suite.Name}: {suite.Summary}");
                var clock = Stopwatch.StartNew();
                suite.Run(run, s);
                foreach (var g in s.Goals)
                    log.WriteLine($"goal {(g.Met ? "MET" : "NOT MET")} ({g.Device}) {g.Name}: target {g.Target}; measured {g.Detail}");
                foreach (var n in s.Notes.Where(n => n.StartsWith("WARNING") || n.Contains("skipped"))) log.WriteLine(n);
                s.Seconds = clock.Elapsed.TotalSeconds;
                log.WriteLine($"({suite.Name}: {s.Seconds:F0} s; load average {MachineInfo.LoadAverageNow() ?? "?"})");
                results.Write(options.Output); // after each suite, so an interrupted run keeps what it measured
            }
        }
        finally
        {
            foreach (var (_, d) in devices) d?.Dispose();
        }
        return results;
    }
}
