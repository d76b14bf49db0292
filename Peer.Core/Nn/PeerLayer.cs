// The PEER layer as a feed-forward module (docs/peer-spec.md): product-key retrieval (ProductKeys.cs: query
// projection and norm, top-k over shared sub-keys), softmax (or sigmoid) router over each head's k kept
// scores, and fused singleton experts summed over heads. The expert tables and sub-keys receive row-sparse
// gradients, so a training step never costs O(N). Options are validated at construction with messages
// naming value and rule.
using Peer.Distributed;

namespace Peer.Nn;

/// <summary>Normalisation applied to the query <c>W x + b</c> before retrieval.</summary>
public enum PeerQueryNorm
{
    /// <summary>BatchNorm over the tokens of the batch (PyTorch semantics, momentum 0.1, eps 1e-5); the paper's default.</summary>
    BatchNorm,
    /// <summary>LayerNorm over each token's whole <c>h*dq</c> query vector (eps 1e-5).</summary>
    LayerNorm,
    /// <summary>No normalisation.</summary>
    None,
}

/// <summary>Options of a <see cref="PeerLayer"/>; defaults are the paper's (N = 1024², h = 8, k = 16, query BatchNorm).</summary>
public sealed record PeerOptions
{
    /// <summary>N, the number of experts; a perfect square n*n (product keys pair n sub-keys with n sub-keys).</summary>
    public int Experts { get; init; } = 1024 * 1024;
    /// <summary>h, retrieval heads; their outputs are summed.</summary>
    public int Heads { get; init; } = 8;
    /// <summary>k, experts kept per head; 1 &lt;= k &lt;= min(sqrt N, <see cref="Ops.ProductKeyMaxTopK"/>).</summary>
    public int TopK { get; init; } = 16;
    /// <summary>dq, query size per head; even (each half scores against one sub-key table). Ours: 128 (the paper gives none).</summary>
    public int QueryDim { get; init; } = 128;
    /// <summary>Expert activation (GELU, exact erf, by default).</summary>
    public PeerActivation Activation { get; init; } = PeerActivation.Gelu;
    /// <summary>Query normalisation (BatchNorm by default).</summary>
    public PeerQueryNorm QueryNorm { get; init; } = PeerQueryNorm.BatchNorm;
    /// <summary>Router: softmax over each head's kept scores (default) or sigmoid.</summary>
    public PeerRouter Router { get; init; } = PeerRouter.Softmax;
    /// <summary>Seed of the parameter initialisation (how each parameter's stream derives from it: <see cref="ProductKeys"/>).</summary>
    public ulong Seed { get; init; }

    /// <summary>sqrt(N) when N is a perfect square, else -1.</summary>
    public int SubKeys
    {
        get
        {
            int n = (int)Math.Round(Math.Sqrt(Experts));
            return Experts > 0 && (long)n * n == Experts ? n : -1;
        }
    }

    /// <summary>Throws unless the options are consistent (see each property for its rule).</summary>
    /// <exception cref="ArgumentException">A value breaks its rule; the message names the value and the rule.</exception>
    public void Validate()
    {
        Check.That(Experts >= 1 && SubKeys > 0, nameof(Experts), Experts, "a perfect square n*n >= 1 (product keys need n sub-keys per half)");
        Check.That(Heads >= 1, nameof(Heads), Heads, "at least 1 head");
        Check.That(QueryDim >= 2 && QueryDim % 2 == 0, nameof(QueryDim), QueryDim, "an even query size >= 2 (it is split into two halves)");
        Check.That(TopK >= 1, nameof(TopK), TopK, "at least 1 expert per head");
        Check.That(TopK <= SubKeys, nameof(TopK), TopK, $"at most sqrt(Experts) = {SubKeys} (each half keeps k of its n sub-keys)");
        Check.That(TopK <= Ops.ProductKeyMaxTopK, nameof(TopK), TopK, $"at most {Ops.ProductKeyMaxTopK} (the retrieval kernel's local top-k lists)");
        Check.That((long)Heads * QueryDim <= int.MaxValue / 4, nameof(QueryDim), QueryDim, "Heads * QueryDim small enough to index");
        Check.That(Enum.IsDefined(Activation), nameof(Activation), Activation, "Gelu or Relu");
        Check.That(Enum.IsDefined(QueryNorm), nameof(QueryNorm), QueryNorm, "BatchNorm, LayerNorm or None");
        Check.That(Enum.IsDefined(Router), nameof(Router), Router, "Softmax or Sigmoid");
    }
}

/// <summary>
/// Parameter Efficient Expert Retrieval layer (He 2024): <c>y = sum_j sum_{i in I_j} g_i act(u_i . x) v_i</c> for x [T, d].
/// Parameters (interop names): those of <see cref="ProductKeys"/> (<c>query.weight</c> [h*dq, d], <c>query.bias</c> [h*dq],
/// <c>query_norm.*</c> [h*dq], <c>keys.sub1</c>, <c>keys.sub2</c> [n, dq/2]), then <c>experts.down</c>, <c>experts.up</c> [N, d].
/// </summary>
/// <remarks>
/// Initialisation (ours; the paper gives none): the retrieval's as <see cref="ProductKeys"/> describes; experts.down N(0, 1/d)
/// so that u . x has unit variance for unit-variance x; experts.up N(0, 1/d). Seeds: see <see cref="ProductKeys"/>.
/// Cost: <see cref="FeedForwardCost.Of(PeerOptions, int)"/>.
/// </remarks>
public sealed class PeerLayer : FeedForwardLayer
{
    readonly ProductKeys keys;
    readonly Tensor down, up;
    Tensor? lastIndices, lastWeights;

    /// <summary>The validated options.</summary>
    public PeerOptions Options { get; }

    /// <summary>When set, every forward adds its (indices, router weights) to this accumulator (e.g. during an evaluation pass).</summary>
    public ExpertUsage? Usage { get; set; }

    /// <summary>Creates the layer for tokens of width <paramref name="dim"/>.</summary>
    /// <exception cref="ArgumentException">Invalid options (see <see cref="PeerOptions.Validate"/>) or a non-positive width.</exception>
    public PeerLayer(Device device, int dim, PeerOptions? options = null) : this(device, dim, options, null) { }

    /// <summary>
    /// Creates the layer with its expert tables split by columns between the ranks of <paramref name="shard"/>'s group (expert
    /// parallelism; null: whole tables): this rank holds <c>experts.down</c>, <c>experts.up</c> as F32 <c>[N, d_r]</c>, the columns
    /// <paramref name="shard"/> gives it of the tables the unsplit layer draws from the same seed. Every rank must run the layer
    /// together (<see cref="Ops.PeerExpertsSharded"/>).
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options, a non-positive width, a shard of another width, or more ranks than columns.</exception>
    public PeerLayer(Device device, int dim, PeerOptions? options, ColumnShard? shard) : base(device, dim)
    {
        options ??= new PeerOptions();
        options.Validate();
        Check.That((long)options.Experts * dim <= int.MaxValue, nameof(dim), dim,
            $"Experts * dim <= {int.MaxValue} (each expert table is one tensor; Experts = {options.Experts})");
        Options = options;
        ulong seed = options.Seed;
        keys = Component(new ProductKeys(device, dim, options.Heads, options.QueryDim, options.SubKeys, options.TopK, options.QueryNorm, seed));
        if (shard is not null)
        {
            Check.That(shard.Dim == dim, nameof(shard), shard.Dim, $"a split of the layer's width {dim}");
            Check.That(shard.Group.Size <= dim, nameof(shard), $"{shard.Group.Size} ranks", $"at most d = {dim} ranks (each holds at least one column)");
        }
        Shard = shard;
        int from = shard?.MyStart ?? 0, cols = shard?.MyCount ?? dim;
        down = Parameter("experts.down", Ops.NormalColumns(device, LayerSeeds.Derive(seed, ProductKeys.FirstOwnerSeed), 0f, 1f / MathF.Sqrt(dim), options.Experts, dim, from, cols), rowSparse: true);
        up = Parameter("experts.up", Ops.NormalColumns(device, LayerSeeds.Derive(seed, ProductKeys.FirstOwnerSeed + 1), 0f, 1f / MathF.Sqrt(dim), options.Experts, dim, from, cols), rowSparse: true);
    }

    /// <summary>How the expert tables are split between ranks, or null when this layer holds them whole.</summary>
    public ColumnShard? Shard { get; }

    /// <summary>The ranks over whose tokens the query BatchNorm takes its training statistics (see <see cref="ProductKeys.BatchGroup"/>).</summary>
    public Communicator? BatchGroup { get => keys.BatchGroup; set => keys.BatchGroup = value; }

    /// <inheritdoc />
    public override FeedForwardCost Cost => FeedForwardCost.Of(this);

    /// <summary>Expert ids I32 [T, h, k] of the last forward, each head's in descending score order (owned by the layer).</summary>
    public Tensor? LastIndices => lastIndices;
    /// <summary>Router weights F32 [T, h, k] of the last forward (owned by the layer).</summary>
    public Tensor? LastWeights => lastWeights;

    /// <summary>The normalised query <c>query_norm(W x + b)</c>, F32 [T, h*dq]. Differentiable.</summary>
    /// <exception cref="ArgumentException">As <see cref="ProductKeys.Query"/>.</exception>
    public Tensor Query(Tensor x) => keys.Query(x);

    /// <summary>
    /// <c>y = sum_j sum_{i in top-k of head j} g_i act(down[i] . x) up[i]</c>; x F32 [T, d] -> y F32 [T, d]. Differentiable
    /// (row-sparse gradients for <c>keys.*</c> and <c>experts.*</c>). BatchNorm uses batch statistics (and updates the
    /// running ones) in training mode, the running statistics in evaluation mode.
    /// </summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this layer's device, or T &lt; 2 for BatchNorm in training.</exception>
    public override Tensor Forward(Tensor x)
    {
        var (indices, g) = keys.Retrieve(x, Options.Router);
        var y = Shard is null ? Ops.PeerExperts(x, indices, g, down, up, Options.Activation)
            : Ops.PeerExpertsSharded(x, indices, g, down, up, Shard, Options.Activation);
        Usage?.Add(indices, g);
        lastIndices?.Dispose();
        lastWeights?.Dispose();
        lastIndices = Scope.Unscope(indices.Detach());
        lastWeights = Scope.Unscope(g.Detach());
        return y;
    }

    /// <inheritdoc />
    public override void Dispose()
    {
        lastIndices?.Dispose();
        lastWeights?.Dispose();
        base.Dispose();
    }
}
