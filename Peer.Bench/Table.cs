namespace Peer.Bench;

/// <summary>A plain-text table: a header row, then rows of cells; numbers right-aligned.</summary>
internal sealed class Table(params string[] header)
{
    readonly List<string[]> rows = new();

    public void Add(params object?[] cells)
    {
        if (cells.Length != header.Length) throw new ArgumentException($"a row of {cells.Length} cells for {header.Length} columns");
        rows.Add(cells.Select(Format).ToArray());
    }

    static string Format(object? v) => v switch
    {
        null => "-",
        double d when double.IsNaN(d) => "-",
        double d => d >= 100 ? d.ToString("F0") : d >= 10 ? d.ToString("F1") : d.ToString("F2"),
        float f => Format((double)f),
        _ => v.ToString() ?? "",
    };

    static bool Numeric(string s) => s.Length > 0 && (char.IsDigit(s[0]) || s[0] is '-' or '.') && double.TryParse(s.TrimEnd('x'), out _);

    public void Print(TextWriter w)
    {
        var width = header.Select((h, c) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[c].Length))).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((s, c) => Numeric(s) ? s.PadLeft(width[c]) : s.PadRight(width[c]))).TrimEnd();
        w.WriteLine(Line(header));
        w.WriteLine(string.Join("  ", width.Select(n => new string('-', n))));
        foreach (var r in rows) w.WriteLine(Line(r));
        w.WriteLine();
    }
}
