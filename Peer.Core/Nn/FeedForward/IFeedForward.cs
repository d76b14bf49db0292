// The one interface every feed-forward layer of a block implements (dense FFW, PEER, PKM, the MoEs), so a model
// can swap them and compare them at equal compute. Cost accounting convention, used by every layer:
// a multiply-add (one multiplication and one addition, as in a dot product or y += g * v) counts as 2 FLOPs.
namespace Peer.Nn;

/// <summary>
/// A feed-forward layer <c>x [T, d] -> y [T, d]</c>, differentiable through the tape, with its cost. Costs count the
/// multiply-adds of the forward pass from the configuration (matrix products, dot products, weighted sums; the k*k candidate
/// sums of product-key retrieval count as one each). Elementwise work (activations, softmax, normalisation, bias adds) and
/// comparisons (top-k) are not counted. FLOPs = 2 * multiply-adds.
/// </summary>
public interface IFeedForward : ILayer
{
    /// <summary>Model width d (input and output size per token).</summary>
    int Dim { get; }

    /// <summary>Forward FLOPs per token: 2 * the multiply-adds the kernels execute per token (see the type's remarks for the layer).</summary>
    long ForwardFlopsPerToken { get; }

    /// <summary>Number of parameter elements (buffers excluded).</summary>
    long TotalParameters { get; }

    /// <summary>Parameter elements one token's output reads (see each layer's remarks for what is counted).</summary>
    long ActiveParametersPerToken { get; }

    /// <summary>
    /// The auxiliary loss of the last forward (the load-balancing loss of <see cref="TopKMoe"/>), a differentiable F32 [1] tensor
    /// to be weighted and added to the main loss by the caller; null for layers without one. It belongs to the scope of that
    /// forward.
    /// </summary>
    Tensor? AuxiliaryLoss { get; }
}

/// <summary>Base of the feed-forward modules: a <see cref="Module"/> implementing <see cref="IFeedForward"/>, so a model can register it as a child.</summary>
public abstract class FeedForwardLayer : Module, IFeedForward
{
    /// <summary>Creates the module on <paramref name="device"/> for width <paramref name="dim"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dim"/> is not positive.</exception>
    protected FeedForwardLayer(Device device, int dim) : base(device)
    {
        Check.Positive(dim, nameof(dim));
        Dim = dim;
    }

    /// <inheritdoc />
    public int Dim { get; }

    /// <summary>The layer's cost from its configuration (multiply-adds per token, parameters).</summary>
    public abstract FeedForwardCost Cost { get; }

    /// <inheritdoc />
    public long ForwardFlopsPerToken => Cost.FlopsPerToken;

    /// <inheritdoc />
    public long TotalParameters => Cost.TotalParameters;

    /// <inheritdoc />
    public long ActiveParametersPerToken => Cost.ActiveParametersPerToken;

    /// <inheritdoc />
    public virtual Tensor? AuxiliaryLoss => null;

    /// <inheritdoc />
    public abstract Tensor Forward(Tensor x);

    /// <summary>Validates the input: F32 [T, d] on this module's device.</summary>
    /// <exception cref="ArgumentException">Another dtype, device or shape.</exception>
    protected void CheckInput(Tensor x, int minTokens = 0)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(ReferenceEquals(x.Device, Device), nameof(x), x.Device.Name, $"a tensor on the layer's device '{Device.Name}'");
        Check.That(x.Rank == 2 && x.Shape[1] == Dim && x.Shape[0] >= minTokens, nameof(x), x.Shape,
            $"[T, d = {Dim}] with T >= {minTokens}");
    }

    /// <summary>Applies the activation elementwise (differentiable).</summary>
    internal static Tensor Activate(Tensor x, PeerActivation activation) =>
        activation == PeerActivation.Relu ? Ops.Relu(x) : Ops.Gelu(x);
}
