// The one-input, one-output interface shared by the standard layers, so that Sequential can chain them.
namespace Peer.Nn;

/// <summary>A module mapping one tensor to one tensor.</summary>
public interface ILayer
{
    /// <summary>Applies the layer to <paramref name="x"/>; differentiable when the layer's ops are.</summary>
    Tensor Forward(Tensor x);
}
