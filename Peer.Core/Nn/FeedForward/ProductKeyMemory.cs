// The product key memory baseline (Lample et al. 2019), on the same retrieval as PEER: query projection and
// norm, product-key top-k over the shared sub-key tables, softmax over each head's k kept scores, and a
// weighted read of a value table [N, d]. Heads are summed. Value and sub-key gradients are row-sparse.
namespace Peer.Nn;

/// <summary>
/// Product key memory: <c>y = sum_j sum_{i in top-k of head j} softmax(scores_j)_i * values[i]</c> for x F32 [T, d], with the
/// retrieval of <see cref="PeerLayer"/> (<see cref="ProductKeys"/>; the two sub-key tables are shared by the heads, where
/// Lample et al. give each head its own). Parameters (interop names): <c>query.weight</c> [h*dq, d], <c>query.bias</c> [h*dq],
/// <c>query_norm.weight</c>, <c>query_norm.bias</c> [h*dq] (BatchNorm, with buffers <c>query_norm.running_mean</c>,
/// <c>query_norm.running_var</c>; or LayerNorm), <c>keys.sub1</c>, <c>keys.sub2</c> [n, dq/2], <c>values.weight</c> [N, d].
/// </summary>
/// <remarks>
/// Paper setting (He 2024's PKM baseline): N = 1024², h = 8, k = 32, query BatchNorm. Initialisation: the retrieval as
/// <see cref="ProductKeys"/> describes (seeds included), values N(0, 1/d) as Lample et al. Cost per token: retrieval as PEER
/// (<c>d h dq + h (n dq + k²)</c>) plus <c>h k d</c> for the weighted read; active parameters: query, norm, sub-keys and
/// <c>h k d</c> value elements (an upper bound: heads may share rows).
/// </remarks>
public sealed class ProductKeyMemory : FeedForwardLayer
{
    readonly ProductKeys keys;
    readonly Tensor values;

    /// <summary>Number of memories N = n².</summary>
    public int Memories { get; }
    /// <summary>Heads h.</summary>
    public int Heads => keys.Heads;
    /// <summary>Memories kept per head k.</summary>
    public int TopK => keys.TopK;
    /// <summary>Query size per head dq.</summary>
    public int QueryDim => keys.QueryDim;
    /// <summary>Sub-keys per table n.</summary>
    public int SubKeys => keys.SubKeys;
    /// <summary>Query normalisation.</summary>
    public PeerQueryNorm QueryNorm => keys.QueryNorm;
    /// <summary>The ranks over whose tokens the query BatchNorm takes its training statistics (see <see cref="ProductKeys.BatchGroup"/>).</summary>
    public Distributed.Communicator? BatchGroup { get => keys.BatchGroup; set => keys.BatchGroup = value; }

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
        keys = Component(new ProductKeys(device, dim, heads, queryDim, n, k, queryNorm, seed));
        values = Parameter("values.weight", Ops.Normal(device, LayerSeeds.Derive(seed, ProductKeys.FirstOwnerSeed), 0f, 1f / MathF.Sqrt(dim), memories, dim), rowSparse: true);
    }

    /// <inheritdoc />
    public override FeedForwardCost Cost
    {
        get
        {
            var (macs, prm) = keys.Cost;
            long hkd = (long)Heads * TopK * Dim;
            return new FeedForwardCost(macs + hkd, prm + (long)Memories * Dim, prm + hkd);
        }
    }

    /// <summary>Retrieved memory ids I32 [T, h, k] and their softmax weights F32 [T, h, k] (differentiable) for x F32 [T, d].</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device, or T &lt; 2 with BatchNorm in training.</exception>
    public (Tensor Indices, Tensor Weights) Retrieve(Tensor x)
    {
        CheckInput(x, minTokens: QueryNorm == PeerQueryNorm.BatchNorm && IsTraining && (BatchGroup?.Size ?? 1) == 1 ? 2 : 0);
        return keys.Retrieve(x, PeerRouter.Softmax);
    }

    /// <summary>The memory read (see the type); x F32 [T, d] -> F32 [T, d]. Differentiable (row-sparse value and sub-key gradients).</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device, or T &lt; 2 with BatchNorm in training.</exception>
    public override Tensor Forward(Tensor x)
    {
        var (indices, weights) = Retrieve(x);
        return Ops.MemoryRead(indices, weights, values);
    }
}
