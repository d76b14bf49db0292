// A run folder belongs to one training at a time: the run holds an OS lock on the folder's .peer.lock file (opened
// with FileShare.None, which .NET implements with flock on Unix and a share mode on Windows) for as long as it
// runs. The operating system drops the lock when the process ends, however it ends, so a killed run leaves at most
// the lock file itself, which the next run simply locks again; the file is never deleted, because deleting it
// would let a third process lock a new file while a second one still holds the old. While a run holds the lock it
// may also clear what failed earlier runs left: temporary files and checkpoint folders of interrupted writes, and
// the files of a run that ended before its first checkpoint.
using System.Text.RegularExpressions;

namespace Peer.Training;

/// <summary>Exclusive ownership of a run folder for the lifetime of a training; dispose it to release the folder.</summary>
public sealed class RunLock : IDisposable
{
    /// <summary>The lock file's name inside the run folder.</summary>
    public const string FileName = ".peer.lock";

    readonly FileStream stream;

    /// <summary>The locked folder (full path).</summary>
    public string Folder { get; }

    RunLock(string folder, FileStream stream)
    {
        Folder = folder;
        this.stream = stream;
    }

    /// <summary>Locks <paramref name="folder"/>, creating it and its lock file when needed.</summary>
    /// <exception cref="ConfigException">Another process (or another trainer in this one) holds the folder.</exception>
    public static RunLock Acquire(string folder)
    {
        string full = Path.GetFullPath(folder);
        Directory.CreateDirectory(full);
        return Open(full, FileMode.OpenOrCreate)!;
    }

    /// <summary>Locks <paramref name="folder"/> when it already has a lock file; returns null, creating nothing, when it has none.</summary>
    /// <exception cref="ConfigException">Another process (or another trainer in this one) holds the folder.</exception>
    public static RunLock? AcquireExisting(string folder)
    {
        string full = Path.GetFullPath(folder);
        return File.Exists(Path.Combine(full, FileName)) ? Open(full, FileMode.Open) : null;
    }

    static RunLock? Open(string folder, FileMode mode)
    {
        string path = Path.Combine(folder, FileName);
        try
        {
            return new RunLock(folder, new FileStream(path, mode, FileAccess.ReadWrite, FileShare.None));
        }
        catch (FileNotFoundException) when (mode == FileMode.Open)
        {
            return null; // removed since we looked: nothing to lock yet
        }
        catch (IOException e) when (HeldByAnother(e))
        {
            throw new ConfigException($"run folder {folder} is in use by another training (it holds the folder's lock); wait for it to end, or pass another --out");
        }
    }

    // Windows reports a sharing or lock violation (HRESULT codes 32, 33); Unix reports flock's EWOULDBLOCK as the errno
    // itself (11 on Linux, 35 on macOS and the BSDs).
    static bool HeldByAnother(IOException e) =>
        OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 32 or 33 : e.HResult is 11 or 35;

    /// <inheritdoc />
    public void Dispose() => stream.Dispose();
}

/// <summary>What a run folder holds, and the clearing of what failed runs left in it (call these only while holding its <see cref="RunLock"/>).</summary>
public static partial class RunFolder
{
    /// <summary>Files a run writes beside its checkpoints.</summary>
    static readonly string[] RunFiles = ["config.json", "metrics.csv", "loss.png", "experts.png", "baselines.json"];

    // AtomicFile's temporaries (.metrics.123.tmp.csv), the safetensors writer's (.model.safetensors.<guid>.tmp) and
    // Checkpoint.Save's folders (.step-0000100.123.tmp).
    [GeneratedRegex(@"^\..+\.tmp(\.[A-Za-z0-9]+)?$")]
    private static partial Regex TempName();

    [GeneratedRegex(@"^step-\d{7}$")]
    private static partial Regex StepName();

    /// <summary>Whether <paramref name="name"/> is the name of a temporary file or folder of an interrupted write.</summary>
    public static bool IsTemporary(string name) => TempName().IsMatch(name);

    /// <summary>Whether <paramref name="name"/> is a checkpoint folder's name (<c>step-NNNNNNN</c>).</summary>
    public static bool IsStepFolder(string name) => StepName().IsMatch(name);

    /// <summary>Removes temporary files and folders that interrupted writes left in <paramref name="runDir"/> and its checkpoints folder.</summary>
    /// <returns>How many were removed.</returns>
    public static int RemoveTemporaries(string runDir)
    {
        int removed = 0;
        foreach (var folder in new[] { runDir, Path.Combine(runDir, "checkpoints") })
        {
            if (!Directory.Exists(folder)) continue;
            foreach (var entry in Directory.EnumerateFileSystemEntries(folder).ToList())
            {
                if (!IsTemporary(Path.GetFileName(entry))) continue;
                if (Directory.Exists(entry)) Directory.Delete(entry, true);
                else File.Delete(entry);
                removed++;
            }
        }
        return removed;
    }

    /// <summary>
    /// What a fresh run in <paramref name="runDir"/> would replace: the files of a run that ended before its first checkpoint, or
    /// whose checkpoints were deleted (config.json, metrics.csv, plots, a checkpoints folder without a checkpoint, a pointer to a
    /// missing one). Temporaries and the lock file are not listed.
    /// </summary>
    /// <exception cref="ConfigException">The folder holds a checkpoint, or files that no run wrote.</exception>
    public static IReadOnlyList<string> LeftoversForAFreshRun(string runDir)
    {
        string full = Path.GetFullPath(runDir);
        if (!Directory.Exists(full)) return [];
        if (Checkpoint.Exists(full))
            throw new ConfigException($"run folder {full} already holds a checkpoint; continue it with: {PeerCli.Command($"train --resume --out {PeerCli.Quote(full)}")}, or pass another --out");
        var leftovers = new List<string>();
        var foreign = new List<string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(full).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(entry);
            if (name == RunLock.FileName || IsTemporary(name)) continue;
            bool ours = RunFiles.Contains(name) ? File.Exists(entry)
                : name == "checkpoint.json" ? Checkpoint.Dangles(full)
                : name == "checkpoints" && Directory.Exists(entry) && Directory.EnumerateFileSystemEntries(entry)
                    .All(e => Directory.Exists(e) && (IsTemporary(Path.GetFileName(e)) || IsStepFolder(Path.GetFileName(e))));
            (ours ? leftovers : foreign).Add(name);
        }
        if (foreign.Count > 0)
            throw new ConfigException($"run folder {full} is not empty (it holds {string.Join(", ", foreign.Take(3))}{(foreign.Count > 3 ? ", ..." : "")}, which no run wrote); pass an empty or new --out folder");
        return leftovers;
    }

    /// <summary>Deletes <paramref name="leftovers"/> (names from <see cref="LeftoversForAFreshRun"/>) from <paramref name="runDir"/>.</summary>
    public static void Remove(string runDir, IEnumerable<string> leftovers)
    {
        foreach (var name in leftovers)
        {
            string path = Path.Combine(runDir, name);
            if (Directory.Exists(path)) Directory.Delete(path, true);
            else File.Delete(path);
        }
    }
}
