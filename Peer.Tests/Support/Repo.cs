// The repository and its build outputs as the tests that run programs see them (the bench, `dotnet pack`, a
// consumer project, the installed tool): where the clone is, which configuration this test run was built in,
// and a process runner that captures both streams and kills a process that overruns its time.
using System.Diagnostics;

namespace Peer.Tests;

static class Repo
{
    /// <summary>The clone's root (the folder holding Peer.sln), found above the test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>The configuration this test assembly was built in (bin/&lt;Configuration&gt;/&lt;tfm&gt;/).</summary>
    public static string Configuration { get; } = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Peer.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"no Peer.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>The dotnet host running this test (the SDK's), else the one on PATH.</summary>
    public static string Dotnet =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>
    /// Fails when <paramref name="assembly"/> is missing or older than a source file of <paramref name="project"/>:
    /// tests that run a built program must not pass or fail on yesterday's build.
    /// </summary>
    public static void RequireBuilt(string assembly, string project)
    {
        string build = $"dotnet build Peer.sln -c {Configuration}";
        Assert.That(File.Exists(assembly), $"{assembly} is missing: build the solution first ({build}); Peer.Tests does not reference {project}");
        var built = File.GetLastWriteTimeUtc(assembly);
        var newer = Directory.EnumerateFiles(Path.Combine(Root, project), "*.*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".cs", StringComparison.Ordinal) || f.EndsWith(".csproj", StringComparison.Ordinal))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .FirstOrDefault(f => File.GetLastWriteTimeUtc(f) > built);
        Assert.That(newer, Is.Null, $"{assembly} is older than {newer}: rebuild ({build})");
    }

    /// <summary>Runs a program to its end (killed and failed after <paramref name="timeout"/>); returns its exit code and both streams.</summary>
    public static (int Exit, string Out, string Err) Run(string file, IEnumerable<string> args, string workDir, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // The test host's MSBuild and runtime settings must not leak into the child's builds or runs.
        foreach (var key in new[] { "MSBuildExtensionsPath", "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "DOTNET_STARTUP_HOOKS", "VSTEST_HOST_DEBUG" })
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            Assert.Fail($"{file} {string.Join(' ', psi.ArgumentList)} ran past {timeout.TotalSeconds:F0} s; output so far:\n{Tail(stdout.Result)}\n{Tail(stderr.Result)}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The last lines of a program's output, for a failure message.</summary>
    public static string Tail(string text, int lines = 40) => string.Join('\n', text.Split('\n').TakeLast(lines));
}
