// What `peer train` and `peer eval` share on the console: whether to draw Spectre.Console progress bars
// (only on an interactive terminal; redirected output gets plain lines), the bars' columns, and how an
// evaluation's baselines read.
using Spectre.Console;

namespace Peer.Training;

static class EvalDisplay
{
    /// <summary>True when <paramref name="output"/> is an interactive console that can show progress bars.</summary>
    public static bool Interactive(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>A progress display with description, bar, percentage, elapsed and remaining time.</summary>
    public static Progress Progress() => AnsiConsole.Progress()
        .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn());

    /// <summary>The baselines as evaluation lines print them: the unigram entropy of the training tokens and the Kneser–Ney losses on the evaluation's windows.</summary>
    public static string Baselines(double unigram, BaselineLosses ngram) =>
        $"unigram {unigram:F3}, Kneser-Ney trigram {ngram.Trigram:F3}, 5-gram {ngram.FiveGram:F3}";
}
