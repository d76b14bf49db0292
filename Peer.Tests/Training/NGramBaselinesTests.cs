// The baselines of a Dataset: the trigram and 5-gram figures are the Kneser–Ney model's mean loss over
// exactly the given windows; the cache file is read back (a fresh Dataset returns what the file says),
// keyed by the windows and the training tokens, and a damaged file is ignored and rewritten.
using System.Text.Json.Nodes;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class NGramBaselinesTests
{
    string dir = null!;

    [SetUp]
    public void MakeDir() => dir = Directory.CreateTempSubdirectory("peer-baselines-").FullName;

    [TearDown]
    public void RemoveDir() => Directory.Delete(dir, true);

    static Dataset Data(string? text = null) => Dataset.Create(text is null ? TrainingFixtures.SmallCorpus : new Corpus("other", text), new ByteTokenizer(), 16);

    [Test]
    public void ScoresAreTheModelsMeanLossOnExactlyTheWindows()
    {
        var data = Data();
        int[][] windows = BatchSampler.Tile(data.Validation, 16);
        Assert.That(windows[^1].Length, Is.LessThan(17), "the slice's validation split ends in a shorter tail window");
        var b = data.Baselines.Score(windows);
        var kn = KneserNey.Fit(data.Train, 256, 5);
        long scored = data.Validation.Length - 1;
        double tri = windows.Sum(w => kn.NegativeLogLikelihood(w, 3)) / scored, five = windows.Sum(w => kn.NegativeLogLikelihood(w, 5)) / scored;
        Assert.That(b.Trigram, Is.EqualTo(tri).Within(1e-12 * tri));
        Assert.That(b.FiveGram, Is.EqualTo(five).Within(1e-12 * five));
        Assert.That(b.FiveGram, Is.LessThan(b.Trigram).And.LessThan(data.UnigramEntropy()), "on prose more context helps");
        // The same tokens cut into shorter windows lose context at every window start: the 5-gram gets worse.
        var shorter = data.Baselines.Score(BatchSampler.Tile(data.Validation, 4));
        Assert.That(shorter.FiveGram, Is.GreaterThan(b.FiveGram));
        Assert.That(() => data.Baselines.Score([[1]]), Throws.ArgumentException.With.Message.Contains("no token to score"));
    }

    [Test]
    public void TheCacheIsReadBackKeyedByWindowsAndTrainingTokens()
    {
        string file = Path.Combine(dir, "baselines.json");
        var data = Data();
        data.Baselines.CacheFile = file;
        int[][] whole = BatchSampler.Tile(data.Validation, 16), sample = whole[..3];
        var b = data.Baselines.Score(whole);
        data.Baselines.Score(sample);
        var entries = JsonNode.Parse(File.ReadAllText(file))!["entries"]!.AsObject();
        Assert.That(entries, Has.Count.EqualTo(2), "one entry per window set");

        // Mark the cached figures: a fresh Dataset must return them without refitting.
        foreach (var (_, entry) in entries) entry!["trigram"] = 1.25;
        File.WriteAllText(file, new JsonObject { ["format"] = JsonNode.Parse(File.ReadAllText(file))!["format"]!.GetValue<string>(), ["entries"] = entries.DeepClone() }.ToJsonString());
        var again = Data();
        again.Baselines.CacheFile = file;
        Assert.That(again.Baselines.Score(whole), Is.EqualTo(b with { Trigram = 1.25 }));

        // Other windows or other training tokens miss the cache and are computed.
        Assert.That(again.Baselines.Score(whole[..5]).Trigram, Is.Not.EqualTo(1.25));
        var other = Data(TrainingFixtures.SmallCorpus.Text[..60_000]);
        other.Baselines.CacheFile = file;
        Assert.That(other.Baselines.Score(whole).Trigram, Is.Not.EqualTo(1.25));
        Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { file }), "no temporary file is left behind");
    }

    [TestCase("{\"format\": \"peer-ngram-baselines-1 (interpolated modified Kneser-Ney, orders 3 and 5)\", \"entries\": {")]
    [TestCase("\0\0\0garbage")]
    [TestCase("{\"format\": \"something else\", \"entries\": {}}")]
    [TestCase("[1, 2]")]
    public void ADamagedCacheIsIgnoredAndRewritten(string damaged)
    {
        string file = Path.Combine(dir, "baselines.json");
        var data = Data();
        int[][] windows = BatchSampler.Tile(data.Validation, 16);
        var expected = data.Baselines.Score(windows);
        File.WriteAllText(file, damaged);
        var fresh = Data();
        fresh.Baselines.CacheFile = file;
        Assert.That(fresh.Baselines.Score(windows), Is.EqualTo(expected));
        Assert.That(JsonNode.Parse(File.ReadAllText(file))!["entries"]!.AsObject(), Has.Count.EqualTo(1), "rewritten whole");
    }
}
