// The three experiments of the paper as lists of model variants built from one base configuration (the first
// tiny preset, pinned in Base), each trained for the tokens its FLOP budget buys: tokens = budget / (6 A), A the model's forward
// multiply-adds per token (ModelCost). PEER's N, h, k are scaled down from the paper's (1024², 8, 16):
// N to 16²..128², h k from 128 to 32 (h = 4, k = 8); PKM from (1024², 8, 32) to (64², 4, 16); the MoE from
// 128 experts to 8, each the size of the dense FFW, expert choice with capacity factor 1.
using System.Globalization;

namespace Peer.Training;

/// <summary>What a sweep runs.</summary>
public sealed record SweepSettings
{
    /// <summary>Experiments accepted by <see cref="Experiment"/>.</summary>
    public static readonly string[] Experiments = ["isoflop", "experts", "active"];

    /// <summary><c>isoflop</c> (dense, MoE, PKM, PEER at equal FLOPs), <c>experts</c> (PEER's N with and without query BatchNorm) or <c>active</c> (PEER's h and k).</summary>
    public string Experiment { get; init; } = "isoflop";
    /// <summary>Training FLOP budgets of each variant; empty means the experiment's defaults.</summary>
    public IReadOnlyList<double> Budgets { get; init; } = [];
    /// <summary>Seeds per variant (1..Seeds).</summary>
    public int Seeds { get; init; } = 1;
    /// <summary>The reduced version: fewer and smaller variants, shorter context, smaller budget.</summary>
    public bool Quick { get; init; }
    /// <summary>Corpus path, or null for the built-in corpus.</summary>
    public string? Corpus { get; init; }
    /// <summary>Device name: cpu, cuda, opencl or auto.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ConfigException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        ModelConfig.Require(Experiments.Contains(Experiment), $"experiment = '{Experiment}': expected one of {string.Join(", ", Experiments)}");
        ModelConfig.Require(Seeds >= 1, $"seeds = {Seeds}: expected at least 1");
        foreach (var b in Budgets)
            ModelConfig.Require(b > 0 && double.IsFinite(b), $"budget = {b}: expected a positive number of FLOPs");
    }
}

/// <summary>One model to train in a sweep.</summary>
/// <param name="Name">Unique folder name within the sweep.</param>
/// <param name="Experiment">The experiment it belongs to.</param>
/// <param name="Kind">Feed-forward kind of the middle block (ffw, moe-ec, pkm, peer).</param>
/// <param name="Budget">Training FLOP budget.</param>
/// <param name="Config">Model and training settings (steps already set from the budget).</param>
/// <param name="Cost">The model's compute accounting.</param>
/// <param name="Tokens">Training tokens the budget buys, <c>budget / (6 A)</c>, before rounding to whole steps.</param>
public sealed record SweepVariant(string Name, string Experiment, string Kind, double Budget, RunConfig Config, ModelCost Cost, double Tokens)
{
    /// <summary>Tokens per optimizer step.</summary>
    public int TokensPerStep => Config.Train.BatchSize * Config.Train.Accumulation * Config.Model.Context;
    /// <summary>Training FLOPs actually spent: steps x tokens per step x 6 A.</summary>
    public double SpentFlops => (double)Config.Train.Steps * TokensPerStep * Cost.TrainFlopsPerToken;
}

/// <summary>Builds the variants of an experiment.</summary>
public static class SweepPlan
{
    /// <summary>Default budgets (FLOPs) of each experiment, full and quick.</summary>
    public static IReadOnlyList<double> DefaultBudgets(string experiment, bool quick) => (experiment, quick) switch
    {
        ("isoflop", false) => [5e10, 1.5e11],
        ("isoflop", true) => [2e10],
        (_, false) => [1e11],
        _ => [2e10],
    };

    /// <summary>The base configuration: d = 64, 3 layers, 4 heads, learned positions, context 64 (32 when quick), batch 8, learning rate 5e-3
    /// (the tiny preset the results in docs/results.md were measured with, kept here so that they stay reproducible when the preset is re-tuned);
    /// evaluation only at the end, on 128 validation windows (64 when quick).</summary>
    public static RunConfig Base(SweepSettings s)
    {
        var run = new RunConfig
        {
            Model = new ModelConfig { DModel = 64, Layers = 3, Heads = 4, Context = 64, Positions = "learned", TiedHead = true },
            Train = new TrainConfig { Tokenizer = "byte", BatchSize = 8, Accumulation = 1, LearningRate = 5e-3f, MinLearningRateFraction = 0.1f, WarmupSteps = 30, WeightDecay = 0.01f, ClipNorm = 1f },
        };
        var model = run.Model with
        {
            VocabSize = Tokenizers.Create(run.Train.Tokenizer).VocabSize,
            Context = s.Quick ? 32 : run.Model.Context,
            Peer = new PeerConfig { Experts = 64 * 64, Heads = 4, TopK = 8, QueryDim = 32, QueryNorm = "batch" },
            Pkm = new PeerConfig { Experts = 64 * 64, Heads = 4, TopK = 16, QueryDim = 32, QueryNorm = "batch" },
            Moe = new MoeConfig { Experts = 8, TopK = 1, CapacityFactor = 1.0 },
        };
        var train = run.Train with
        {
            Corpus = s.Corpus is null ? null : Path.GetFullPath(s.Corpus), Device = s.Device,
            EvalEvery = 0, EvalWindows = s.Quick ? 64 : 128, CheckpointEvery = 50,
        };
        return new RunConfig { Model = model, Train = train };
    }

    /// <summary>The variants of the settings' experiment, each with steps set from its budget, one per seed.</summary>
    /// <exception cref="ConfigException">Invalid settings.</exception>
    public static IReadOnlyList<SweepVariant> Build(Device device, SweepSettings s)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(s);
        s.Validate();
        var baseRun = Base(s);
        var budgets = s.Budgets.Count > 0 ? s.Budgets : DefaultBudgets(s.Experiment, s.Quick);
        var shapes = new List<(string Name, string Kind, ModelConfig Model)>();
        var m = baseRun.Model;
        string[] Middle(string kind) => Enumerable.Range(0, m.Layers).Select(i => i == m.Layers / 2 ? kind : "ffw").ToArray();
        switch (s.Experiment)
        {
            case "isoflop":
                int[] widths = s.Quick ? [32, 64] : [48, 64, 96];
                foreach (int d in widths)
                    foreach (var kind in new[] { "ffw", "moe-ec", "pkm", "peer" })
                        shapes.Add(($"{kind}-d{d}", kind, m with { DModel = d, Blocks = Middle(kind) }));
                break;
            case "experts":
                int[] sides = s.Quick ? [16, 32, 64] : [16, 32, 64, 128];
                foreach (int n in sides)
                    foreach (var norm in new[] { "batch", "none" })
                        shapes.Add(($"peer-N{n * n}-{(norm == "batch" ? "bn" : "nobn")}", "peer",
                            m with { Blocks = Middle("peer"), Peer = m.Peer with { Experts = n * n, QueryNorm = norm } }));
                break;
            default: // active
                (int H, int K)[] hk = s.Quick ? [(1, 8), (2, 8), (4, 8), (8, 8)] : [(1, 8), (2, 8), (4, 8), (8, 8), (2, 16), (8, 4)];
                foreach (var (h, k) in hk)
                    shapes.Add(($"peer-h{h}k{k}", "peer", m with { Blocks = Middle("peer"), Peer = m.Peer with { Heads = h, TopK = k } }));
                break;
        }
        var variants = new List<SweepVariant>();
        foreach (double budget in budgets)
            foreach (var (name, kind, model) in shapes)
            {
                var cost = ModelCost.Of(device, model);
                double tokens = cost.TokensFor(budget);
                int perStep = baseRun.Train.BatchSize * baseRun.Train.Accumulation * model.Context;
                int steps = Math.Max(1, (int)Math.Round(tokens / perStep));
                for (int seed = 1; seed <= s.Seeds; seed++)
                {
                    var train = baseRun.Train with { Steps = steps, WarmupSteps = Math.Min(baseRun.Train.WarmupSteps, steps / 10), Seed = (ulong)seed };
                    var config = new RunConfig { Model = model, Train = train };
                    config.Validate();
                    variants.Add(new SweepVariant($"{name}-b{FormatBudget(budget)}-s{seed}", s.Experiment, kind, budget, config, cost, tokens));
                }
            }
        return variants;
    }

    /// <summary>A budget as a short string (<c>2e10</c>, <c>1.5e11</c>).</summary>
    public static string FormatBudget(double budget)
    {
        int exp = (int)Math.Floor(Math.Log10(budget));
        double mantissa = budget / Math.Pow(10, exp);
        return Math.Round(mantissa, 3).ToString(CultureInfo.InvariantCulture) + "e" + exp.ToString(CultureInfo.InvariantCulture);
    }
}
