// The library example the README shows, as compiled code: the lines between the markers are copied into
// the README verbatim, and LibraryExampleTests runs them on a micro configuration.
using Peer.Training;

namespace Peer.Tests.Training;

static class LibraryExample
{
    public static string Run(RunConfig config, string? corpusPath, string runDir, TextWriter console)
    {
        // README-BEGIN
        using var device = Device.Open("auto");
        var tokenizer = new ByteTokenizer();
        var data = Dataset.Create(Corpus.Load(corpusPath), tokenizer, config.Model.Context); // null: the built-in corpus

        using var trainer = new Trainer(device, config, data);
        while (trainer.StepCount < config.Train.Steps)
        {
            var step = trainer.Step();
            if (step.Step % 50 == 0) console.WriteLine($"step {step.Step}: loss {step.Loss:F3}");
        }
        var eval = trainer.Evaluate();
        console.WriteLine($"validation loss {eval.Loss:F3} (Kneser-Ney 5-gram {eval.Baselines.FiveGram:F3}), expert usage {eval.Usage:P0}");

        int[] next = trainer.Model.Generate(tokenizer.Encode("Returns the"), length: 200, temperature: 0.8f, topK: 40, seed: 1);
        string text = "Returns the" + tokenizer.Decode(next);
        console.WriteLine(text);
        Checkpoint.Save(trainer, runDir); // `peer generate --checkpoint <runDir>` can continue from here
        // README-END
        return text;
    }
}

[TestFixture]
public sealed class LibraryExampleTests
{
    [Test]
    public void ReadmeExampleTrainsSamplesAndSaves()
    {
        var dir = Directory.CreateTempSubdirectory("peer-example-");
        try
        {
            var console = new StringWriter();
            var config = TrainingFixtures.Micro(50) with { };
            config = config with { Train = config.Train with { Device = "auto" } };
            string text = LibraryExample.Run(config, TrainingFixtures.WriteCorpus(dir.FullName), Path.Combine(dir.FullName, "run"), console);
            Assert.That(console.ToString(), Does.Contain("step 50: loss").And.Contain("validation loss").And.Contain("Kneser-Ney 5-gram").And.Contain("expert usage"));
            Assert.That(text, Does.StartWith("Returns the"));
            Assert.That(Checkpoint.ReadState(Path.Combine(dir.FullName, "run")).State.Step, Is.EqualTo(50));
        }
        finally { dir.Delete(true); }
    }

    [Test]
    public void ExampleLinesAreWhatTheReadmeShows()
    {
        // Keeps the snippet short enough for a README: about twenty lines between the markers.
        string source = File.ReadAllText(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../Training/LibraryExample.cs"));
        int begin = source.IndexOf("// README-BEGIN", StringComparison.Ordinal), end = source.IndexOf("// README-END", StringComparison.Ordinal);
        Assert.That(begin, Is.GreaterThan(0));
        var lines = source[begin..end].Split('\n').Skip(1).Where(l => l.Trim().Length > 0).ToArray();
        Assert.That(lines, Has.Length.InRange(12, 22));
    }
}
