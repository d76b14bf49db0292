// --profile: after a suite's timed rounds, Peer's steps of one configuration run again under the device's profiler
// (outside the timed rounds, because profiling synchronises after every launch on GPUs and adds its clock reads), and
// the profiler's table goes to the log and to profile-<suite>-<configuration>.txt in the output folder.
using System.Text.RegularExpressions;

namespace Peer.Bench;

internal static partial class Profiles
{
    [GeneratedRegex("[^a-z0-9]+")]
    private static partial Regex NotWord();

    /// <summary>When the run asks for profiles, runs <paramref name="step"/> <paramref name="steps"/> times under a profiler (each step
    /// marks itself on it: Trainer.Step and PeerStepRunner.Run do), prints the table and saves it; returns the profiler, or null.</summary>
    public static Profiler? Capture(BenchRun run, SuiteResults s, Device device, string label, int steps, Action step)
    {
        if (!run.Options.Profile) return null;
        device.Synchronize();
        var p = device.Profile();
        try
        {
            for (int i = 0; i < steps; i++)
            {
                step();
                device.Synchronize();
            }
        }
        finally { p.Dispose(); }
        string table = p.Report();
        string file = $"profile-{s.Name}-{NotWord().Replace(label.ToLowerInvariant(), "-").Trim('-')}.txt";
        File.WriteAllText(Path.Combine(run.Options.Output, file), $"{label}\n{table}\n");
        run.Log.WriteLine($"  profile of {label} ({file}):");
        run.Log.WriteLine(table);
        s.Notes.Add($"Profile of {label}: [{file}]({file}) ({steps} steps after the timed rounds).");
        return p;
    }
}
