// Runs any feed-forward kind from parameter arrays given by interop name (docs/layers.md), so a layer can be
// compared with another implementation (the `peer layer --layer ...` runner). Sizes follow from the shapes;
// what shapes cannot say (k, capacity factor, gate renormalisation, activation) comes from the options.
// File I/O (safetensors) is the caller's business.
using ILGPU.Runtime;

namespace Peer.Nn;

/// <summary>What <see cref="FeedForwardRunner.Run"/> returns.</summary>
/// <param name="Y">Output F32 [T, d].</param>
/// <param name="AuxiliaryLoss">The layer's auxiliary loss (moe-topk), or null.</param>
/// <param name="Grads">When a grad_y was given: <c>grad.x</c> and <c>grad.&lt;parameter name&gt;</c> for every parameter, full dense
/// shape (zero rows where a row-sparse gradient has none), with their shapes; empty otherwise.</param>
public sealed record FeedForwardRunResult(float[] Y, float? AuxiliaryLoss, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> Grads);

/// <summary>Runs a feed-forward layer of any kind on host arrays named as in docs/layers.md.</summary>
public static class FeedForwardRunner
{
    /// <summary>
    /// Builds the layer of <paramref name="kind"/> described by <paramref name="parameters"/>: d, hidden, E, S, N, h and dq follow
    /// from the shapes, the query norm (peer, pkm) from which <c>query_norm.*</c> names are present; <paramref name="options"/>
    /// supplies k, the capacity factor, gate renormalisation and the activation (its sizes are ignored). Soft MoE is built as a
    /// single non-causal layer. Runs <paramref name="x"/> [T, d] in training mode (or evaluation mode with <paramref name="eval"/>)
    /// and, when <paramref name="gradY"/> is given, back-propagates it (plus the auxiliary loss, weight 1, when the layer has one).
    /// </summary>
    /// <exception cref="ArgumentException">A missing, unknown or misshapen parameter, inconsistent sizes, a bad x or grad_y, or
    /// options the kind rejects.</exception>
    public static FeedForwardRunResult Run(Device device, FeedForwardKind kind, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters,
        float[] x, int[] xShape, float[]? gradY, FeedForwardOptions? options = null, bool eval = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(xShape);
        Check.That(xShape.Length == 2 && (long)xShape[0] * xShape[1] == x.Length && xShape[1] > 0, "x", xShape, $"[T, d] holding the {x.Length} values given");
        int t = xShape[0], dim = xShape[1];
        int[] Shape(string name, int rank)
        {
            Check.That(parameters.ContainsKey(name), nameof(parameters), string.Join(", ", parameters.Keys), $"a parameter named '{name}'");
            var s = parameters[name].Shape;
            Check.That(s.Length == rank && s[^1] >= 1, name, s, $"a rank-{rank} shape");
            return s;
        }
        var o = (options ?? new FeedForwardOptions()) with { Dim = dim, Causal = false };
        switch (kind)
        {
            case FeedForwardKind.Ffw:
                o = o with { Hidden = Shape("fc1.weight", 2)[0] };
                break;
            case FeedForwardKind.MoeEc or FeedForwardKind.MoeTopK or FeedForwardKind.SoftMoe:
                var fc1 = Shape("experts.fc1.weight", 3);
                int rows = Shape("router.weight", 2)[0];
                Check.That(rows % fc1[0] == 0, "router.weight", parameters["router.weight"].Shape, $"a first dimension E*S divisible by E = {fc1[0]} (from experts.fc1.weight)");
                o = o with { Experts = fc1[0], Hidden = fc1[1], SlotsPerExpert = rows / fc1[0] };
                break;
            case FeedForwardKind.Peer or FeedForwardKind.Pkm:
                var w = Shape("query.weight", 2);
                var s1 = Shape("keys.sub1", 2);
                int dq = 2 * s1[1];
                Check.That(w[0] % dq == 0, "query.weight", w, $"a first dimension h*dq divisible by dq = {dq} (from keys.sub1)");
                var norm = LayerRunnerState.QueryNormFrom(parameters);
                o = o with { Experts = checked(s1[0] * s1[0]), Heads = w[0] / dq, QueryDim = dq, QueryNorm = norm };
                break;
        }

        using var layer = FeedForwardFactory.Create(device, kind, o);
        LayerRunnerState.Load(layer, parameters);
        layer.Train(!eval);

        using var scope = Scope.Begin();
        var tx = Tensor.FromArray(device, x, t, dim);
        tx.RequiresGrad = gradY is not null;
        var y = layer.Forward(tx);
        float? aux = layer.AuxiliaryLoss?.Item();
        IReadOnlyDictionary<string, (float[], int[])> grads = new Dictionary<string, (float[], int[])>();
        if (gradY is not null)
        {
            Check.That(gradY.Length == x.Length, nameof(gradY), $"{gradY.Length} values", $"[T, d] = [{t}, {dim}] like x");
            var total = Ops.Sum(Ops.Mul(y, Tensor.FromArray(device, gradY, t, dim)));
            if (layer.AuxiliaryLoss is { } a) total = Ops.Add(total, a);
            total.Backward();
            grads = LayerRunnerState.DenseGrads(layer, tx);
        }
        else device.Tape.Clear();
        return new FeedForwardRunResult(y.ToArray(), aux, grads);
    }
}
