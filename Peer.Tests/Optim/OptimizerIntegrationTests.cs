using Peer.Nn;
using Peer.Optim;

namespace Peer.Tests.Optim;

// The optimizers on gradients produced by the layers that make row-sparse gradients (embedding, PEER).
public sealed class OptimizerIntegrationTests
{
    static Device D => Devices.Cpu;

    [Test]
    public void EmbeddingSparseGradStepsOnlyLookedUpRows()
    {
        using var s = Scope.Begin();
        const int v = 20, dim = 4;
        var init = GradCheck.Rand(v * dim, 1);
        var table = Tensor.FromArray(D, init, v, dim);
        table.RequiresGrad = true;
        int[] ids = [3, 7, 3, 15];
        var gy = GradCheck.Rand(ids.Length * dim, 2);
        var y = Peer.Ops.Embedding(Tensor.FromArray(D, ids, ids.Length), table);
        D.Tape.Backward(y, Tensor.FromArray(D, gy, ids.Length, dim));
        Assert.That(table.SparseGrad, Is.Not.Null);
        using var opt = new Sgd([("table", table)], 0.5f);
        opt.Step();
        var got = table.ToArray();
        for (int row = 0; row < v; row++)
            for (int c = 0; c < dim; c++)
            {
                double g = 0;
                for (int i = 0; i < ids.Length; i++) if (ids[i] == row) g += gy[i * dim + c];
                Assert.That(got[row * dim + c], Is.EqualTo(init[row * dim + c] - 0.5 * g).Within(1e-6), $"row {row}");
                if (!ids.Contains(row)) Assert.That(got[row * dim + c], Is.EqualTo(init[row * dim + c]));
            }
    }

    [Test]
    public void PeerLayerTrainsWithOneOptimizerOverDenseAndSparseParameters()
    {
        using var s = Scope.Begin();
        using var layer = new PeerLayer(D, 8, new PeerOptions { Experts = 64, Heads = 2, TopK = 3, QueryDim = 8, Seed = 5 });
        var before = layer.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.ToArray());
        var x = Tensor.FromArray(D, GradCheck.Rand(5 * 8, 3), 5, 8);
        var y = layer.Forward(x);
        D.Tape.Backward(y, Tensor.FromArray(D, GradCheck.Rand(5 * 8, 4), 5, 8));
        var sparse = layer.NamedParameters().Where(p => p.Tensor.SparseGrad != null)
            .ToDictionary(p => p.Name, p => (Rows: p.Tensor.SparseGrad!.Real().Rows, Cols: p.Tensor.SparseGrad!.Values.Shape[1]));
        Assert.That(sparse.Keys, Does.Contain("experts.down").And.Contain("experts.up"));
        using var opt = new AdamW(layer.NamedParameters(), 1e-2f);
        opt.Step();
        foreach (var (name, t) in layer.NamedParameters())
        {
            var after = t.ToArray();
            if (sparse.TryGetValue(name, out var g))
            {
                for (int row = 0; row < after.Length / g.Cols; row++)
                {
                    bool touched = g.Rows.Contains(row);
                    bool same = after.AsSpan(row * g.Cols, g.Cols).SequenceEqual(before[name].AsSpan(row * g.Cols, g.Cols));
                    Assert.That(same, Is.EqualTo(!touched), $"{name} row {row} (touched: {touched})");
                }
            }
            else if (t.Grad != null)
                Assert.That(after, Is.Not.EqualTo(before[name]), $"{name} moved");
        }
    }
}
