// Product-key retrieval (docs/peer-spec.md; Lample et al. 2019), the part PEER and PKM share: the query projection
// W x + b, its normalisation, the two sub-key tables shared by all heads, and the top-k over the n² product keys
// (Ops.ProductKeyTopK). Its owner registers it as a component, so the names query.*, query_norm.* and keys.* are
// the owner's own (docs/layers.md). The seeds of every retrieval layer's parameters are fixed here, in one place.
using Peer.Distributed;

namespace Peer.Nn;

/// <summary>
/// Product-key retrieval for x F32 [T, d]: the query <c>q = query_norm(W x + b)</c> F32 [T, h*dq], then per head the k
/// best of the n² keys <c>sub1[a] ++ sub2[b]</c> (score <c>q_half1 . sub1[a] + q_half2 . sub2[b]</c>, expert id
/// <c>a n + b</c>). Parameters (interop names): <c>query.weight</c> [h*dq, d], <c>query.bias</c> [h*dq],
/// <c>query_norm.weight</c>/<c>.bias</c> [h*dq] (BatchNorm or LayerNorm; BatchNorm adds buffers
/// <c>query_norm.running_mean</c>/<c>running_var</c>), <c>keys.sub1</c>, <c>keys.sub2</c> [n, dq/2].
/// </summary>
/// <remarks>
/// Initialisation (ours; the paper gives none): query weight and bias U(-1/sqrt d, 1/sqrt d) as PyTorch's Linear; norm
/// weight 1, bias 0, running mean 0, running variance 1; sub-keys N(0, 1/(dq/2)) so that a unit-variance query half gives
/// unit-variance sub-key scores.
/// <para>Seeds, for every layer built on this retrieval: parameter i of the layer is drawn from the stream
/// <c>Derive(seed, i)</c> of the layer's seed (the 64-bit mix all layers use): i = 1 <c>query.weight</c>, 2 <c>query.bias</c>,
/// 3 <c>keys.sub1</c>, 4 <c>keys.sub2</c> (drawn here), and from <see cref="FirstOwnerSeed"/> = 5 on the owner's tables:
/// PEER <c>experts.down</c> 5, <c>experts.up</c> 6; PKM <c>values.weight</c> 5.</para>
/// </remarks>
public sealed class ProductKeys : Module
{
    /// <summary>The first seed counter left to the owner's own tables (see the remarks).</summary>
    public const ulong FirstOwnerSeed = 5;

    readonly Tensor queryWeight, queryBias, keys1, keys2;
    readonly Tensor? normWeight, normBias, runningMean, runningVar;

    /// <summary>Model width d.</summary>
    public int Dim { get; }
    /// <summary>Heads h.</summary>
    public int Heads { get; }
    /// <summary>Query size per head dq (even).</summary>
    public int QueryDim { get; }
    /// <summary>Sub-keys per table n (n² keys).</summary>
    public int SubKeys { get; }
    /// <summary>Keys kept per head k.</summary>
    public int TopK { get; }
    /// <summary>Query normalisation.</summary>
    public PeerQueryNorm QueryNorm { get; }

    /// <summary>
    /// The ranks whose tokens together form the batch that BatchNorm normalises over in training (a synchronised BatchNorm, for
    /// data-parallel training: every rank of the group must run the layer together); null (the default) for this process's tokens.
    /// </summary>
    public Communicator? BatchGroup { get; set; }

    /// <summary>Creates the retrieval, with parameters drawn from <paramref name="seed"/> (see the remarks).</summary>
    /// <exception cref="ArgumentException">A non-positive width, head count or sub-key count, an odd or non-positive query size,
    /// k outside [1, min(n, <see cref="Ops.ProductKeyMaxTopK"/>)], or an undefined norm.</exception>
    public ProductKeys(Device device, int dim, int heads, int queryDim, int subKeys, int topK, PeerQueryNorm queryNorm, ulong seed)
        : base(device)
    {
        Check.That(dim >= 1, nameof(dim), dim, "a positive model width");
        Check.That(heads >= 1, nameof(heads), heads, "at least 1 head");
        Check.That(queryDim >= 2 && queryDim % 2 == 0, nameof(queryDim), queryDim, "an even query size >= 2 (it is split into two halves)");
        Check.That(subKeys >= 1, nameof(subKeys), subKeys, "at least 1 sub-key per table");
        Check.That(topK >= 1 && topK <= subKeys && topK <= Ops.ProductKeyMaxTopK, nameof(topK), topK,
            $"1 <= k <= min(sub-keys = {subKeys}, {Ops.ProductKeyMaxTopK})");
        Check.That((long)heads * queryDim <= int.MaxValue / 4, nameof(queryDim), queryDim, "heads * queryDim small enough to index");
        Check.That(Enum.IsDefined(queryNorm), nameof(queryNorm), queryNorm, "BatchNorm, LayerNorm or None");
        Dim = dim;
        Heads = heads;
        QueryDim = queryDim;
        SubKeys = subKeys;
        TopK = topK;
        QueryNorm = queryNorm;
        int hq = heads * queryDim, half = queryDim / 2;
        float bound = 1f / MathF.Sqrt(dim);
        queryWeight = Parameter("query.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 1), -bound, bound, hq, dim));
        queryBias = Parameter("query.bias", Ops.Uniform(device, LayerSeeds.Derive(seed, 2), -bound, bound, hq));
        if (queryNorm != PeerQueryNorm.None)
        {
            normWeight = Parameter("query_norm.weight", Tensor.Full(device, 1f, hq));
            normBias = Parameter("query_norm.bias", Tensor.Zeros(device, hq));
        }
        if (queryNorm == PeerQueryNorm.BatchNorm)
        {
            runningMean = Buffer("query_norm.running_mean", Tensor.Zeros(device, hq));
            runningVar = Buffer("query_norm.running_var", Tensor.Full(device, 1f, hq));
        }
        keys1 = Parameter("keys.sub1", Ops.Normal(device, LayerSeeds.Derive(seed, 3), 0f, 1f / MathF.Sqrt(half), subKeys, half), rowSparse: true);
        keys2 = Parameter("keys.sub2", Ops.Normal(device, LayerSeeds.Derive(seed, 4), 0f, 1f / MathF.Sqrt(half), subKeys, half), rowSparse: true);
    }

    /// <summary>Multiply-adds per token and parameter elements of the retrieval (see <see cref="FeedForwardCost"/>).</summary>
    internal (long Macs, long Params) Cost =>
        FeedForwardCost.Retrieval(Dim, Heads, QueryDim, SubKeys, TopK, QueryNorm != PeerQueryNorm.None);

    /// <summary>The normalised query <c>query_norm(W x + b)</c>, F32 [T, h*dq]. Differentiable. BatchNorm uses batch statistics
    /// (and updates the running ones) in training mode, the running statistics in evaluation mode.</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device, or T &lt; 2 with BatchNorm in training.</exception>
    public Tensor Query(Tensor x)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(ReferenceEquals(x.Device, Device), nameof(x), x.Device.Name, $"a tensor on the layer's device '{Device.Name}'");
        bool batchStats = QueryNorm == PeerQueryNorm.BatchNorm && IsTraining && (BatchGroup?.Size ?? 1) == 1;
        Check.That(x.Rank == 2 && x.Shape[1] == Dim && (x.Shape[0] >= 2 || !batchStats), nameof(x), x.Shape,
            batchStats ? $"[T, d = {Dim}] with T >= 2 (BatchNorm in training needs two tokens)" : $"[T, d = {Dim}]");
        var q = Ops.Linear(x, queryWeight, queryBias);
        return QueryNorm switch
        {
            PeerQueryNorm.BatchNorm => Ops.SyncBatchNorm1d(q, normWeight!, normBias!, runningMean!, runningVar!, IsTraining, 0.1f, 1e-5f, BatchGroup),
            PeerQueryNorm.LayerNorm => Ops.LayerNorm(q, normWeight!, normBias!, 1e-5f),
            _ => q,
        };
    }

    /// <summary>
    /// Retrieved ids I32 [T, h, k] (each head's in descending score order) and their router weights F32 [T, h, k]
    /// (<see cref="Ops.PeerRouterWeights"/> over each head's k scores; differentiable, with row-sparse sub-key gradients).
    /// </summary>
    /// <exception cref="ArgumentException">As <see cref="Query"/>.</exception>
    public (Tensor Indices, Tensor Weights) Retrieve(Tensor x, PeerRouter router = PeerRouter.Softmax)
    {
        var (indices, scores) = Ops.ProductKeyTopK(Query(x), keys1, keys2, Heads, TopK);
        return (indices, Ops.PeerRouterWeights(scores, router));
    }
}
