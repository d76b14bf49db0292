// The built bench as its users run it: a separate process started from Peer.Bench's build output. Nothing
// references Peer.Bench (.ci/check-structure enforces it), so its tests go through its command line and its files.
namespace Peer.Tests.Bench;

static class BenchProgram
{
    /// <summary>Peer.Bench.dll as the solution built it in this test run's configuration.</summary>
    public static string Dll => Path.Combine(Repo.Root, "Peer.Bench", "bin", Repo.Configuration, "net10.0", "Peer.Bench.dll");

    /// <summary>The folder of the torch suite's scripts beside the bench's assembly.</summary>
    public static string TorchScripts => Path.Combine(Path.GetDirectoryName(Dll)!, "torch");

    /// <summary>Runs the bench with <paramref name="args"/> in <paramref name="workDir"/>; fails the test when its build is missing or stale.</summary>
    public static (int Exit, string Out, string Err) Run(string workDir, IEnumerable<string> args, IReadOnlyDictionary<string, string>? env = null)
    {
        Repo.RequireBuilt(Dll, "Peer.Bench");
        return Repo.Run(Repo.Dotnet, [Dll, .. args], workDir, TimeSpan.FromMinutes(8), env);
    }
}
