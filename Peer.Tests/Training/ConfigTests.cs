// Configuration: JSON round trip, presets valid, contradictions caught with a message naming the setting.
using System.Globalization;
using System.Text.RegularExpressions;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class ConfigTests
{
    [TestCase("tiny")]
    [TestCase("small")]
    [TestCase("paper")]
    public void PresetsAreValidAndRoundTripThroughJson(string preset)
    {
        var run = RunConfig.Preset(preset);
        run.Validate();
        string json = run.ToJson();
        var back = RunConfig.FromJson(json);
        Assert.That(back.ToJson(), Is.EqualTo(json));
        Assert.That(back.Model with { Blocks = null, Peer = run.Model.Peer }, Is.EqualTo(run.Model with { Blocks = null }));
        Assert.That(back.Model.Peer, Is.EqualTo(run.Model.Peer));
        Assert.That(back.Train, Is.EqualTo(run.Train));
    }

    [Test]
    public void ReadmeDescribesTheTinyPresetItMeasured()
    {
        // The README's figures for the default run are only true of the preset they were measured with.
        string readme = Regex.Replace(File.ReadAllText(Path.Combine(Repo.Root, "README.md")), @"\s+", " ");
        var run = RunConfig.Preset("tiny");
        var m = Regex.Match(readme, @"The default run \((\d+) steps of (\d+) x (\d+) tokens, ([\d,]+) tokens, learning rate ([\d.e-]+)\)");
        Assert.That(m.Success, "README.md: no sentence 'The default run (S steps of B x T tokens, N tokens, learning rate LR)'");
        Assert.That(int.Parse(m.Groups[1].Value), Is.EqualTo(run.Train.Steps), "steps");
        Assert.That(int.Parse(m.Groups[2].Value), Is.EqualTo(run.Train.BatchSize * run.Train.Accumulation), "batch");
        Assert.That(int.Parse(m.Groups[3].Value), Is.EqualTo(run.Model.Context), "context");
        Assert.That(int.Parse(m.Groups[4].Value.Replace(",", "")), Is.EqualTo(run.Train.Steps * run.Train.BatchSize * run.Train.Accumulation * run.Model.Context), "tokens");
        Assert.That(float.Parse(m.Groups[5].Value, CultureInfo.InvariantCulture), Is.EqualTo(run.Train.LearningRate), "learning rate");
        Assert.That(readme, Does.Contain($"width {run.Model.DModel}, {run.Model.Heads} attention heads, {run.Model.Positions} positions, context {run.Model.Context}"));
        Assert.That(readme, Does.Contain($"trains a {run.Model.Layers}-layer byte-level transformer"));
    }

    [Test]
    public void DefaultPlacesPeerInTheMiddleBlock()
    {
        Assert.That(new ModelConfig { Layers = 3 }.BlockKinds(), Is.EqualTo(new[] { "ffw", "peer", "ffw" }));
        Assert.That(new ModelConfig { Layers = 4 }.BlockKinds(), Is.EqualTo(new[] { "ffw", "ffw", "peer", "ffw" }));
        Assert.That(ModelConfig.Preset("paper").Peer, Is.EqualTo(new PeerConfig { Experts = 1024 * 1024, Heads = 8, TopK = 16, QueryDim = 128, QueryNorm = "batch" }));
    }

    [Test]
    public void JsonUsesSnakeCaseKeys()
    {
        string json = new ModelConfig().ToJson();
        Assert.That(json, Does.Contain("\"d_model\": 64").And.Contain("\"experts\": 4096").And.Contain("\"tied_head\": true"));
    }

    [TestCase("{\"heads\": 5}", "heads = 5 does not divide d_model = 64")]
    [TestCase("{\"blocks\": [\"ffw\", \"peer\"]}", "blocks lists 2 kinds but layers = 3")]
    [TestCase("{\"blocks\": [\"ffw\", \"dense\", \"ffw\"]}", "'dense' is not a feed-forward kind")]
    [TestCase("{\"peer\": {\"top_k\": 100}}", "peer.top_k = 100: expected at most sqrt(peer.experts) = 64")]
    [TestCase("{\"peer\": {\"query_dim\": 7}}", "peer.query_dim = 7")]
    [TestCase("{\"peer\": {\"experts\": 1000}}", "peer.experts = 1000")]
    [TestCase("{\"peer\": {\"query_norm\": \"rms\"}}", "peer.query_norm = 'rms'")]
    [TestCase("{\"positions\": \"sinusoidal\"}", "positions = 'sinusoidal': expected one of learned, rotary")]
    [TestCase("{\"positions\": \"rotary\", \"d_model\": 60, \"heads\": 4}", "d_model / heads = 60 / 4 = 15 is odd")]
    [TestCase("{\"d_modle\": 64}", "d_modle is not a known setting")]
    [TestCase("{\"layers\": ", "not valid JSON")]
    public void ContradictionsAreOneLineErrors(string json, string expected)
    {
        Assert.That(() => ModelConfig.FromJson(json), Throws.TypeOf<ConfigException>()
            .With.Message.Contains(expected).And.Message.Not.Contains("\n"));
    }

    [TestCase("{\"warmup_steps\": 900, \"steps\": 10}", "train.warmup_steps = 900: expected 0..train.steps (10)")]
    [TestCase("{\"device\": \"tpu\"}", "train.device = 'tpu'")]
    [TestCase("{\"tokenizer\": \"bpe\"}", "train.tokenizer = 'bpe'")]
    [TestCase("{\"batch_size\": 0}", "train.batch_size = 0")]
    [TestCase("{\"learning_rate\": 1e-50}", "learning_rate = 1e-50: rounds to 0 in float32")] // not "learning_rate = 0", which the user never wrote
    [TestCase("{\"sparse_optimizer\": \"adagrad\"}", "train.sparse_optimizer = 'adagrad': expected one of adamw, rowwise-adamw, rowwise-adagrad")]
    [TestCase("{\"sparse_learning_rate\": 0}", "train.sparse_learning_rate = 0")]
    [TestCase("{\"sparse_learning_rate\": -0.5}", "train.sparse_learning_rate = -0.5")]
    [TestCase("{\"sparse_optimzer\": \"adamw\"}", "sparse_optimzer")]
    public void BadTrainSettingsAreOneLineErrors(string json, string expected)
    {
        Assert.That(() => TrainConfig.FromJson(json), Throws.TypeOf<ConfigException>().With.Message.Contains(expected));
    }
}
