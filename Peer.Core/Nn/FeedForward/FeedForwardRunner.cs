// The library half of `peer layer`: runs any feed-forward kind (PEER included) from parameter arrays given by
// interop name (docs/layers.md), so a layer can be compared with another implementation (PyTorch). Sizes follow
// from the shapes, the query norm of peer and pkm from which query_norm.* names are present; what shapes cannot
// say (k, capacity factor, gate renormalisation, activation) comes from the options. File I/O (safetensors) is
// the caller's business.
using ILGPU.Runtime;

namespace Peer.Nn;

/// <summary>What <see cref="FeedForwardRunner.Run"/> returns.</summary>
/// <param name="Y">Output F32 [T, d].</param>
/// <param name="AuxiliaryLoss">The layer's auxiliary loss (moe-topk), or null.</param>
/// <param name="Grads">When a grad_y was given: <c>grad.x</c> and <c>grad.&lt;parameter name&gt;</c> for every parameter, full dense
/// shape (zero rows where a row-sparse gradient has none, all zeros where none arrived), with their shapes; empty otherwise.</param>
/// <param name="Retrieval">The PEER layer's retrieval (peer only; null for the other kinds).</param>
public sealed record FeedForwardRunResult(float[] Y, float? AuxiliaryLoss, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> Grads,
    PeerRetrieval? Retrieval = null);

/// <summary>The experts a PEER forward retrieved.</summary>
/// <param name="Indices">Expert ids I32 [T, h, k], each head's in descending score order.</param>
/// <param name="Weights">Router weights F32 [T, h, k].</param>
/// <param name="Shape">[T, h, k].</param>
public sealed record PeerRetrieval(int[] Indices, float[] Weights, int[] Shape);

/// <summary>Runs a feed-forward layer of any kind on host arrays named as in docs/layers.md.</summary>
public static class FeedForwardRunner
{
    /// <summary>
    /// Builds the layer of <paramref name="kind"/> described by <paramref name="parameters"/>: d, hidden, E, S, N, h and dq follow
    /// from the shapes, the query norm (peer, pkm) from which <c>query_norm.*</c> names are present (<c>running_mean</c> or
    /// <c>running_var</c>: BatchNorm; <c>weight</c>/<c>bias</c> alone: LayerNorm; neither: none); <paramref name="options"/>
    /// supplies k, the capacity factor, gate renormalisation and the activation (its sizes are ignored). PEER's router is
    /// softmax. Soft MoE is built as a single non-causal layer. Runs <paramref name="x"/> [T, d] in training mode (or evaluation
    /// mode with <paramref name="eval"/>) and, when <paramref name="gradY"/> is given, back-propagates it (plus the auxiliary
    /// loss, weight 1, when the layer has one).
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
                int dq = 2 * s1[1], n = s1[0];
                string table = kind == FeedForwardKind.Peer ? "experts.down" : "values.weight";
                var tableShape = Shape(table, 2);
                Check.That(w[1] == dim, "query.weight", w, $"[h*dq, d = {dim}]");
                Check.That(w[0] % dq == 0, "query.weight", w, $"a first dimension h*dq divisible by dq = {dq} (from keys.sub1)");
                Check.That((long)n * n == tableShape[0], table, tableShape, $"[N = n*n = {(long)n * n}, d] (n = {n} from keys.sub1)");
                o = o with { Experts = n * n, Heads = w[0] / dq, QueryDim = dq, QueryNorm = QueryNormFrom(parameters) };
                break;
        }

        using var layer = FeedForwardFactory.Create(device, kind, o);
        Load(layer, parameters);
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
            grads = DenseGrads(layer, tx);
        }
        else device.Tape.Clear();
        var retrieval = layer is PeerLayer peer
            ? new PeerRetrieval(peer.LastIndices!.ToIntArray(), peer.LastWeights!.ToArray(), [t, peer.Options.Heads, peer.Options.TopK])
            : null;
        return new FeedForwardRunResult(y.ToArray(), aux, grads, retrieval);
    }

    /// <summary>BatchNorm when running statistics are given, LayerNorm when only the affine parameters are, else none.</summary>
    static PeerQueryNorm QueryNormFrom(IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters) =>
        parameters.ContainsKey("query_norm.running_mean") || parameters.ContainsKey("query_norm.running_var") ? PeerQueryNorm.BatchNorm
        : parameters.ContainsKey("query_norm.weight") ? PeerQueryNorm.LayerNorm
        : PeerQueryNorm.None;

    /// <summary>Copies every parameter and buffer of <paramref name="layer"/> from <paramref name="parameters"/>.</summary>
    /// <exception cref="ArgumentException">A name the layer does not have, a missing name, or a shape or length that differs.</exception>
    static void Load(Module layer, IReadOnlyDictionary<string, (float[] Data, int[] Shape)> parameters)
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

    /// <summary><c>grad.x</c> and <c>grad.&lt;name&gt;</c> for every parameter, full dense shape.</summary>
    static Dictionary<string, (float[] Data, int[] Shape)> DenseGrads(Module layer, Tensor x)
    {
        var grads = new Dictionary<string, (float[], int[])> { ["grad.x"] = (x.Grad!.ToArray(), (int[])x.Shape.Clone()) };
        foreach (var (name, p) in layer.NamedParameters())
        {
            float[] g = p.Grad is { } dense ? dense.ToArray()
                : p.SparseGrad is { } sparse ? RowSparseGradients.ToDense(sparse, p.Shape[0]).ToArray()
                : new float[p.Length];
            grads["grad." + name] = (g, (int[])p.Shape.Clone());
        }
        return grads;
    }
}
