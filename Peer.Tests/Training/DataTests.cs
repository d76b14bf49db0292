// Corpus, tokenizers, split and sampler: the built-in corpus loads and is prose; tokenizers round-trip;
// the split and the sampler are deterministic; bad corpora give one-line errors.
using System.Text;
using System.Xml;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class DataTests
{
    static readonly Lazy<Corpus> BuiltIn = new(() => Corpus.Load(null));

    [Test]
    public void BuiltInCorpusIsLargeDeduplicatedProse()
    {
        var c = BuiltIn.Value;
        Assert.That(c.Name, Is.EqualTo(BuiltInCorpus.Name));
        Assert.That(c.Text.Length, Is.GreaterThan(1_000_000), "the SDK's docs hold megabytes of prose");
        var lines = c.Text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines.Distinct().Count(), Is.EqualTo(lines.Length), "paragraphs are deduplicated");
        Assert.That(c.Text, Does.Not.Contain("<see").And.Not.Contain("cref=").And.Not.Contain("<para").And.Not.Contain("paramref"));
        Assert.That(c.Text, Does.Contain("Initializes a new instance of the BitArray class"));
        Assert.That(lines.All(l => l == l.Trim() && !l.Contains("  ")), "whitespace is normalised");
    }

    [Test]
    public void MarkupIsStrippedToShortNames()
    {
        var doc = new XmlDocument();
        doc.LoadXml("<summary>Copies <paramref name=\"count\" /> items to <see cref=\"M:System.Array.Copy(System.Array,System.Int32)\" /> or "
            + "<see cref=\"T:System.Collections.Generic.List`1\" />; returns <see langword=\"true\" /> when <c>x   &gt; 0</c>."
            + "<code>var dropped = 1;</code><para>Second   paragraph.</para></summary>");
        var paragraphs = BuiltInCorpus.Paragraphs(doc.DocumentElement!).ToArray();
        Assert.That(paragraphs, Is.EqualTo(new[] { "Copies count items to Copy or List; returns true when x > 0.", "Second paragraph." }));
    }

    [Test]
    public void BuiltInCorpusIsDeterministic()
    {
        string folder = BuiltInCorpus.FindDocsFolder();
        var dir = Directory.CreateTempSubdirectory("peer-docs-");
        try
        {
            // Two files in the folder: extraction order is ordinal by file name, and repeated paragraphs appear once.
            foreach (var name in new[] { "System.Collections.xml", "System.Collections.Concurrent.xml" })
                File.Copy(Path.Combine(folder, name), Path.Combine(dir.FullName, name));
            string a = BuiltInCorpus.Load(dir.FullName), b = BuiltInCorpus.Load(dir.FullName);
            Assert.That(a, Is.EqualTo(b));
            Assert.That(a.IndexOf("ConcurrentBag", StringComparison.Ordinal), Is.LessThan(a.IndexOf("BitArray", StringComparison.Ordinal)),
                "System.Collections.Concurrent.xml sorts before System.Collections.xml");
        }
        finally { dir.Delete(true); }
    }

    [TestCase("byte")]
    [TestCase("gpt2")]
    public void TokenizersRoundTrip(string name)
    {
        var t = Tokenizers.Create(name);
        string text = "Initializes a new instance of the List<T> class. Ünïcödé — 数据 🙂\n\n  tabs\tand spaces";
        int[] ids = t.Encode(text);
        Assert.That(ids.All(i => i >= 0 && i < t.VocabSize));
        Assert.That(t.Decode(ids), Is.EqualTo(text));
        if (name == "byte") Assert.That(ids.Length, Is.EqualTo(Encoding.UTF8.GetByteCount(text)));
        else Assert.That(ids.Length, Is.LessThan(text.Length), "BPE merges characters");
    }

    [Test]
    public void Gpt2TokenizerMatchesKnownIds()
    {
        // GPT-2's vocabulary: "Hello" = 15496, " world" = 995 (published in the GPT-2 encoder).
        Assert.That(new Gpt2Tokenizer().Encode("Hello world"), Is.EqualTo(new[] { 15496, 995 }));
    }

    [Test]
    public void SplitIsDeterministicAndDisjoint()
    {
        var corpus = new Corpus("t", string.Concat(Enumerable.Range(0, 500).Select(i => $"line {i}\n")));
        var a = Dataset.Create(corpus, new ByteTokenizer(), 16);
        var b = Dataset.Create(corpus, new ByteTokenizer(), 16);
        Assert.That(a.Train, Is.EqualTo(b.Train));
        Assert.That(a.Validation, Is.EqualTo(b.Validation));
        Assert.That(a.Train.Concat(a.Validation), Is.EqualTo(new ByteTokenizer().Encode(corpus.Text)));
        Assert.That(a.Validation.Length, Is.EqualTo((int)(corpus.Text.Length * Dataset.ValidationFraction)));
    }

    [Test]
    public void SamplerReplaysFromSavedState()
    {
        var tokens = Enumerable.Range(0, 1000).ToArray();
        var s = new BatchSampler(tokens, 8, 42);
        s.NextBatch(4);
        ulong state = s.State;
        var next = s.NextBatch(4);
        var replay = new BatchSampler(tokens, 8, 0) { State = state }.NextBatch(4);
        Assert.That(replay, Is.EqualTo(next));
        for (int b = 0; b < 4; b++)
            for (int i = 1; i < 9; i++) Assert.That(next[b * 9 + i], Is.EqualTo(next[b * 9 + i - 1] + 1), "a window is consecutive tokens");
        Assert.That(new BatchSampler(tokens, 8, 43).NextBatch(4), Is.Not.EqualTo(new BatchSampler(tokens, 8, 42).NextBatch(4)));
    }

    [Test]
    public void BadCorporaGiveOneLineErrors()
    {
        var dir = Directory.CreateTempSubdirectory("peer-corpus-");
        try
        {
            string missing = Path.Combine(dir.FullName, "missing.txt");
            Assert.That(() => Corpus.Load(missing), Throws.TypeOf<CorpusException>().With.Message.Contains("does not exist"));
            string empty = Path.Combine(dir.FullName, "empty.txt");
            File.WriteAllText(empty, "  \n");
            Assert.That(() => Corpus.Load(empty), Throws.TypeOf<CorpusException>().With.Message.Contains("is empty"));
            string binary = Path.Combine(dir.FullName, "bad.txt");
            File.WriteAllBytes(binary, [0x61, 0xc3, 0x28]);
            Assert.That(() => Corpus.Load(binary), Throws.TypeOf<CorpusException>().With.Message.Contains("not UTF-8"));
            var sub = dir.CreateSubdirectory("nothing");
            Assert.That(() => Corpus.Load(sub.FullName), Throws.TypeOf<CorpusException>().With.Message.Contains("no *.txt"));
            string small = Path.Combine(dir.FullName, "small.txt");
            File.WriteAllText(small, "tiny text");
            Assert.That(() => Dataset.Create(Corpus.Load(small), new ByteTokenizer(), 64),
                Throws.TypeOf<CorpusException>().With.Message.Contains("need at least 130"));
            Assert.That(File.ReadAllText(small), Is.EqualTo("tiny text"));
            Assert.That(File.ReadAllText(empty), Is.EqualTo("  \n"));
        }
        finally { dir.Delete(true); }
    }

    [TestCase(33, 8)]  // 4 full windows, nothing left
    [TestCase(37, 8)]  // 4 full windows and a tail of 5 tokens (4 scored)
    [TestCase(9, 8)]   // exactly one window
    [TestCase(2, 8)]   // one short window
    public void TileScoresEveryTokenAfterTheFirstOnce(int length, int context)
    {
        int[] tokens = Enumerable.Range(100, length).ToArray();
        int[][] windows = BatchSampler.Tile(tokens, context);
        var scored = windows.SelectMany(w => w[1..]).ToArray();
        Assert.That(scored, Is.EqualTo(tokens[1..]), "each token after the first is a target exactly once, in order");
        Assert.That(windows.All(w => w.Length >= 2 && w.Length <= context + 1));
        Assert.That(windows[..^1].All(w => w.Length == context + 1), "only the last window may be shorter");
        for (int i = 1; i < windows.Length; i++) Assert.That(windows[i][0], Is.EqualTo(windows[i - 1][^1]), "a window starts where the last one ended");
        Assert.That(BatchSampler.Tile([5], context), Is.Empty);
        Assert.That(() => BatchSampler.Tile(tokens, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("context"));
    }

    [Test]
    public void FolderCorpusJoinsTxtFilesInOrdinalOrder()
    {
        var dir = Directory.CreateTempSubdirectory("peer-corpus-");
        try
        {
            File.WriteAllText(Path.Combine(dir.FullName, "b.txt"), "second");
            File.WriteAllText(Path.Combine(dir.FullName, "a.txt"), "first");
            File.WriteAllText(Path.Combine(dir.FullName, "c.bin"), "ignored");
            Assert.That(Corpus.Load(dir.FullName).Text, Is.EqualTo("first\nsecond"));
        }
        finally { dir.Delete(true); }
    }
}
