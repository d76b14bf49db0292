// The run's metrics: one CSV row per step (evaluation columns filled on evaluation steps), appended as
// training goes, and the expert-usage measures of the paper (usage fraction and unevenness).
using System.Globalization;
using System.Text;

namespace Peer.Training;

/// <summary>One row of metrics.csv.</summary>
/// <param name="Step">Optimizer step (1-based).</param>
/// <param name="Loss">Training loss of the step (mean over its micro-batches).</param>
/// <param name="LearningRate">Learning rate used by the step.</param>
/// <param name="TokensPerSecond">Training tokens per second of the step.</param>
/// <param name="ValLoss">Validation loss, on evaluation steps.</param>
/// <param name="ExpertUsage">Mean over PEER layers of the fraction of experts used, on evaluation steps.</param>
/// <param name="Unevenness">Mean over PEER layers of the unevenness (KL divergence from uniform), on evaluation steps.</param>
/// <param name="LiveMiB">Device memory held by live tensors after the step, MiB.</param>
/// <param name="PeakMiB">Peak device memory so far, MiB.</param>
public sealed record MetricRow(int Step, double Loss, double LearningRate, double TokensPerSecond, double? ValLoss,
    double? ExpertUsage, double? Unevenness, double LiveMiB, double PeakMiB)
{
    /// <summary>Validation perplexity, exp(<see cref="ValLoss"/>).</summary>
    public double? ValPerplexity => ValLoss is { } v ? Math.Exp(v) : null;

    /// <summary>The CSV header line.</summary>
    public const string Header = "step,loss,lr,tokens_per_s,val_loss,val_ppl,expert_usage,unevenness,live_mib,peak_mib";

    /// <summary>The CSV line (invariant culture, round-trip precision for losses).</summary>
    public string ToCsv()
    {
        static string F(double? v, string format = "R") => v is { } x ? x.ToString(format, CultureInfo.InvariantCulture) : "";
        return string.Join(",", Step.ToString(CultureInfo.InvariantCulture), F(Loss), F(LearningRate, "G6"), F(TokensPerSecond, "F1"),
            F(ValLoss), F(ValPerplexity, "G6"), F(ExpertUsage, "G6"), F(Unevenness, "G6"), F(LiveMiB, "F2"), F(PeakMiB, "F2"));
    }

    /// <summary>Parses a line written by <see cref="ToCsv"/>.</summary>
    public static MetricRow Parse(string line)
    {
        var f = line.Split(',');
        double? D(int i) => f[i].Length == 0 ? null : double.Parse(f[i], CultureInfo.InvariantCulture);
        return new MetricRow(int.Parse(f[0], CultureInfo.InvariantCulture), D(1)!.Value, D(2)!.Value, D(3)!.Value, D(4), D(6), D(7), D(8)!.Value, D(9)!.Value);
    }
}

/// <summary>Reads and writes a run's metrics.csv.</summary>
public static class MetricsFile
{
    /// <summary>The rows of <paramref name="path"/> with step at most <paramref name="upToStep"/> (all when null); none when the file is absent.</summary>
    /// <exception cref="InvalidDataException">A line does not parse; the message names the file and the line.</exception>
    public static List<MetricRow> Read(string path, int? upToStep = null)
    {
        if (!File.Exists(path)) return new();
        var rows = new List<MetricRow>();
        int number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (number == 1 || line.Length == 0) continue;
            MetricRow row;
            try
            {
                row = MetricRow.Parse(line);
            }
            catch (Exception e) when (e is FormatException or OverflowException or IndexOutOfRangeException or InvalidOperationException)
            {
                throw new InvalidDataException($"{Path.GetFullPath(path)}: line {number} is damaged (not a row of {MetricRow.Header.Split(',').Length} comma-separated numbers); repair or delete that line");
            }
            if (upToStep is null || row.Step <= upToStep) rows.Add(row);
        }
        return rows;
    }

    /// <summary>Replaces <paramref name="path"/> atomically with the header and <paramref name="rows"/>.</summary>
    public static void Write(string path, IEnumerable<MetricRow> rows)
    {
        var sb = new StringBuilder(MetricRow.Header).Append('\n');
        foreach (var r in rows) sb.Append(r.ToCsv()).Append('\n');
        AtomicFile.WriteAllText(path, sb.ToString());
    }
}

/// <summary>Writes files so that a reader (or a crash) sees the old content or the new, never a part.</summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="text"/> to a temporary file beside <paramref name="path"/> and renames it over it.</summary>
    public static void WriteAllText(string path, string text) => Write(path, tmp => File.WriteAllText(tmp, text));

    /// <summary>Lets <paramref name="write"/> fill a temporary path beside <paramref name="path"/> (same extension), then renames it over it.</summary>
    public static void Write(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileNameWithoutExtension(full)}.{Environment.ProcessId}.tmp{Path.GetExtension(full)}");
        try
        {
            write(tmp);
            File.Move(tmp, full, overwrite: true);
        }
        catch (IOException e) when (e.Message.Contains(tmp, StringComparison.Ordinal))
        {
            throw new IOException(e.Message.Replace(tmp, full), e); // the temporary is ours; the message names the user's file
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}
