// The `peer` command line (System.CommandLine): train, eval, generate, devices, layer, sweep, vision (train, eval), inspect. Every user-fixable problem
// (bad corpus, configuration, checkpoint, device) ends the command with one line on stderr and exit code 1;
// nothing the user had is overwritten.
using System.CommandLine;
using System.Text.RegularExpressions;

namespace Peer.Training;

/// <summary>Builds and runs the <c>peer</c> command line.</summary>
public static class PeerCli
{
    /// <summary>Exit code of a user-fixable error.</summary>
    public const int ErrorExit = 1;
    /// <summary>Exit code after Ctrl+C (the checkpoint was saved).</summary>
    public const int InterruptedExit = 130;

    /// <summary>Parses <paramref name="args"/> and runs the chosen command; returns the exit code.</summary>
    /// <param name="args">The command line.</param>
    /// <param name="output">Where results and progress go (default: the console).</param>
    /// <param name="error">Where errors go (default: the console's error stream).</param>
    /// <param name="interrupt">Cancelling it acts as Ctrl+C: training saves a checkpoint and stops.</param>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null, CancellationToken interrupt = default)
    {
        var root = Build(output ?? Console.Out, error ?? Console.Error, interrupt);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && args.Length > 0) // no arguments at all: the parser's help says what there is
        {
            // The parser's own report names .NET types ("System.Nullable`1[System.Int32]") and spreads over several lines.
            var command = parsed.CommandResult.Command;
            string path = command == root ? "--help" : $"{command.Name} --help";
            (error ?? Console.Error).WriteLine("error: " + OneLine(string.Join("; ", parsed.Errors.Select(e => ForPeople(e.Message)))) + $" (see: {Command(path)})");
            return ErrorExit;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error, EnableDefaultExceptionHandler = false });
    }

    static string ForPeople(string parseError)
    {
        var m = Regex.Match(parseError, @"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']*)' as expected type '(?<type>[^']*)'\.?$");
        if (!m.Success) return parseError.TrimEnd('.');
        string type = m.Groups["type"].Value;
        string expected = type.Contains("UInt64") ? $"a whole number from 0 to {ulong.MaxValue}"
            : type.Contains("Int32") ? $"a whole number from {int.MinValue} to {int.MaxValue}"
            : type.Contains("Single") || type.Contains("Double") ? "a number"
            : type.Contains("Boolean") ? "true or false"
            : "a valid value";
        return $"{m.Groups["option"].Value}: '{m.Groups["value"].Value}' is not {expected}";
    }

    /// <summary>The root command with every subcommand.</summary>
    public static RootCommand Build(TextWriter output, TextWriter error, CancellationToken interrupt = default)
    {
        var root = new RootCommand("Peer: train, evaluate and sample transformer language models whose feed-forward layer is PEER (Mixture of A Million Experts).");
        root.Subcommands.Add(TrainCommand.Create(output, error, interrupt));
        root.Subcommands.Add(EvalCommand.Create(output, error));
        root.Subcommands.Add(GenerateCommand.Create(output, error));
        root.Subcommands.Add(DevicesCommand(output, error));
        root.Subcommands.Add(LayerCommand.Create(output, error));
        root.Subcommands.Add(SweepCommand.Create(output, error, interrupt));
        root.Subcommands.Add(VisionCommand.Create(output, error, interrupt));
        root.Subcommands.Add(InspectCommand.Create(output, error));
        return root;
    }

    static Command DevicesCommand(TextWriter output, TextWriter error)
    {
        var cmd = new Command("devices", "List the accelerators Peer can use, and why absent ones are absent.");
        cmd.SetAction(_ => Guard(error, () =>
        {
            foreach (var d in Device.List())
                output.WriteLine(d.Available
                    ? $"{d.Backend.ToString().ToLowerInvariant(),-7} {d.Name}"
                    : $"{d.Backend.ToString().ToLowerInvariant(),-7} absent: {d.Reason}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Runs <paramref name="body"/>, turning user-fixable errors into one line on <paramref name="error"/> and exit code 1.</summary>
    public static int Guard(TextWriter error, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is CorpusException or DatasetException or ConfigException or CheckpointException or TrainingDivergedException
                                   or ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException
                                   or Distributed.CommunicationException)
        {
            error.WriteLine("error: " + ForPeople(e));
            return ErrorExit;
        }
    }

    // Line breaks become spaces; other control characters (a NUL in a setting, say) are shown as escapes, not written raw.
    internal static string OneLine(string message) =>
        string.Concat(message.ReplaceLineEndings(" ").Trim().Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));

    /// <summary>An exception's message as one line for people: without .NET's "(Parameter 'x')" and "Actual value was" suffixes.</summary>
    internal static string ForPeople(Exception e)
    {
        string message = e.Message;
        if (e is ArgumentException { ParamName: { } name }) message = message.Replace($" (Parameter '{name}')", "");
        int actual = message.IndexOf("Actual value was", StringComparison.Ordinal);
        if (e is ArgumentOutOfRangeException && actual > 0) message = message[..actual];
        return OneLine(message);
    }

    /// <summary>
    /// <paramref name="arguments"/> as a command the user can type: <c>peer ...</c> when a program named peer is on the PATH,
    /// else the README's form from the repository root, <c>dotnet run -c Release --project Peer.Training -- ...</c>.
    /// </summary>
    public static string Command(string arguments) => (PeerOnPath.Value ? "peer " : "dotnet run -c Release --project Peer.Training -- ") + arguments;

    /// <summary>A path quoted for a shell command line.</summary>
    public static string Quote(string path) => $"\"{path}\"";

    static readonly Lazy<bool> PeerOnPath = new(() =>
    {
        string name = OperatingSystem.IsWindows() ? "peer.exe" : "peer";
        foreach (var folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            try
            {
                if (File.Exists(Path.Combine(folder, name))) return true;
            }
            catch (ArgumentException)
            {
                // A malformed PATH entry names no folder.
            }
        }
        return false;
    });

    /// <summary>Opens a device by name, with a one-line error for unknown or absent ones. For a rank of a distributed run
    /// (<paramref name="group"/>), the CPU accelerator takes this machine's processors divided by its ranks, and a GPU backend the
    /// device of index local rank (so ranks on one machine spread over its GPUs, one each).</summary>
    public static Device OpenDevice(string name, Distributed.Communicator? group = null)
    {
        try
        {
            if (group is null || group.Size == 1) return Device.Open(name);
            var options = new DeviceOptions { CpuThreads = Math.Max(1, Environment.ProcessorCount / Math.Max(1, group.LocalSize)) };
            if (name is "cuda" or "opencl") options = options with { Index = group.LocalRank };
            return Device.Open(name, options);
        }
        catch (ArgumentException e)
        {
            throw new ConfigException($"device: {ForPeople(e)}");
        }
    }
}
