// The built-in corpus: the English prose of the .NET reference documentation that ships with every SDK
// (the XML files beside the reference assemblies in packs/Microsoft.NETCore.App.Ref/<version>/ref/<tfm>/).
// Summaries, remarks, parameter and return docs become paragraphs; markup is stripped, cross references
// keep their short name, code blocks are dropped; paragraphs are deduplicated, files read in ordinal order.
using System.Runtime.InteropServices;
using System.Text;
using System.Xml;

namespace Peer.Training;

/// <summary>Finds and extracts the built-in corpus from the .NET SDK's reference documentation.</summary>
public static class BuiltInCorpus
{
    /// <summary>The corpus name used in messages, configurations and checkpoints.</summary>
    public const string Name = "dotnet-docs";

    static readonly string[] ProseElements = ["summary", "remarks", "param", "typeparam", "returns", "value"];

    /// <summary>
    /// The folder holding the reference XML docs: <c>&lt;dotnet root&gt;/packs/Microsoft.NETCore.App.Ref/&lt;version&gt;/ref/&lt;tfm&gt;</c>,
    /// preferring the version of the running runtime, else the highest; the dotnet root is taken from <c>DOTNET_ROOT</c>,
    /// the running runtime's location, or the <c>dotnet</c> host's folder.
    /// </summary>
    /// <exception cref="CorpusException">No SDK reference pack with XML docs is found.</exception>
    public static string FindDocsFolder()
    {
        var tried = new List<string>();
        foreach (var root in CandidateRoots())
        {
            string packs = Path.Combine(root, "packs", "Microsoft.NETCore.App.Ref");
            tried.Add(packs);
            if (!Directory.Exists(packs)) continue;
            var versions = Directory.GetDirectories(packs)
                .Select(d => (Dir: d, Version: Version.TryParse(Path.GetFileName(d).Split('-')[0], out var v) ? v : null))
                .Where(x => x.Version != null)
                .OrderByDescending(x => x.Version!.Major == Environment.Version.Major ? 1 : 0)
                .ThenByDescending(x => x.Version)
                .ThenByDescending(x => Path.GetFileName(x.Dir), StringComparer.Ordinal);
            foreach (var (dir, _) in versions)
            {
                string refDir = Path.Combine(dir, "ref");
                if (!Directory.Exists(refDir)) continue;
                var tfm = Directory.GetDirectories(refDir)
                    .Where(d => Directory.EnumerateFiles(d, "*.xml").Any())
                    .OrderByDescending(d => Version.TryParse(Path.GetFileName(d).Replace("net", ""), out var v) ? v : new Version(0, 0))
                    .FirstOrDefault();
                if (tfm != null) return tfm;
            }
        }
        throw new CorpusException($"built-in corpus: no .NET SDK reference documentation found (looked in {string.Join(", ", tried.Distinct())}); install the .NET SDK or pass --corpus PATH");
    }

    static IEnumerable<string> CandidateRoots()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } env) yield return env;
        // <root>/shared/Microsoft.NETCore.App/<version>/
        string runtimeDir = RuntimeEnvironment.GetRuntimeDirectory().TrimEnd(Path.DirectorySeparatorChar);
        var up = Directory.GetParent(runtimeDir)?.Parent?.Parent;
        if (up != null) yield return up.FullName;
        if (Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" && Path.GetDirectoryName(p) is { } d) yield return d;
        yield return "/usr/share/dotnet";
        yield return "/usr/lib/dotnet";
    }

    /// <summary>Extracts the corpus text: one paragraph per line, deduplicated, in a deterministic order.</summary>
    /// <param name="folder">A folder of XML doc files; null finds the SDK's (see <see cref="FindDocsFolder"/>).</param>
    /// <exception cref="CorpusException">No folder is found, or it yields no text.</exception>
    public static string Load(string? folder = null)
    {
        folder ??= FindDocsFolder();
        var files = Directory.GetFiles(folder, "*.xml").OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal).ToArray();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var sb = new StringBuilder(16 << 20);
        foreach (var file in files)
        {
            var doc = new XmlDocument { XmlResolver = null };
            try
            {
                using var reader = XmlReader.Create(file, new XmlReaderSettings { DtdProcessing = DtdProcessing.Ignore, XmlResolver = null });
                doc.Load(reader);
            }
            catch (XmlException)
            {
                continue; // a malformed doc file contributes nothing rather than failing the corpus
            }
            var members = doc.SelectNodes("/doc/members/member");
            if (members == null) continue;
            foreach (XmlNode member in members)
                foreach (XmlNode child in member.ChildNodes)
                {
                    if (child.NodeType != XmlNodeType.Element || Array.IndexOf(ProseElements, child.Name) < 0) continue;
                    foreach (var paragraph in Paragraphs(child))
                        if (seen.Add(paragraph)) sb.Append(paragraph).Append('\n');
                }
        }
        if (sb.Length == 0) throw new CorpusException($"built-in corpus: the folder {folder} holds no documentation text");
        return sb.ToString();
    }

    /// <summary>The paragraphs of one doc element: text with markup stripped, <c>&lt;para&gt;</c> and list items split off.</summary>
    internal static IEnumerable<string> Paragraphs(XmlNode element)
    {
        var paragraphs = new List<string>();
        var current = new StringBuilder();
        Walk(element, current, paragraphs);
        Flush(current, paragraphs);
        return paragraphs;
    }

    static void Walk(XmlNode node, StringBuilder current, List<string> paragraphs)
    {
        foreach (XmlNode n in node.ChildNodes)
        {
            switch (n.NodeType)
            {
                case XmlNodeType.Text or XmlNodeType.CDATA or XmlNodeType.SignificantWhitespace or XmlNodeType.Whitespace:
                    current.Append(n.Value);
                    break;
                case XmlNodeType.Element:
                    switch (n.Name)
                    {
                        case "code":
                            break; // code is not prose
                        case "see" or "seealso" or "xref":
                            current.Append(n.InnerText.Length > 0 ? n.InnerText : ReferenceName(n));
                            break;
                        case "paramref" or "typeparamref":
                            current.Append(n.Attributes?["name"]?.Value ?? "");
                            break;
                        case "para" or "p" or "item" or "listheader" or "li" or "br":
                            Flush(current, paragraphs);
                            Walk(n, current, paragraphs);
                            Flush(current, paragraphs);
                            break;
                        case "term":
                            Walk(n, current, paragraphs);
                            current.Append(": ");
                            break;
                        default:
                            Walk(n, current, paragraphs);
                            break;
                    }
                    break;
            }
        }
    }

    /// <summary>The short name of a <c>cref</c>/<c>langword</c>/<c>uid</c>/<c>href</c> reference: <c>T:System.Collections.BitArray</c> gives <c>BitArray</c>.</summary>
    internal static string ReferenceName(XmlNode n)
    {
        var a = n.Attributes;
        if (a?["langword"]?.Value is { } word) return word;
        string? r = a?["cref"]?.Value ?? a?["uid"]?.Value ?? a?["href"]?.Value;
        if (string.IsNullOrEmpty(r)) return "";
        if (r.Length > 2 && r[1] == ':') r = r[2..];
        int paren = r.IndexOf('(');
        if (paren >= 0) r = r[..paren];
        string[] parts = r.Split('.');
        string last = parts[^1];
        if (last == "#ctor" && parts.Length > 1) last = parts[^2];
        int tick = last.IndexOf('`');
        if (tick >= 0) last = last[..tick];
        return last.TrimStart('#');
    }

    static void Flush(StringBuilder current, List<string> paragraphs)
    {
        string text = NormaliseWhitespace(current.ToString());
        current.Clear();
        if (text.Length > 0 && text.Any(char.IsLetter)) paragraphs.Add(text);
    }

    /// <summary>Collapses every run of whitespace to one space and trims the ends.</summary>
    public static string NormaliseWhitespace(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool space = false;
        foreach (char c in s)
        {
            if (char.IsWhiteSpace(c)) { space = sb.Length > 0; continue; }
            if (space) sb.Append(' ');
            space = false;
            sb.Append(c);
        }
        return sb.ToString();
    }
}

/// <summary>A corpus problem the user can fix (missing, empty or too small); its message is one line.</summary>
public sealed class CorpusException(string message) : Exception(message);
