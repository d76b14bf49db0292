// Metrics CSV round trip and the PNG plots.
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class MetricsTests
{
    [Test]
    public void CsvRoundTripsLossesExactly()
    {
        var dir = Directory.CreateTempSubdirectory("peer-metrics-");
        try
        {
            string path = Path.Combine(dir.FullName, "metrics.csv");
            var rows = new List<MetricRow>
            {
                new(1, 5.545177459716797, 1e-4, 1234.5, null, null, null, 1.5, 2.25),
                new(2, 0.1f + 0.2f, 2e-4, 99, 4.1, 0.75, 0.3, 1.5, 2.25),
            };
            MetricsFile.Write(path, rows);
            var back = MetricsFile.Read(path);
            Assert.That(back.Select(r => r.Loss), Is.EqualTo(rows.Select(r => r.Loss)), "losses are written with round-trip precision");
            Assert.That(back[1].ValLoss, Is.EqualTo(4.1));
            Assert.That(back[1].ValPerplexity, Is.EqualTo(Math.Exp(4.1)).Within(1e-4));
            Assert.That(MetricsFile.Read(path, upToStep: 1), Has.Count.EqualTo(1));
            Assert.That(File.ReadAllLines(path)[0], Is.EqualTo(MetricRow.Header));
        }
        finally { dir.Delete(true); }
    }

    [Test]
    public void PlotsAreWrittenAsPng()
    {
        var dir = Directory.CreateTempSubdirectory("peer-plots-");
        try
        {
            var rows = Enumerable.Range(1, 20).Select(i => new MetricRow(i, 5.0 / i, 1e-3, 100, i % 10 == 0 ? 5.5 / i : null, null, null, 1, 1)).ToList();
            string loss = Path.Combine(dir.FullName, "loss.png"), usage = Path.Combine(dir.FullName, "usage.png");
            Plots.LossCurves(loss, rows, 3.2, "test");
            Plots.ExpertUsage(usage, [new LayerUsage("blocks.1.ffw", [1, 2, 0, 4, 1, 1, 3, 0], 0.75, 0.2)], "test");
            foreach (var p in new[] { loss, usage })
            {
                byte[] head = File.ReadAllBytes(p)[..8];
                Assert.That(head, Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), p);
            }
            Assert.That(Directory.GetFiles(dir.FullName), Has.Length.EqualTo(2), "no temporary files are left");
        }
        finally { dir.Delete(true); }
    }
}
