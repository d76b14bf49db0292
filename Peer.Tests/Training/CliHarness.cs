// Running the `peer` program in tests: in process (PeerCli.Run with captured streams) or as a child process (the
// built peer.dll under `dotnet`, so it can be killed with SIGKILL), taking a folder's snapshot, and asserting the
// contract every refused command keeps: exit code 1, one line on stderr written for people, no file changed.
using System.Diagnostics;
using System.Security.Cryptography;
using Peer.Training;

namespace Peer.Tests.Training;

static class CliHarness
{
    /// <summary>What a message for people never contains: .NET parameter suffixes, type names, exception names, stack frames.</summary>
    public static readonly string[] Forbidden = ["(Parameter", "System.", "`1", "Exception", "   at ", ".tmp"];

    public static (int Code, string Out, string Err) RunPeer(params string[] args) => RunPeer(default, args);

    public static (int Code, string Out, string Err) RunPeer(CancellationToken interrupt, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PeerCli.Run(args, o, e, interrupt);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>SHA-256 of every file under <paramref name="dir"/>.</summary>
    public static Dictionary<string, string> Snapshot(string dir) => Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
        .ToDictionary(f => f, f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    /// <summary>Exit code 1, one line on stderr containing <paramref name="expected"/> and none of <see cref="Forbidden"/>.</summary>
    public static void AssertOneLineError((int Code, string Out, string Err) r, string expected)
    {
        Assert.That(r.Code, Is.EqualTo(PeerCli.ErrorExit), r.Err + r.Out);
        Assert.That(r.Err.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1), "one line: " + r.Err);
        Assert.That(r.Err, Does.StartWith("error: ").And.Contain(expected));
        AssertForPeople(r.Err);
    }

    /// <summary>As <see cref="AssertOneLineError(ValueTuple{int, string, string}, string)"/>, and no file under <paramref name="dir"/> changed.</summary>
    public static void AssertOneLineError((int Code, string Out, string Err) r, string expected, string dir, Dictionary<string, string> before)
    {
        AssertOneLineError(r, expected);
        Assert.That(Snapshot(dir), Is.EqualTo(before), "no file was created, changed or removed: " + r.Err);
    }

    public static void AssertForPeople(string message)
    {
        foreach (var f in Forbidden) Assert.That(message, Does.Not.Contain(f), "a message for people: " + message);
    }

    /// <summary>Starts the built program as a child process (its output is discarded).</summary>
    public static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "peer.dll"));
        foreach (var a in args) info.ArgumentList.Add(a);
        var p = Process.Start(info)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Waits (up to two minutes) until <paramref name="condition"/> holds.</summary>
    public static void WaitFor(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > TimeSpan.FromMinutes(2)) Assert.Fail("timed out waiting for " + what);
            Thread.Sleep(20);
        }
    }

    /// <summary>Lines of a file another process may be writing (shared read).</summary>
    public static int Lines(string path)
    {
        if (!File.Exists(path)) return 0;
        try
        {
            using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var r = new StreamReader(s);
            return r.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>Writes <paramref name="config"/> to <paramref name="dir"/>/<paramref name="name"/> and returns the path.</summary>
    public static string WriteConfig(string dir, string name, RunConfig config)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, config.ToJson());
        return path;
    }
}
