// The product key memory baseline (Lample et al. 2019), on the same retrieval as PEER: query projection and
// norm, product-key top-k over the shared sub-key tables, softmax over each head's k kept scores, and a
// weighted read of a value table [N, d]. Heads are summed. Value and sub-key gradients are row-sparse.
namespace Peer.Nn;

/// <summary>
/// Product key memory: <c>y = sum_j sum_{i in top-k of head j} softmax(scores_j)_i * values[i]</c> for x F32 [T, d], with the
/// retrieval of <see cref="PeerLayer"/> (<see cref="Ops.ProductKeyTopK"/>; the two sub-key tables are shared by the heads, where
/// Lample et al. give each head its own). Parameters (interop names): <c>query.weight</c> [h*dq, d], <c>query.bias</c> [h*dq],
/// <c>query_norm.weight</c>, <c>query_norm.bias</c> [h*dq] (BatchNorm, with buffers <c>query_norm.running_mean</c>,
/// <c>query_norm.running_var</c>; or LayerNorm), <c>keys.sub1</c>, <c>keys.sub2</c> [n, dq/2], <c>values.weight</c> [N, d].
/// </summary>
/// <remarks>
/// Paper setting (He 2024's PKM baseline): N = 1024², h = 8, k = 32, query BatchNorm. Initialisation: query and sub-keys as
/// <see cref="PeerLayer"/>, values N(0, 1/d) as Lample et al. Cost per token: retrieval as PEER
/// (<c>d h dq + h (n dq + k²)</c>) plus <c>h k d</c> for the weighted read; active parameters: query, norm, sub-keys and
/// <c>h k d</c> value elements (an upper bound: heads may share rows).
/// </remarks>
public sealed class ProductKeyMemory : FeedForwardLayer
{
    readonly Tensor queryWeight, queryBias, keys1, keys2, values;
    readonly Tensor? normWeight, normBias, runningMean, runningVar;

    /// <summary>Number of memories N = n².</summary>
    public int Memories { get; }
    /// <summary>Heads h.</summary>
    public int Heads { get; }
    /// <summary>Memories kept per head k.</summary>
    public int TopK { get; }
    /// <summary>Query size per head dq.</summary>
    public int QueryDim { get; }
    /// <summary>Sub-keys per table n.</summary>
    public int SubKeys { get; }
    /// <summary>Query normalisation.</summary>
    public PeerQueryNorm QueryNorm { get; }

    /// <summary>Creates the memory.</summary>
    /// <exception cref="ArgumentException">memories not a perfect square, k outside [1, min(n, <see cref="Ops.ProductKeyMaxTopK"/>)],
    /// an odd or non-positive query size, a non-positive head count or width, or a table too large for one tensor.</exception>
    public ProductKeyMemory(Device device, int dim, int memories = 1024 * 1024, int heads = 8, int k = 32, int queryDim = 128,
        PeerQueryNorm queryNorm = PeerQueryNorm.BatchNorm, ulong seed = 0) : base(device, dim)
    {
        int n = (int)Math.Round(Math.Sqrt(memories));
        Check.That(memories >= 1 && (long)n * n == memories, nameof(memories), memories, "a perfect square n*n >= 1");
        Check.Positive(heads, nameof(heads));
        Check.That(queryDim >= 2 && queryDim % 2 == 0, nameof(queryDim), queryDim, "an even query size >= 2");
        Check.That(k >= 1 && k <= n && k <= Ops.ProductKeyMaxTopK, nameof(k), k, $"1 <= k <= min(sqrt(memories) = {n}, {Ops.ProductKeyMaxTopK})");
        Check.That((long)memories * dim <= int.MaxValue, nameof(dim), dim, $"memories * dim <= {int.MaxValue} (the value table is one tensor)");
        Check.That(Enum.IsDefined(queryNorm), nameof(queryNorm), queryNorm, "BatchNorm, LayerNorm or None");
        Memories = memories;
        Heads = heads;
        TopK = k;
        QueryDim = queryDim;
        SubKeys = n;
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
        keys1 = Parameter("keys.sub1", Ops.Normal(device, LayerSeeds.Derive(seed, 3), 0f, 1f / MathF.Sqrt(half), n, half));
        keys2 = Parameter("keys.sub2", Ops.Normal(device, LayerSeeds.Derive(seed, 4), 0f, 1f / MathF.Sqrt(half), n, half));
        values = Parameter("values.weight", Ops.Normal(device, LayerSeeds.Derive(seed, 5), 0f, 1f / MathF.Sqrt(dim), memories, dim));
    }

    /// <inheritdoc />
    public override FeedForwardCost Cost
    {
        get
        {
            var (macs, prm) = FeedForwardCost.Retrieval(Dim, Heads, QueryDim, SubKeys, TopK, QueryNorm != PeerQueryNorm.None);
            long hkd = (long)Heads * TopK * Dim;
            return new FeedForwardCost(macs + hkd, prm + (long)Memories * Dim, prm + hkd);
        }
    }

    /// <summary>Retrieved memory ids I32 [T, h, k] and their softmax weights F32 [T, h, k] (differentiable) for x F32 [T, d].</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device, or T &lt; 2 with BatchNorm in training.</exception>
    public (Tensor Indices, Tensor Weights) Retrieve(Tensor x)
    {
        CheckInput(x, minTokens: QueryNorm == PeerQueryNorm.BatchNorm && IsTraining ? 2 : 0);
        var q = Ops.Linear(x, queryWeight, queryBias);
        q = QueryNorm switch
        {
            PeerQueryNorm.BatchNorm => Ops.BatchNorm1d(q, normWeight!, normBias!, runningMean!, runningVar!, IsTraining, 0.1f, 1e-5f),
            PeerQueryNorm.LayerNorm => Ops.LayerNorm(q, normWeight!, normBias!, 1e-5f),
            _ => q,
        };
        var (indices, scores) = Ops.ProductKeyTopK(q, keys1, keys2, Heads, TopK);
        return (indices, Ops.PeerRouterWeights(scores, PeerRouter.Softmax));
    }

    /// <summary>The memory read (see the type); x F32 [T, d] -> F32 [T, d]. Differentiable (row-sparse value and sub-key gradients).</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device, or T &lt; 2 with BatchNorm in training.</exception>
    public override Tensor Forward(Tensor x)
    {
        var (indices, weights) = Retrieve(x);
        return Ops.MemoryRead(indices, weights, values);
    }
}
