// FLOP and parameter accounting against hand computation for small configurations, the parameter counts against
// the modules' real parameters, the kind registry, and the docs/layers.md table against the accounting code.
namespace Peer.Tests.Nn.FeedForward;

using Peer.Nn;

public sealed class FeedForwardCostTests
{
    static Device Dev => Devices.Cpu;

    [Test]
    public void DenseCountsByHand()
    {
        using var l = new DenseFfw(Dev, 8, 32);
        // fc1 8*32 + fc2 32*8 multiply-adds; parameters 8*32 + 32 + 32*8 + 8
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(512, 552, 552)));
        Assert.That(l.ForwardFlopsPerToken, Is.EqualTo(1024), "2 FLOPs per multiply-add");
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
        Assert.That(l.AuxiliaryLoss, Is.Null);
    }

    [Test]
    public void PeerCountsByHand()
    {
        // d = 8, N = 16 (n = 4), h = 2, k = 3, dq = 4, BatchNorm.
        // query 8*8 = 64; per head: sub1 4 rows * 2 + sub2 4 * 2 = 16 dot multiply-adds + k^2 = 9 candidate sums -> 2 * 25 = 50;
        // experts h k 2d = 2 * 3 * 16 = 96.  Total 210.
        // Parameters: query 64 + 8, norm 16, sub-keys 2 * 4 * 2 = 16, experts 2 * 16 * 8 = 256 -> 360; active 72 + 16 + 16 + 96 = 200.
        using var l = new PeerLayer(Dev, 8, new PeerOptions { Experts = 16, Heads = 2, TopK = 3, QueryDim = 4 });
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(210, 360, 200)));
        Assert.That(FeedForwardCost.Of(l.Options, l.Dim), Is.EqualTo(l.Cost));
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
        using var none = new PeerLayer(Dev, 8, new PeerOptions { Experts = 16, Heads = 2, TopK = 3, QueryDim = 4, QueryNorm = PeerQueryNorm.None });
        Assert.That(none.Cost, Is.EqualTo(new FeedForwardCost(210, 344, 184)));
        Assert.That(none.TotalParameters, Is.EqualTo(none.ParameterCount));
    }

    [Test]
    public void PkmCountsByHand()
    {
        // Same retrieval as PeerCountsByHand (64 + 50) plus the read h k d = 2 * 3 * 8 = 48 -> 162.
        // Parameters: 72 + 16 + 16 + values 16 * 8 = 128 -> 232; active 104 + 48 = 152.
        using var l = new ProductKeyMemory(Dev, 8, 16, 2, 3, 4);
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(162, 232, 152)));
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
    }

    [Test]
    public void ExpertChoiceCountsByHand()
    {
        // d = 8, hidden 16, E = 4, factor 2: router 8*4 = 32; a slot costs 2*8*16 = 256 (expert) + 8 (combine) = 264;
        // factor 2 slots per token -> 528; total 560. Parameters: router 32 + 4 experts * (256 + 16 + 8) = 1152;
        // active 32 + 2 * 280 = 592.
        using var l = new ExpertChoiceMoe(Dev, 8, 16, 4, 2.0);
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(560, 1152, 592)));
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
        Assert.That(l.ForwardMacs(10), Is.EqualTo(5600), "C = 5: 10 * 32 + 4 * 5 * 264");
        Assert.That(l.ForwardMacs(7), Is.EqualTo(7 * 32 + 4 * 4 * 264), "C = ceil(3.5) = 4");
        Assert.That(FeedForwardCost.ExpertChoiceCapacity(1.1, 100, 10), Is.EqualTo(11), "no spurious round-up from 11.000000000000002");
        Assert.That(FeedForwardCost.ExpertChoiceCapacity(0.01, 10, 4), Is.EqualTo(1), "at least one slot");
        Assert.That(FeedForwardCost.ExpertChoiceCapacity(8, 10, 4), Is.EqualTo(10), "at most T slots");
    }

    [Test]
    public void TopKCountsByHand()
    {
        // d = 8, hidden 16, E = 4, k = 2, factor 1.25: router 32 + 1.25 * 2 * 264 = 660 -> 692;
        // parameters 1152; active 32 + k * 280 = 592.
        using var l = new TopKMoe(Dev, 8, 16, 4, 2, 1.25);
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(692, 1152, 592)));
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
        Assert.That(l.CapacityFor(8), Is.EqualTo(5));
        Assert.That(l.ForwardMacs(8), Is.EqualTo(692 * 8));
    }

    [Test]
    public void SoftMoeCountsByHand()
    {
        // d = 8, hidden 16, E = 4, S = 2 (8 slots), 16 tokens: logits 8*8 = 64, slot mixing 8*8 = 64, combine 64 per token,
        // experts 8 slots * 256 / 16 tokens = 128 -> 320. Parameters: Φ 8*8 = 64 + 4 * 280 = 1184, all active.
        using var l = new SoftMoe(Dev, 8, 16, 4, 2, causal: false, accountingTokens: 16);
        Assert.That(l.Cost, Is.EqualTo(new FeedForwardCost(320, 1184, 1184)));
        Assert.That(l.ForwardMacs(16), Is.EqualTo(320 * 16));
        Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount));
        using var dflt = new SoftMoe(Dev, 8, 16, 4, 2, causal: false);
        Assert.That(dflt.AccountingTokens, Is.EqualTo(8), "default: one token per slot");
    }

    [Test]
    public void KindsParseFromTheirNamesAndUnknownNamesAreRefused()
    {
        Assert.That(FeedForwardFactory.Names, Is.EqualTo(new[] { "ffw", "peer", "pkm", "moe-ec", "moe-topk", "soft-moe" }));
        foreach (var kind in Enum.GetValues<FeedForwardKind>())
            Assert.That(FeedForwardFactory.Parse(FeedForwardFactory.Name(kind)), Is.EqualTo(kind));
        var e = Assert.Throws<ArgumentException>(() => FeedForwardFactory.Parse("moe"))!;
        Assert.That(e.Message, Does.Contain("'moe'").And.Contain("ffw, peer, pkm, moe-ec, moe-topk, soft-moe"));
        var bad = Assert.Throws<ArgumentException>(() => FeedForwardFactory.Create(Dev, "moe-topk", new FeedForwardOptions { Dim = 4, Hidden = 4, Experts = 4, TopK = 5 }))!;
        Assert.That(bad.Message, Does.Contain("k = 5"));
    }

    /// <summary>The example configuration of docs/layers.md, as the factory builds it.</summary>
    static readonly (string Kind, FeedForwardOptions Options)[] Example =
    [
        ("ffw", new FeedForwardOptions { Dim = 128, Hidden = 512 }),
        ("peer", new FeedForwardOptions { Dim = 128, Experts = 64 * 64, Heads = 4, TopK = 8, QueryDim = 64 }),
        ("pkm", new FeedForwardOptions { Dim = 128, Experts = 64 * 64, Heads = 4, TopK = 16, QueryDim = 64 }),
        ("moe-ec", new FeedForwardOptions { Dim = 128, Hidden = 512, Experts = 8, CapacityFactor = 1 }),
        ("moe-topk", new FeedForwardOptions { Dim = 128, Hidden = 512, Experts = 8, TopK = 1, CapacityFactor = 1 }),
        ("soft-moe", new FeedForwardOptions { Dim = 128, Hidden = 512, Experts = 8, SlotsPerExpert = 2, AllowNonCausal = true, AccountingTokens = 256 }),
    ];

    [Test]
    public void DocsTableMatchesTheAccounting()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "docs", "layers.md"))) dir = dir.Parent;
        Assert.That(dir, Is.Not.Null, "docs/layers.md above the test directory");
        var doc = File.ReadAllText(Path.Combine(dir!.FullName, "docs", "layers.md"));
        var rows = new List<(string Kind, string Row)>();
        foreach (var (kind, o) in Example)
        {
            using var l = FeedForwardFactory.Create(Dev, kind, o);
            Assert.That(l.TotalParameters, Is.EqualTo(l.ParameterCount), kind);
            static string F(long v) => v.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
            rows.Add((kind, $"| `{kind}` | {F(l.ForwardFlopsPerToken)} | {F(l.TotalParameters)} | {F(l.ActiveParametersPerToken)} |"));
        }
        foreach (var (_, row) in rows) TestContext.Out.WriteLine(row);
        foreach (var (kind, row) in rows) Assert.That(doc, Does.Contain(row), $"docs/layers.md row for {kind}");
    }
}
