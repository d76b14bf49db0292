// The torch suite's side of its PyTorch scripts (Peer.Bench/torch/): finding a Python that imports torch, and
// one script process per configuration, driven one step at a time over stdin/stdout (JSON lines, the
// protocol of torch/worker.py) so that its steps interleave with Peer's in the same rounds. One process
// per configuration also makes its peak resident memory (getrusage) that configuration's own figure.
using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Peer.Bench;

/// <summary>A Python interpreter that imports torch.</summary>
/// <param name="Path">The interpreter as it is started.</param>
/// <param name="TorchVersion">torch.__version__.</param>
internal sealed record TorchPython(string Path, string TorchVersion)
{
    /// <summary>Environment variable naming the interpreter to use instead of searching.</summary>
    public const string Variable = "PEER_BENCH_PYTHON";

    /// <summary>Interpreters tried in order when <see cref="Variable"/> is unset: Debian's python3-torch lives with /usr/bin/python3,
    /// which a python3 earlier on PATH (pyenv, a virtual environment) may hide.</summary>
    static readonly string[] Candidates = ["/usr/bin/python3", "python3", "python"];

    /// <summary>The first interpreter that imports torch, or null with the reason (what each candidate said).</summary>
    public static TorchPython? Find(out string reason)
    {
        string? chosen = Environment.GetEnvironmentVariable(Variable);
        var candidates = string.IsNullOrWhiteSpace(chosen) ? Candidates : [chosen.Trim()];
        var tried = new List<string>();
        foreach (var c in candidates)
        {
            var (ok, text) = Probe(c);
            if (ok) { reason = ""; return new TorchPython(c, text); }
            tried.Add($"{c}: {text}");
        }
        reason = $"no Python that imports torch ({string.Join("; ", tried)})" +
            (string.IsNullOrWhiteSpace(chosen) ? $"; install python3-torch or set {Variable} to an interpreter that imports torch" : $" ({Variable} is set)");
        return null;
    }

    static (bool Ok, string Text) Probe(string python)
    {
        var info = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-c", "import torch; print(torch.__version__)" }) info.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(info)!;
            var err = p.StandardError.ReadToEndAsync();
            string output = p.StandardOutput.ReadToEnd().Trim();
            if (!p.WaitForExit(TimeSpan.FromMinutes(2))) { p.Kill(entireProcessTree: true); return (false, "did not answer within 2 minutes"); }
            if (p.ExitCode == 0 && output.Length > 0) return (true, output.Split('\n')[^1]);
            string last = err.Result.Trim().Split('\n').LastOrDefault(l => l.Trim().Length > 0)?.Trim() ?? $"exit code {p.ExitCode}";
            return (false, last);
        }
        catch (Win32Exception e)
        {
            return (false, e.Message);
        }
    }

    /// <summary>The scripts' folder: copied beside the bench's assembly by Peer.Bench.csproj.</summary>
    public static string ScriptFolder => System.IO.Path.Combine(AppContext.BaseDirectory, "torch");
}

/// <summary>Phase times of one PyTorch step, in seconds.</summary>
internal readonly record struct TorchStep(int Threads, double Forward, double Backward, double Optimizer, double Total);

/// <summary>One script process holding one configuration (see torch/worker.py for the protocol).</summary>
internal sealed class TorchWorker : IDisposable
{
    readonly Process process;
    readonly StringBuilder errors = new();
    readonly TimeSpan timeout;
    readonly string what;

    /// <summary>The script's "ready" line: params, tokens, rss_import_bytes, torch version, its configuration.</summary>
    public JsonElement Ready { get; }

    /// <summary>Starts <paramref name="script"/> (in <see cref="TorchPython.ScriptFolder"/>) with "time ... --serve" and waits for its ready line.</summary>
    /// <exception cref="InvalidOperationException">The script did not start, failed, or did not answer in time; the message holds its last error lines.</exception>
    public TorchWorker(TorchPython python, string script, IEnumerable<string> args, TimeSpan timeout)
    {
        this.timeout = timeout;
        string path = Path.Combine(TorchPython.ScriptFolder, script);
        if (!File.Exists(path)) throw new InvalidOperationException($"the PyTorch script {path} is missing (it is copied beside the bench when it is built)");
        var info = new ProcessStartInfo(python.Path)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            WorkingDirectory = TorchPython.ScriptFolder,
        };
        info.ArgumentList.Add(path);
        info.ArgumentList.Add("time");
        foreach (var a in args) info.ArgumentList.Add(a);
        info.ArgumentList.Add("--serve");
        info.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        what = $"{script} {string.Join(' ', info.ArgumentList.Skip(2))}";
        process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {python.Path}");
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (errors) errors.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        Ready = Next("ready");
    }

    /// <summary>One training step at <paramref name="threads"/> threads (torch's and OpenBLAS's).</summary>
    public TorchStep Step(int threads)
    {
        process.StandardInput.WriteLine($"step {threads}");
        process.StandardInput.Flush();
        var r = Next("step");
        return new TorchStep(threads, Ms(r, "forward_ms"), Ms(r, "backward_ms"), Ms(r, "optimizer_ms"), Ms(r, "total_ms"));
    }

    static double Ms(JsonElement e, string name) => e.GetProperty(name).GetDouble() / 1e3;

    /// <summary>Ends the process; returns its peak resident bytes and its resident bytes once torch was imported.</summary>
    public (long PeakRss, long ImportRss) Quit()
    {
        process.StandardInput.WriteLine("quit");
        process.StandardInput.Flush();
        var done = Next("done");
        process.WaitForExit(timeout);
        return (done.GetProperty("peak_rss_bytes").GetInt64(), done.GetProperty("rss_import_bytes").GetInt64());
    }

    JsonElement Next(string expected)
    {
        while (true)
        {
            var line = process.StandardOutput.ReadLineAsync();
            if (!line.Wait(timeout)) throw Failure($"no answer within {timeout.TotalMinutes:F0} minutes");
            if (line.Result is not { } text) throw Failure("the process ended");
            if (!text.StartsWith('{')) continue; // a library's stray print
            var e = JsonDocument.Parse(text).RootElement.Clone();
            string kind = e.GetProperty("event").GetString() ?? "";
            if (kind == expected) return e;
            if (kind == "error") throw Failure(e.GetProperty("message").GetString() ?? "");
        }
    }

    InvalidOperationException Failure(string why)
    {
        if (!process.HasExited) process.Kill(entireProcessTree: true);
        process.WaitForExit(5000);
        string tail;
        lock (errors) tail = string.Join(" | ", errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).TakeLast(3));
        string code = process.HasExited ? $", exit code {process.ExitCode}" : "";
        return new InvalidOperationException($"{what}: {why}{code}{(tail.Length > 0 ? ": " + tail : "")}");
    }

    public void Dispose()
    {
        if (!process.HasExited)
        {
            try { process.StandardInput.Close(); } catch (IOException) { }
            if (!process.WaitForExit(5000)) process.Kill(entireProcessTree: true);
        }
        process.Dispose();
    }
}
