// Everything a comment, a doc or a help text cites must be in the repository: the PEER spec and the ILGPU notes
// under their docs/ names, docs/ paths that exist, Markdown links that resolve, and no issue numbers (which mean
// nothing to a reader of the code). A cheap scan of the source tree, found from the test assembly's directory.
using System.Text.RegularExpressions;

namespace Peer.Tests.Docs;

public sealed partial class ReferencesTests
{
    // Folders that hold build output, runs or tool state rather than sources.
    static readonly HashSet<string> Skipped = ["bin", "obj", ".git", "TestResults", "runs", "node_modules"];
    static readonly HashSet<string> Scanned = [".cs", ".md", ".csproj", ".props", ".targets", ".yml", ".yaml", ".sh"];
    // This file: its test cases hold the very mistakes the scan looks for.
    const string Self = "Peer.Tests/Docs/ReferencesTests.cs";

    [GeneratedRegex(@"\b(PEER-SPEC|ILGPU-NOTES)\.md")]
    private static partial Regex OldNotesName();

    // A path with a docs/ component, starting at a word boundary (not inside a URL or a longer path).
    [GeneratedRegex(@"(?<![\w./:-])((?:[\w.-]+/)*docs/[\w./-]*[\w-])")]
    private static partial Regex DocsPath();

    [GeneratedRegex(@"\b[Ii]ssues?\s+#?\d+")]
    private static partial Regex IssueNumber();

    [GeneratedRegex(@"(?<![\w.])/work/")]
    private static partial Regex OutsidePath();

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex MarkdownLink();

    static string RepoRoot()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Peer.sln"))) dir = dir.Parent;
        Assert.That(dir, Is.Not.Null, "Peer.sln above the test directory " + TestContext.CurrentContext.TestDirectory);
        return dir!.FullName;
    }

    static IEnumerable<string> SourceFiles(string root)
    {
        var pending = new Stack<string>([root]);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            foreach (var sub in Directory.EnumerateDirectories(dir))
                if (!Skipped.Contains(Path.GetFileName(sub))) pending.Push(sub);
            foreach (var file in Directory.EnumerateFiles(dir))
                if (Scanned.Contains(Path.GetExtension(file)) || Path.GetFileName(dir) == ".ci")
                    yield return Path.GetRelativePath(root, file).Replace('\\', '/');
        }
    }

    /// <summary>What is wrong with the references in <paramref name="text"/>, the contents of <paramref name="file"/> (relative to <paramref name="root"/>).</summary>
    static IEnumerable<string> Problems(string root, string file, string text)
    {
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i], at = $"{file}:{i + 1}";
            foreach (Match m in OldNotesName().Matches(line))
                yield return $"{at}: cites {m.Value}, which is not in the repository; the project's copy is {(m.Groups[1].Value == "PEER-SPEC" ? "docs/peer-spec.md" : "docs/ilgpu.md")}";
            foreach (Match m in DocsPath().Matches(line))
                if (!File.Exists(Path.Combine(root, m.Value)) && !Directory.Exists(Path.Combine(root, m.Value)))
                    yield return $"{at}: cites {m.Value}, which does not exist";
            foreach (Match m in IssueNumber().Matches(line))
                yield return $"{at}: cites '{m.Value}'; say what the goal or item is instead of an issue number";
            if (OutsidePath().IsMatch(line))
                yield return $"{at}: cites a path outside the repository";
            if (!file.EndsWith(".md")) continue;
            foreach (Match m in MarkdownLink().Matches(line))
            {
                string target = m.Groups[1].Value.Split('#')[0];
                if (target.Length == 0 || target.Contains("://") || target.StartsWith("mailto:")) continue;
                string resolved = Path.Combine(root, Path.GetDirectoryName(file) ?? "", target);
                if (!File.Exists(resolved) && !Directory.Exists(resolved))
                    yield return $"{at}: links to {target}, which does not exist relative to {file}";
            }
        }
    }

    [Test]
    public void EveryReferenceResolvesInsideTheRepository()
    {
        string root = RepoRoot();
        var files = SourceFiles(root).Where(f => f != Self).ToList();
        Assert.That(files, Has.Member("README.md").And.Member("docs/peer-spec.md").And.Member("Peer.Core/Autograd/Tape.cs").And.Member(".ci/run"),
            "the scan sees the sources");
        var problems = files.SelectMany(f => Problems(root, f, File.ReadAllText(Path.Combine(root, f)))).ToList();
        Assert.That(problems, Is.Empty);
    }

    [TestCase("// the layer (PEER-SPEC.md steps 2-4)", "docs/peer-spec.md")]
    [TestCase("// fast: see ILGPU-NOTES.md", "docs/ilgpu.md")]
    [TestCase("// see docs/PEER-SPEC.md", "docs/peer-spec.md")]
    [TestCase("/// as docs/no-such-page.md says", "docs/no-such-page.md, which does not exist")]
    [TestCase("// The library half of `peer layer` (issue 3 item 6)", "'issue 3'")]
    [TestCase("Goals issue 7 reports against", "'issue 7'")]
    [TestCase("(issue #12's goal)", "'issue #12'")]
    [TestCase("// copied from /work/shared/notes", "outside the repository")]
    [TestCase("see [the spec](peer-spec.md)", "links to peer-spec.md")]
    public void TheScanCatchesEachKindOfBadReference(string line, string expected)
    {
        var problems = Problems(RepoRoot(), "README.md", line).ToList();
        Assert.That(problems, Has.Some.Contain(expected));
    }

    [TestCase("// the layer (docs/peer-spec.md, steps 2-4); notes in docs/ilgpu.md.")]
    [TestCase("![curve](Peer.Training/docs/tiny-loss.png) and [layers](docs/layers.md#cost-accounting)")]
    [TestCase("see https://example.org/docs/page and the `docs/` folder")]
    [TestCase("// <root>/shared/Microsoft.NETCore.App/<version>/")]
    public void TheScanAcceptsReferencesThatResolve(string line)
    {
        Assert.That(Problems(RepoRoot(), "README.md", line), Is.Empty);
    }
}
