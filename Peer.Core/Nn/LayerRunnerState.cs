// What PeerLayerRunner and FeedForwardRunner share: reading the query norm from parameter names, copying host
// arrays into a layer's state by interop name, and exporting every parameter's gradient as a dense array.
using ILGPU.Runtime;

namespace Peer.Nn;

/// <summary>Host-array state in and dense gradients out, for the layer runners.</summary>
internal static class LayerRunnerState
{
    /// <summary>BatchNorm when running statistics are given, LayerNorm when only the affine parameters are, else none.</summary>
    public static PeerQueryNorm QueryNormFrom(IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters) =>
        parameters.ContainsKey("query_norm.running_mean") || parameters.ContainsKey("query_norm.running_var") ? PeerQueryNorm.BatchNorm
        : parameters.ContainsKey("query_norm.weight") ? PeerQueryNorm.LayerNorm
        : PeerQueryNorm.None;

    /// <summary>Copies every parameter and buffer of <paramref name="layer"/> from <paramref name="parameters"/>.</summary>
    /// <exception cref="ArgumentException">A name the layer does not have, a missing name, or a shape or length that differs.</exception>
    public static void Load(Module layer, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters)
    {
        var state = layer.StateDict().ToList();
        foreach (var name in parameters.Keys)
            Check.That(state.Any(s => s.Name == name), nameof(parameters), name, $"only names of this layer ({string.Join(", ", state.Select(s => s.Name))})");
        foreach (var (name, tensor) in state)
        {
            Check.That(parameters.ContainsKey(name), nameof(parameters), string.Join(", ", parameters.Keys), $"a parameter named '{name}'");
            var p = parameters[name];
            Check.That(p.Shape.AsSpan().SequenceEqual(tensor.Shape) && p.Data.Length == tensor.Length, name, p.Shape,
                $"shape {Tensor.FormatShape(tensor.Shape)} with as many values");
            if (p.Data.Length > 0) tensor.View.SubView(0, p.Data.Length).CopyFromCPU(p.Data);
        }
    }

    /// <summary><c>grad.x</c> and <c>grad.&lt;name&gt;</c> for every parameter, full dense shape (zero rows where a row-sparse
    /// gradient has none, all zeros where no gradient arrived).</summary>
    public static Dictionary<string, (float[] Data, int[] Shape)> DenseGrads(Module layer, Tensor x)
    {
        var grads = new Dictionary<string, (float[], int[])> { ["grad.x"] = (x.Grad!.ToArray(), (int[])x.Shape.Clone()) };
        foreach (var (name, p) in layer.NamedParameters())
        {
            float[] g = p.Grad is { } dense ? dense.ToArray()
                : p.SparseGrad is { } sparse ? SortSegment.ToDense(sparse, p.Shape[0]).ToArray()
                : new float[p.Length];
            grads["grad." + name] = (g, (int[])p.Shape.Clone());
        }
        return grads;
    }
}
