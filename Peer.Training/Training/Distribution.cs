// How a run spreads over the ranks of a communicator (docs/distributed.md). Data: every rank holds the whole model and
// takes its share of each global batch; gradients are summed over ranks (GradientReducer) and the query BatchNorm is
// synchronised, so a step equals the one-process step on the whole batch. Experts: the same, with each PEER layer's
// expert tables and their optimizer state split by columns between the ranks (Ops.PeerExpertsSharded). Before anything
// else the ranks check that they were started alike: rank 0's description of the run is broadcast and each rank
// compares it with its own.
using System.Text;
using Peer.Distributed;

namespace Peer.Training;

/// <summary>What a distributed run splits between its ranks.</summary>
public enum ParallelMode
{
    /// <summary>The batch: each rank holds the whole model and trains on its share of each global batch.</summary>
    Data,
    /// <summary>The batch, and the PEER expert tables (with their optimizer state) by columns.</summary>
    Experts,
}

/// <summary>A run's ranks and what they split.</summary>
/// <param name="Group">The ranks (a <see cref="SingleProcess"/> for one).</param>
/// <param name="Mode">Data or expert parallelism.</param>
public sealed record Distribution(Communicator Group, ParallelMode Mode)
{
    /// <summary>The option values of <c>--parallel</c>.</summary>
    public static readonly string[] ModeNames = ["data", "experts"];

    /// <summary>Parses <c>data</c> or <c>experts</c>.</summary>
    /// <exception cref="ConfigException">Another name.</exception>
    public static ParallelMode ParseMode(string name) => name switch
    {
        "data" => ParallelMode.Data,
        "experts" => ParallelMode.Experts,
        _ => throw new ConfigException($"parallel: '{name}' is not a mode; expected data or experts"),
    };

    /// <summary>Rank r's windows of a global batch of <paramref name="batch"/>: <c>[r B / R, (r + 1) B / R)</c>.</summary>
    public (int First, int Count) Share(int batch)
    {
        int r = Group.Rank, n = Group.Size;
        int first = (int)((long)r * batch / n), next = (int)((long)(r + 1) * batch / n);
        return (first, next - first);
    }

    /// <summary>Checks that <paramref name="config"/> can be split between the ranks: every block kind must compute each token
    /// from its own sequence only (ffw, peer, pkm: their only cross-token op, the query BatchNorm, is synchronised), and every
    /// rank needs at least one sequence of each batch (and, for expert parallelism, one column of each expert table).</summary>
    /// <exception cref="ConfigException">The configuration cannot be split; the message names the setting.</exception>
    public void Validate(RunConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (Group.Size == 1) return;
        foreach (var kind in config.Model.BlockKinds().Distinct())
            ModelConfig.Require(kind is "ffw" or "peer" or "pkm",
                $"blocks: '{kind}' routes tokens over the whole batch, which a batch split between ranks cannot reproduce; distributed training takes ffw, peer and pkm blocks");
        ModelConfig.Require(config.Train.BatchSize >= Group.Size,
            $"batch_size = {config.Train.BatchSize} cannot be split between {Group.Size} ranks; expected at least one sequence per rank");
        if (Mode == ParallelMode.Experts)
        {
            ModelConfig.Require(config.Model.DModel >= Group.Size,
                $"d_model = {config.Model.DModel} cannot be split by columns between {Group.Size} ranks; expected at least one column per rank");
            // A row-wise optimizer's state of a row comes from the whole row, which split tables hold in pieces on different ranks.
            ModelConfig.Require(config.Train.SparseOptimizer == "adamw",
                $"sparse_optimizer = '{config.Train.SparseOptimizer}' keeps one state value per whole expert row, which --parallel experts splits by columns between ranks; use adamw, or --parallel data");
        }
    }

    /// <summary>
    /// Refuses to start unless every rank describes its run as rank 0 does (configuration, mode, run folder, data): rank 0's
    /// <paramref name="description"/> is broadcast, each rank compares it with its own, and the first rank that differs is named
    /// to all. Every rank must call it, first thing.
    /// </summary>
    /// <exception cref="ConfigException">A rank was started differently; the message names it and the first difference.</exception>
    public static void RequireSameLaunch(Communicator group, string description)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(description);
        if (group.Size == 1) return;
        var mine = Encoding.UTF8.GetBytes(description);
        var length = new[] { mine.Length };
        group.Broadcast(length.AsSpan());
        var root = group.Rank == 0 ? mine : new byte[length[0]];
        group.Broadcast(root.AsSpan());
        string? diff = group.Rank == 0 ? null : FirstDifference(Encoding.UTF8.GetString(root), description);
        var flags = new int[group.Size];
        group.AllGather<int>([diff is null ? 0 : 1], flags);
        int bad = Array.IndexOf(flags, 1);
        if (bad < 0) return;
        // The first rank that differs tells every rank what differs, so that whichever rank reports first says it.
        var text = Encoding.UTF8.GetBytes(group.Rank == bad ? diff! : "");
        length[0] = text.Length;
        group.Broadcast(length.AsSpan(), bad);
        if (group.Rank != bad) text = new byte[length[0]];
        group.Broadcast(text.AsSpan(), bad);
        throw new ConfigException($"launch: rank {bad} was started differently from rank 0 ({Encoding.UTF8.GetString(text)}); "
            + "start every rank with the same options, corpus and run folder");
    }

    // The first line that differs between two descriptions, quoted from both.
    static string? FirstDifference(string root, string mine)
    {
        if (root == mine) return null;
        var a = root.Split('\n');
        var b = mine.Split('\n');
        for (int i = 0; i < Math.Max(a.Length, b.Length); i++)
        {
            string x = i < a.Length ? a[i].Trim().TrimEnd(',') : "(nothing)", y = i < b.Length ? b[i].Trim().TrimEnd(',') : "(nothing)";
            if (x != y) return $"rank 0 has {x} where it has {y}";
        }
        return "the descriptions differ";
    }
}
