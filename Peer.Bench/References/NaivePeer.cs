// The PEER layer computed the way public implementations do, from Peer's own ops, for the ablation suite; never
// used by the framework. Same retrieval as PeerLayer (query, product-key top-k, router softmax), then the expert
// rows gathered into [T, h*k, d] tensors (an embedding lookup with a dense gradient over the whole table),
// the expert dot products and the weighted sum as batched matmuls (einsum 'thd,td->th' and 'thd,th->td').
namespace Peer.Bench;

internal static class NaivePeer
{
    /// <summary>y = PEER(x) from <paramref name="layer"/>'s parameters, with dense [N, d] gradients for experts.down and experts.up.</summary>
    public static Tensor Forward(PeerLayer layer, Tensor x)
    {
        var p = layer.NamedParameters().ToDictionary(e => e.Name, e => e.Tensor);
        var o = layer.Options;
        int t = x.Shape[0], d = layer.Dim, hk = o.Heads * o.TopK;
        var q = layer.Query(x);
        var (indices, scores) = Ops.ProductKeyTopK(q, p["keys.sub1"], p["keys.sub2"], o.Heads, o.TopK);
        var g = Ops.PeerRouterWeights(scores, o.Router);
        var ids = indices.Reshape(t * hk);
        var down = Ops.Embedding(ids, p["experts.down"], sparseGrad: false).Reshape(t, hk, d); // [T, h*k, d]
        var up = Ops.Embedding(ids, p["experts.up"], sparseGrad: false).Reshape(t, hk, d);     // [T, h*k, d]
        var h = Ops.MatMul(down, x.Reshape(t, d, 1));                                          // [T, h*k, 1]
        var a = o.Activation == PeerActivation.Relu ? Ops.Relu(h) : Ops.Gelu(h);
        var ag = Ops.Mul(a, g.Reshape(t, hk, 1));                                              // [T, h*k, 1]
        return Ops.MatMul(up, ag, transA: true).Reshape(t, d);                                 // [T, d]
    }
}

/// <summary>
/// The ablation compares like with like only if the naive design computes PeerLayer's layer: on two identical
/// small layers, the outputs and the gradient of experts.down (dense in the naive design, row-sparse in the fused
/// one, scattered on the host) must agree. A mismatch stops the run (BenchCheckException).
/// </summary>
internal static class NaivePeerCheck
{
    const double Tolerance = 1e-5;

    public static (double Y, double DDown) Run(Device device)
    {
        const int experts = 64, dim = 16, tokens = 10;
        var options = new PeerOptions { Experts = experts, Heads = 2, TopK = 3, QueryDim = 8, Seed = 3 };
        using var scope = Scope.Begin();
        using var fused = new PeerLayer(device, dim, options);
        using var naive = new PeerLayer(device, dim, options);
        var x = Ops.Normal(device, 9, 0f, 1f, tokens, dim);
        // One design's graph at a time: a backward consumes the whole tape and takes the output gradient.
        var yf = fused.Forward(x);
        var a = yf.ToArray();
        device.Tape.Backward(yf, Ops.Normal(device, 10, 0f, 1f, tokens, dim));
        var yn = NaivePeer.Forward(naive, x);
        var b = yn.ToArray();
        device.Tape.Backward(yn, Ops.Normal(device, 10, 0f, 1f, tokens, dim));
        var sparse = Down(fused).SparseGrad ?? throw new BenchCheckException("PeerLayer's experts.down got no row-sparse gradient");
        var dense = new float[experts * dim];
        var rows = sparse.Rows.ToIntArray();
        var values = sparse.Values.ToArray();
        for (int r = 0, real = sparse.CountRows(); r < real; r++) // the real rows; the padding after them names no row
            for (int c = 0; c < dim; c++) dense[rows[r] * dim + c] += values[r * dim + c];
        var got = Down(naive).Grad?.ToArray() ?? throw new BenchCheckException("the naive design's experts.down got no dense gradient");
        double dy = a.Select((v, i) => (double)Math.Abs(v - b[i])).Max();
        double dg = got.Select((v, i) => (double)Math.Abs(v - dense[i])).Max();
        fused.ZeroGrad();
        naive.ZeroGrad();
        if (!(dy <= Tolerance && dg <= Tolerance))
            throw new BenchCheckException($"the ablation's naive design differs from PeerLayer: max |y diff| {dy:G3}, max |d experts.down diff| {dg:G3} (allowed {Tolerance:G2})");
        return (dy, dg);
    }

    static Tensor Down(PeerLayer layer) => layer.NamedParameters().Single(p => p.Name == "experts.down").Tensor;
}
