// PeerLayer behind the feed-forward interface. PeerLayer.cs belongs to the PEER work, so this adapter wraps
// it instead of changing it: it registers the layer's own parameter and buffer tensors under the same names
// (so state dicts and interop names are PeerLayer's, without a prefix) and passes the train/eval mode on.
namespace Peer.Nn;

/// <summary>
/// A <see cref="PeerLayer"/> as a <see cref="FeedForwardLayer"/>: same forward, same parameter names (<c>query.weight</c>,
/// <c>query.bias</c>, <c>query_norm.*</c>, <c>keys.sub1</c>, <c>keys.sub2</c>, <c>experts.down</c>, <c>experts.up</c>), cost from
/// <see cref="FeedForwardCost.Of(PeerLayer)"/>.
/// </summary>
public sealed class PeerFeedForward : FeedForwardLayer
{
    /// <summary>The wrapped layer (for its usage hook and last retrieval).</summary>
    public PeerLayer Layer { get; }

    /// <summary>Creates a PEER layer of width <paramref name="dim"/> with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">As <see cref="PeerLayer"/>'s constructor.</exception>
    public PeerFeedForward(Device device, int dim, PeerOptions? options = null) : base(device, dim)
    {
        Layer = new PeerLayer(device, dim, options);
        foreach (var (name, t) in Layer.NamedParameters()) Parameter(name, t);
        foreach (var (name, t) in Layer.NamedBuffers()) Buffer(name, t);
    }

    /// <inheritdoc />
    public override FeedForwardCost Cost => FeedForwardCost.Of(Layer);

    /// <summary>The PEER layer's forward, in this module's train/eval mode.</summary>
    /// <exception cref="ArgumentException">As <see cref="PeerLayer.Forward"/>.</exception>
    public override Tensor Forward(Tensor x)
    {
        if (Layer.IsTraining != IsTraining) Layer.Train(IsTraining);
        return Layer.Forward(x);
    }

    /// <inheritdoc />
    public override void Dispose()
    {
        Layer.Dispose();
        base.Dispose(); // the same tensors: Tensor.Dispose is idempotent
    }
}
