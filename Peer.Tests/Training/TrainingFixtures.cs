// Shared set-up of the training tests: a micro model (a few milliseconds per step) and a slice of the
// built-in corpus written to a temporary file, so tests exercise the real paths without the full corpus.
using ILGPU.Runtime;
using Peer.Training;

namespace Peer.Tests.Training;

static class TrainingFixtures
{
    static readonly Lazy<string> Text = new(() => Corpus.Load(null).Text[..120_000]);

    /// <summary>Writes <paramref name="value"/> into element <paramref name="at"/> of <paramref name="t"/> (F32) on its device, as a bad
    /// update would: the divergence tests poison a parameter with it.</summary>
    public static void SetElement(Tensor t, Index at, float value)
    {
        var values = t.ToArray();
        values[at] = value;
        t.View.SubView(0, values.Length).CopyFromCPU(values);
    }

    /// <summary>A slice of the built-in corpus.</summary>
    public static Corpus SmallCorpus => new("small", Text.Value);

    /// <summary>Writes the slice to <paramref name="dir"/>/corpus.txt and returns the path.</summary>
    public static string WriteCorpus(string dir)
    {
        string path = Path.Combine(dir, "corpus.txt");
        File.WriteAllText(path, Text.Value);
        return path;
    }

    /// <summary>The losses of six steps of <see cref="Micro"/> on <see cref="SmallCorpus"/> (context 16), then its validation loss:
    /// the run the parity tests compare across devices and thread counts.</summary>
    public static double[] ShortRunLosses(Device d)
    {
        var data = Dataset.Create(SmallCorpus, new ByteTokenizer(), 16);
        using var t = new Trainer(d, Micro(6), data);
        var losses = Enumerable.Range(0, 6).Select(_ => t.Step().Loss).ToList();
        losses.Add(t.Evaluate().Loss);
        return losses.ToArray();
    }

    /// <summary>Two blocks (dense, then PEER with 16x16 experts), width 32, context 16.</summary>
    public static RunConfig Micro(int steps = 30, ulong seed = 7) => new()
    {
        Model = new ModelConfig
        {
            VocabSize = 256, DModel = 32, Layers = 2, Heads = 2, Context = 16,
            Peer = new PeerConfig { Experts = 16 * 16, Heads = 2, TopK = 4, QueryDim = 8 },
        },
        Train = new TrainConfig
        {
            Steps = steps, BatchSize = 4, LearningRate = 1e-2f, WarmupSteps = 3, EvalEvery = 0, EvalWindows = 8,
            CheckpointEvery = 0, Seed = seed, Device = "cpu",
        },
    };
}
