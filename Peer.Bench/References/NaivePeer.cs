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
