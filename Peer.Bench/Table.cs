namespace Peer.Bench;

/// <summary>A table of text cells: printed aligned (numbers right-aligned) and written as markdown.</summary>
internal sealed class Table(params string[] header)
{
    readonly List<string[]> rows = new();

    public int Count => rows.Count;

    public void Add(params object?[] cells)
    {
        if (cells.Length != header.Length) throw new ArgumentException($"a row of {cells.Length} cells for {header.Length} columns");
        rows.Add(cells.Select(Format).ToArray());
    }

    static string Format(object? v) => v switch
    {
        null => "-",
        double d => Fmt.Num(d),
        float f => Fmt.Num(f),
        _ => v.ToString() ?? "",
    };

    static bool Numeric(string s) => s.Length > 0 && (char.IsDigit(s[0]) || s[0] is '-' or '.') && double.TryParse(s.Split(' ')[0].TrimEnd('x', '%'), out _);

    public void Print(TextWriter w)
    {
        var width = header.Select((h, c) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[c].Length))).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((s, c) => Numeric(s) ? s.PadLeft(width[c]) : s.PadRight(width[c]))).TrimEnd();
        w.WriteLine(Line(header));
        w.WriteLine(string.Join("  ", width.Select(n => new string('-', n))));
        foreach (var r in rows) w.WriteLine(Line(r));
        w.WriteLine();
    }

    public string ToMarkdown()
    {
        var w = new StringWriter();
        w.WriteLine("| " + string.Join(" | ", header.Select(h => h.Replace("|", "\\|"))) + " |");
        w.WriteLine("|" + string.Join("|", header.Select((_, c) => rows.Count > 0 && rows.All(r => Numeric(r[c]) || r[c] == "-") ? "---:" : "---")) + "|");
        foreach (var r in rows) w.WriteLine("| " + string.Join(" | ", r.Select(c => c.Replace("|", "\\|"))) + " |");
        return w.ToString();
    }
}
