// The product-key retrieval component shared by PEER and PKM: one seed scheme (the same seed gives both layers the same
// retrieval parameters, and each owner's first table the documented stream), its names joining the owner's unprefixed
// and in registration order, a clash with an owner's name refused, and its own argument errors.
namespace Peer.Tests.Nn;

using Peer.Nn;

public sealed class ProductKeysTests
{
    static Device Dev => Devices.Cpu;

    static Dictionary<string, float[]> State(Module m) => m.StateDict().ToDictionary(s => s.Name, s => s.Tensor.ToArray());

    [TestCase(PeerQueryNorm.BatchNorm)]
    [TestCase(PeerQueryNorm.None)]
    public void PeerAndPkmDrawTheirParametersFromOneSeedScheme(PeerQueryNorm norm)
    {
        const int dim = 6, heads = 2, dq = 4, n = 4, k = 3;
        const ulong seed = 11;
        using var keys = new ProductKeys(Dev, dim, heads, dq, n, k, norm, seed);
        using var peer = new PeerLayer(Dev, dim, new PeerOptions { Experts = n * n, Heads = heads, TopK = k, QueryDim = dq, QueryNorm = norm, Seed = seed });
        using var pkm = new ProductKeyMemory(Dev, dim, n * n, heads, k, dq, norm, seed);
        var (a, b, c) = (State(keys), State(peer), State(pkm));
        foreach (var (name, values) in a)
        {
            Assert.That(b[name], Is.EqualTo(values), $"peer {name}");
            Assert.That(c[name], Is.EqualTo(values), $"pkm {name}");
        }
        Assert.That(c["values.weight"], Is.EqualTo(b["experts.down"]), "the owner's first table: stream 5 of the seed in both layers");
        Assert.That(b["experts.up"], Is.Not.EqualTo(b["experts.down"]));
        Assert.That(a["keys.sub1"], Is.Not.EqualTo(a["keys.sub2"]));
        using var other = new ProductKeys(Dev, dim, heads, dq, n, k, norm, seed + 1);
        Assert.That(State(other)["query.weight"], Is.Not.EqualTo(a["query.weight"]), "another seed, other weights");
    }

    [Test]
    public void NamesJoinTheOwnerUnprefixedInRegistrationOrder()
    {
        using var peer = new PeerLayer(Dev, 6, new PeerOptions { Experts = 16, Heads = 2, TopK = 3, QueryDim = 4, QueryNorm = PeerQueryNorm.LayerNorm });
        Assert.That(peer.StateDict().Select(s => s.Name), Is.EqualTo(new[]
        {
            "query.weight", "query.bias", "query_norm.weight", "query_norm.bias", "keys.sub1", "keys.sub2", "experts.down", "experts.up",
        }));
        peer.Eval();
        Assert.That(peer.IsTraining, Is.False);
    }

    sealed class Clash : Module
    {
        public Clash(Device d) : base(d)
        {
            Component(new ProductKeys(d, 4, 1, 2, 2, 1, PeerQueryNorm.None, 0));
            Parameter("keys.sub1", Tensor.Zeros(d, 2, 1));
        }
    }

    [Test]
    public void AnOwnerNameThatClashesWithTheComponentIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => new Clash(Dev))!;
        Assert.That(e.Message, Does.Contain("keys.sub1").And.Contain("not already registered"));
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        string Msg(TestDelegate a) => Assert.Throws<ArgumentException>(a)!.Message;
        Assert.That(Msg(() => new ProductKeys(Dev, 4, 2, 3, 4, 2, PeerQueryNorm.None, 0)), Does.Contain("queryDim = 3").And.Contain("even"));
        Assert.That(Msg(() => new ProductKeys(Dev, 4, 2, 4, 4, 5, PeerQueryNorm.None, 0)), Does.Contain("topK = 5").And.Contain("sub-keys = 4"));
        Assert.That(Msg(() => new ProductKeys(Dev, 4, 0, 4, 4, 2, PeerQueryNorm.None, 0)), Does.Contain("heads = 0"));
        using var keys = new ProductKeys(Dev, 4, 2, 4, 4, 2, PeerQueryNorm.BatchNorm, 0);
        using var s = Scope.Begin();
        Assert.That(Msg(() => keys.Query(Tensor.Zeros(Dev, 3, 5))), Does.Contain("[3, 5]").And.Contain("d = 4"));
        Assert.That(Msg(() => keys.Query(Tensor.Zeros(Dev, 1, 4))), Does.Contain("T >= 2"));
    }
}
