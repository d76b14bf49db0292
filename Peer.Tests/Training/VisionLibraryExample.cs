// The image-classification library example the README shows, as compiled code: the lines between the markers are copied
// into the README verbatim, and the test runs them on the synthetic task's files (where the README reads Debian's).
using Peer.Nn;
using Peer.Training;

namespace Peer.Tests.Training;

static class VisionLibraryExample
{
    public static void Run(VisionRunConfig config, string? dataFolder, TextWriter console)
    {
        // README-BEGIN
        using var device = Device.Open("auto");
        var data = ImageDataset.Load(dataFolder, config.Train.Validation); // null: Debian's /usr/share/datasets/fashion-mnist
        using var trainer = new VisionTrainer(device, config, data);
        while (trainer.StepCount < config.Train.Steps) trainer.Step();
        console.WriteLine($"test accuracy {trainer.Evaluate(data.Test).Accuracy:P2}");

        // Record every (image, patch, layer, head, expert, router weight) of an evaluation.
        var layers = trainer.Model.PeerLayers().ToArray();
        using var trace = new RetrievalTrace(layers);
        trainer.Evaluate(data.Validation, trace);
        var labels = data.Validation.Labels.Select(l => (int)l).ToArray();
        var classes = ClassExpertMatrix.From(trace[layers[0].Name], labels, data.Classes.Length);
        int[] trouser = classes.MostSpecific(1, 16); // the 16 experts most specific to class 1, Trouser

        // Switch them off: retrieval takes the next best experts, so the layer stays exact over the others.
        layers[0].Layer.DisableExperts(trouser);
        console.WriteLine($"without them: Trouser {trainer.Evaluate(data.Test).ClassAccuracy[1]:P1}");
        layers[0].Layer.DisableExperts([]);
        // README-END
    }
}

[TestFixture]
public sealed class VisionLibraryExampleTests
{
    [Test]
    public void ReadmeExampleTrainsTracesAndEdits()
    {
        var dir = Directory.CreateTempSubdirectory("peer-vision-example-");
        try
        {
            SyntheticImages.Write(dir.FullName, train: 600, test: 200);
            var console = new StringWriter();
            var config = SyntheticImages.Config(steps: 30, validation: 100);
            VisionLibraryExample.Run(config with { Train = config.Train with { Device = "auto" } }, dir.FullName, console);
            Assert.That(console.ToString(), Does.Match(@"test accuracy \d+\.\d\d ?%").And.Contain("without them: Trouser"));
        }
        finally { dir.Delete(true); }
    }

    [Test]
    public void ExampleLinesAreWhatTheReadmeShows()
    {
        string source = File.ReadAllText(Path.Combine(Repo.Root, "Peer.Tests/Training/VisionLibraryExample.cs"));
        int begin = source.IndexOf("// README-BEGIN", StringComparison.Ordinal), end = source.IndexOf("// README-END", StringComparison.Ordinal);
        var lines = source[begin..end].Split('\n').Skip(1).Where(l => l.Trim().Length > 0).Select(l => l.Length >= 8 ? l[8..] : l.Trim()).ToArray();
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "README.md"));
        foreach (var line in lines) Assert.That(readme, Does.Contain(line), "the README shows the example as the test runs it");
    }
}
