// Cost accounting of the feed-forward layers from their configuration: multiply-adds per token (2 FLOPs each),
// total and active parameters. The formulas live here, next to each other, so the training program can set
// up equal-compute comparisons and the tests can check each against a hand computation.
namespace Peer.Nn;

/// <summary>
/// Cost of a feed-forward layer: <see cref="MacsPerToken"/> multiply-adds per token in the forward pass,
/// <see cref="TotalParameters"/> parameter elements and <see cref="ActiveParametersPerToken"/> of them read per token.
/// </summary>
/// <param name="MacsPerToken">Forward multiply-adds per token.</param>
/// <param name="TotalParameters">All parameter elements (buffers excluded).</param>
/// <param name="ActiveParametersPerToken">Parameter elements one token's output reads.</param>
public readonly record struct FeedForwardCost(long MacsPerToken, long TotalParameters, long ActiveParametersPerToken)
{
    /// <summary>Forward FLOPs per token, counting a multiply-add as 2 FLOPs.</summary>
    public long FlopsPerToken => 2 * MacsPerToken;

    /// <summary>Dense FFW <c>W2 act(W1 x + b1) + b2</c>: <c>2 d hidden</c> multiply-adds; <c>2 d hidden + hidden + d</c> parameters, all active.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static FeedForwardCost Dense(int dim, int hidden)
    {
        Check.Positive(dim, nameof(dim));
        Check.Positive(hidden, nameof(hidden));
        long p = DenseParameters(dim, hidden);
        return new FeedForwardCost(2L * dim * hidden, p, p);
    }

    /// <summary>Parameters of one dense FFW (or one expert of a MoE): <c>2 d hidden + hidden + d</c>.</summary>
    public static long DenseParameters(int dim, int hidden) => 2L * dim * hidden + hidden + dim;

    /// <summary>
    /// Product-key retrieval per token (shared by PEER and PKM), h heads of query size dq over n sub-keys, k kept:
    /// query projection <c>d h dq</c> + per head <c>n dq</c> (both halves against their n sub-keys) + <c>k^2</c> candidate sums.
    /// Parameters: query <c>h dq d + h dq</c>, norm <c>2 h dq</c> (BatchNorm or LayerNorm; 0 for none), sub-keys <c>n dq</c>; all active.
    /// </summary>
    internal static (long Macs, long Params) Retrieval(int dim, int heads, int queryDim, int subKeys, int k, bool norm)
    {
        long hq = (long)heads * queryDim;
        long macs = dim * hq + heads * ((long)subKeys * queryDim + (long)k * k);
        long prm = hq * dim + hq + (norm ? 2 * hq : 0) + (long)subKeys * queryDim;
        return (macs, prm);
    }

    /// <summary>
    /// PEER (docs/peer-spec.md): retrieval (see <see cref="Retrieval"/>) plus <c>h k 2d</c> expert multiply-adds (u_i . x and the
    /// accumulation of g act(.) v_i). Parameters add <c>2 N d</c> expert weights, of which <c>h k 2d</c> are active per token
    /// (an upper bound: two heads may retrieve the same expert). The router softmax and BatchNorm are not counted (elementwise).
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options (see <see cref="PeerOptions.Validate"/>) or a non-positive width.</exception>
    public static FeedForwardCost Of(PeerOptions options, int dim)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Check.Positive(dim, nameof(dim));
        var (macs, prm) = Retrieval(dim, options.Heads, options.QueryDim, options.SubKeys, options.TopK, options.QueryNorm != PeerQueryNorm.None);
        long hk = (long)options.Heads * options.TopK;
        return new FeedForwardCost(macs + hk * 2 * dim, prm + 2L * options.Experts * dim, prm + hk * 2 * dim);
    }

    /// <summary>The cost of <paramref name="layer"/> (see <see cref="Of(PeerOptions, int)"/>).</summary>
    public static FeedForwardCost Of(PeerLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Of(layer.Options, layer.Dim);
    }

    /// <summary>Expert-choice capacity for T tokens: <c>ceil(factor * T / E)</c>, clamped to [1, T].</summary>
    /// <exception cref="ArgumentException">A non-positive count or factor.</exception>
    public static int ExpertChoiceCapacity(double factor, int tokens, int experts) => CapacityOf(factor, 1, tokens, experts);

    /// <summary>Token-choice capacity for T tokens: <c>ceil(factor * k * T / E)</c>, clamped to [1, T].</summary>
    /// <exception cref="ArgumentException">A non-positive count or factor.</exception>
    public static int TopKCapacity(double factor, int k, int tokens, int experts) => CapacityOf(factor, k, tokens, experts);

    static int CapacityOf(double factor, int k, int tokens, int experts)
    {
        Check.That(factor > 0 && double.IsFinite(factor), nameof(factor), factor, "a positive, finite capacity factor");
        Check.Positive(tokens, nameof(tokens));
        Check.Positive(experts, nameof(experts));
        // Rounded to 9 decimals first so that e.g. 1.1 * 100 / 10 gives 11, not 12.
        double c = Math.Ceiling(Math.Round(factor * k * tokens / experts, 9));
        return (int)Math.Clamp(c, 1, tokens);
    }
}
