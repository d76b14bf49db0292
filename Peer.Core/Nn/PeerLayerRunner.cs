// The library half of `peer layer`: run one PEER layer from parameter arrays given by
// interop name, so its output and gradients can be compared with another implementation (PyTorch).
// N, h, dq and d follow from the shapes; the query norm from which query_norm.* names are present.
// File I/O (safetensors) is the caller's business.
using ILGPU.Runtime;

namespace Peer.Nn;

/// <summary>What <see cref="PeerLayerRunner.Run"/> returns.</summary>
/// <param name="Y">Output F32 [T, d].</param>
/// <param name="Indices">Expert ids I32 [T, h, k], each head's in descending score order.</param>
/// <param name="Weights">Router weights F32 [T, h, k].</param>
/// <param name="IndexShape">[T, h, k].</param>
/// <param name="Grads">When a grad_y was given: <c>grad.x</c> and <c>grad.&lt;parameter name&gt;</c> for every parameter, full
/// dense shape (zero rows where nothing was retrieved), with their shapes; empty otherwise.</param>
public sealed record PeerRunResult(float[] Y, int[] Indices, float[] Weights, int[] IndexShape,
    IReadOnlyDictionary<string, (float[] Data, int[] Shape)> Grads);

/// <summary>Runs a PEER layer on host arrays named as in docs/peer-spec.md.</summary>
public static class PeerLayerRunner
{
    /// <summary>
    /// Builds the layer described by <paramref name="parameters"/> (names and shapes of docs/peer-spec.md; <c>query_norm.running_mean</c>
    /// and <c>running_var</c> present means BatchNorm, <c>query_norm.weight</c>/<c>bias</c> alone LayerNorm, neither no norm), runs
    /// <paramref name="x"/> [T, d] through it in training mode (batch statistics) or, with <paramref name="eval"/>, evaluation mode,
    /// and, when <paramref name="gradY"/> [T, d] is given, back-propagates it. Router: softmax.
    /// </summary>
    /// <exception cref="ArgumentException">A missing, unknown or misshapen parameter, inconsistent sizes (N not a square, h*dq not
    /// divisible), a bad x or grad_y shape, or an invalid top-k.</exception>
    public static PeerRunResult Run(Device device, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters,
        float[] x, int[] xShape, float[]? gradY, int topK, PeerActivation activation = PeerActivation.Gelu, bool eval = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(xShape);
        Check.That(xShape.Length == 2 && (long)xShape[0] * xShape[1] == x.Length && xShape[1] > 0, "x", xShape, $"[T, d] holding the {x.Length} values given");
        int t = xShape[0], dim = xShape[1];
        (float[] Data, int[] Shape) Get(string name)
        {
            Check.That(parameters.ContainsKey(name), nameof(parameters), string.Join(", ", parameters.Keys), $"a parameter named '{name}'");
            var p = parameters[name];
            Check.That(p.Shape.Aggregate(1L, (a, b) => a * b) == p.Data.Length, name, p.Shape, $"a shape holding its {p.Data.Length} values");
            return p;
        }
        var w = Get("query.weight");
        var s1 = Get("keys.sub1");
        var down = Get("experts.down");
        Check.That(w.Shape.Length == 2 && w.Shape[1] == dim, "query.weight", w.Shape, $"[h*dq, d = {dim}]");
        Check.That(s1.Shape.Length == 2 && s1.Shape[1] >= 1, "keys.sub1", s1.Shape, "[n, dq/2]");
        int dq = 2 * s1.Shape[1], n = s1.Shape[0];
        Check.That(w.Shape[0] % dq == 0, "query.weight", w.Shape, $"a first dimension h*dq divisible by dq = {dq} (from keys.sub1)");
        Check.That(down.Shape.Length == 2 && (long)n * n == down.Shape[0], "experts.down", down.Shape, $"[N = n*n = {(long)n * n}, d] (n = {n} from keys.sub1)");
        var norm = LayerRunnerState.QueryNormFrom(parameters);
        var options = new PeerOptions
        {
            Experts = n * n, Heads = w.Shape[0] / dq, TopK = topK, QueryDim = dq, Activation = activation, QueryNorm = norm,
        };

        using var layer = new PeerLayer(device, dim, options);
        LayerRunnerState.Load(layer, parameters);
        layer.Train(!eval);

        using var scope = Scope.Begin();
        var tx = Tensor.FromArray(device, x, t, dim);
        tx.RequiresGrad = gradY is not null;
        var y = layer.Forward(tx);
        IReadOnlyDictionary<string, (float[], int[])> grads = new Dictionary<string, (float[], int[])>();
        if (gradY is not null)
        {
            Check.That(gradY.Length == x.Length, nameof(gradY), $"{gradY.Length} values", $"[T, d] = [{t}, {dim}] like x");
            device.Tape.Backward(y, Tensor.FromArray(device, gradY, t, dim));
            grads = LayerRunnerState.DenseGrads(layer, tx);
        }
        else device.Tape.Clear();
        return new PeerRunResult(y.ToArray(), layer.LastIndices!.ToIntArray(), layer.LastWeights!.ToArray(), [t, options.Heads, topK], grads);
    }
}
