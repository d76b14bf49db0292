// The `peer` command line (System.CommandLine): train, eval, generate, devices. Every user-fixable problem
// (bad corpus, configuration, checkpoint, device) ends the command with one line on stderr and exit code 1;
// nothing the user had is overwritten.
using System.CommandLine;

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
        return root.Parse(args).Invoke(new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error, EnableDefaultExceptionHandler = false });
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
        catch (Exception e) when (e is CorpusException or ConfigException or CheckpointException or ArgumentException or IOException or UnauthorizedAccessException
            or Distributed.CommunicationException)
        {
            error.WriteLine("error: " + OneLine(e.Message));
            return ErrorExit;
        }
    }

    internal static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();

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
            throw new ConfigException($"device: {OneLine(e.Message)}");
        }
    }
}
