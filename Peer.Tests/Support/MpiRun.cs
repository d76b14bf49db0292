// Starting `peer` on several ranks through the MPI launcher, for the distributed tests. The launcher is MPICH's
// (mpiexec.mpich, else mpiexec; PEER_TEST_MPIEXEC names another). Where it or libmpich.so.12 is missing, the tests are
// ignored with the reason, except where PEER_TEST_MPI=1 or CI=true says MPI must work: there they fail.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Peer.Tests;

public static class MpiRun
{
    /// <summary>What one launch printed and how it ended.</summary>
    public sealed record Result(int Code, string Output, string Error, TimeSpan Took)
    {
        public override string ToString() => $"exit {Code} after {Took.TotalSeconds:F0} s\n--- stdout\n{Output}\n--- stderr\n{Error}";
    }

    static readonly Lazy<(string? Launcher, string? Why)> found = new(Find);

    static (string?, string?) Find()
    {
        string? launcher = Environment.GetEnvironmentVariable("PEER_TEST_MPIEXEC");
        if (launcher is null)
            foreach (var name in new[] { "mpiexec.mpich", "mpiexec" })
            {
                var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);
                if (path != null) { launcher = path; break; }
            }
        if (launcher is null) return (null, "no mpiexec.mpich or mpiexec on PATH (apt-get install mpich)");
        if (!NativeLibrary.TryLoad("libmpich.so.12", out var lib)) return (null, "libmpich.so.12 does not load (apt-get install mpich)");
        NativeLibrary.Free(lib);
        return (launcher, null);
    }

    /// <summary>The launcher; ignores the test when MPI is absent, or fails it where MPI is required (PEER_TEST_MPI=1 or CI=true).</summary>
    public static string Require()
    {
        var (launcher, why) = found.Value;
        if (launcher != null) return launcher;
        bool required = Environment.GetEnvironmentVariable("PEER_TEST_MPI") == "1" || Environment.GetEnvironmentVariable("CI") == "true";
        if (required) Assert.Fail($"MPI is required here (PEER_TEST_MPI=1 or CI=true) but {why}");
        Assert.Ignore($"MPI absent: {why}");
        return "";
    }

    /// <summary>The `peer` program as the launcher starts it: the dotnet host and peer.dll beside the tests.</summary>
    public static string Peer => $"{Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet"} {Path.Combine(AppContext.BaseDirectory, "peer.dll")}";

    /// <summary>Runs <c>launcher launcherArgs</c> in <paramref name="folder"/>, killing it after <paramref name="timeoutSeconds"/>;
    /// <paramref name="whileRunning"/> is called once a second with the process until it returns true.</summary>
    public static Result Launch(string launcherArgs, string folder, int timeoutSeconds, Func<Process, bool>? whileRunning = null)
    {
        var info = new ProcessStartInfo(Require(), launcherArgs)
        {
            WorkingDirectory = folder, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        bool watching = whileRunning != null;
        while (!p.WaitForExit(1000))
        {
            if (watching) watching = !whileRunning!(p);
            if (clock.Elapsed.TotalSeconds > timeoutSeconds)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                Assert.Fail($"{Path.GetFileName(info.FileName)} {launcherArgs} ran past {timeoutSeconds} s\n{stdout.Result}\n{stderr.Result}");
            }
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
    }

    /// <summary><c>mpiexec -np ranks peer args</c>.</summary>
    public static Result Peers(int ranks, string args, string folder, int timeoutSeconds = 300, Func<Process, bool>? whileRunning = null) =>
        Launch($"-np {ranks} {Peer} {args}", folder, timeoutSeconds, whileRunning);

    /// <summary>The process id of rank <paramref name="rank"/> of a run whose command line contains <paramref name="marker"/>, once it exists.</summary>
    public static int? RankProcess(string marker, int rank)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                if (!File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ').Contains(marker) ) continue;
                if (File.ReadAllText(Path.Combine(dir, "environ")).Split('\0').Contains($"PMI_RANK={rank}")) return pid;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return null;
    }
}
