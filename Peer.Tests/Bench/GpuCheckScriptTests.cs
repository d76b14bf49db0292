using System.Diagnostics;

namespace Peer.Tests.Bench;

/// <summary>What Peer.Bench/gpu-check.sh does on a machine without a GPU (its GPU stages run only where one is): it stops before
/// building or writing anything and says why, with its documented exit code. Run with a PATH that holds no nvidia-smi (or a
/// stand-in that finds no GPU), so that the test never starts the real check.</summary>
public sealed class GpuCheckScriptTests
{
    // Runs the script with PATH = a folder holding only the given tools (links to this machine's, or scripts); returns exit code and stderr.
    static (int Code, string Error, string[] Written) Run(string work, Dictionary<string, string?> tools)
    {
        var bin = Directory.CreateDirectory(Path.Combine(work, "bin")).FullName;
        foreach (var (name, script) in tools)
        {
            string path = Path.Combine(bin, name);
            if (script is null)
            {
                string? real = new[] { "/usr/bin", "/bin" }.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
                Assume.That(real, Is.Not.Null, $"{name} not found on this machine");
                File.CreateSymbolicLink(path, real!);
            }
            else
            {
                File.WriteAllText(path, "#!/bin/sh\n" + script + "\n");
                if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }
        var info = new ProcessStartInfo("/bin/bash", [Path.Combine(Repo.Root, "Peer.Bench", "gpu-check.sh"), Path.Combine(work, "out")])
        {
            RedirectStandardError = true, RedirectStandardOutput = true, WorkingDirectory = work,
        };
        info.Environment["PATH"] = bin;
        using var p = Process.Start(info)!;
        string error = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(60_000), "the script returns at once without a GPU");
        return (p.ExitCode, error, Directory.Exists(Path.Combine(work, "out")) ? Directory.GetFileSystemEntries(Path.Combine(work, "out")) : []);
    }

    [Test]
    public void WithoutNvidiaSmiItSaysThereIsNoGpuAndRunsNothing()
    {
        Assume.That(OperatingSystem.IsLinux() && File.Exists("/bin/bash"), "needs Linux with bash");
        var work = Directory.CreateTempSubdirectory("gpu-check-").FullName;
        try
        {
            var (code, error, written) = Run(work, new() { ["timeout"] = null, ["dotnet"] = "exit 99" });
            Assert.That(code, Is.EqualTo(2));
            Assert.That(error, Does.Contain("no NVIDIA GPU here: nvidia-smi not found").And.Contain("nothing was run"));
            Assert.That(written, Is.Empty, "no output folder");

            var (code2, error2, _) = Run(work, new() { ["nvidia-smi"] = "echo 'No devices were found'; exit 6" });
            Assert.That(code2, Is.EqualTo(2));
            Assert.That(error2, Does.Contain("'nvidia-smi -L' failed: No devices were found"));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    [Test]
    public void WithAGpuButNoDotnetItNamesTheSdk()
    {
        Assume.That(OperatingSystem.IsLinux() && File.Exists("/bin/bash"), "needs Linux with bash");
        var work = Directory.CreateTempSubdirectory("gpu-check-").FullName;
        try
        {
            var (code, error, written) = Run(work, new() { ["timeout"] = null, ["grep"] = null, ["nvidia-smi"] = "echo 'GPU 0: Stand-in (UUID: GPU-0)'" });
            Assert.That(code, Is.EqualTo(3));
            Assert.That(error, Does.Contain("the .NET SDK (dotnet) is not on PATH"));
            Assert.That(written, Is.Empty);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
