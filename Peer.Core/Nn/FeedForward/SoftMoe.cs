// Soft MoE (Puigcerver et al. 2023): every slot is a softmax-over-tokens mixture of ALL tokens of the batch,
// experts run on slots, and each token's output is a softmax-over-slots mixture of the slot outputs. It is
// built from existing differentiable ops (linear, transpose, softmax, matmul) plus the expert bank.
// It mixes information across positions (and across the sequences of a batch): in a causal language model a
// token's output depends on later tokens, so it refuses to be built for a causal model unless asked explicitly.
namespace Peer.Nn;

/// <summary>
/// Soft mixture of E dense FFWs with S slots each. For x F32 [T, d] (all T tokens of the forward, every sequence of the batch
/// together): logits <c>L = x Φᵀ</c> [T, E*S]; dispatch weights <c>D = softmax over tokens of L</c> (each column sums to 1);
/// slot inputs <c>X̃ = Dᵀ x</c> [E*S, d]; slot outputs <c>Ỹ[e, s] = FFW_e(X̃[e, s])</c>; combine weights
/// <c>Cw = softmax over slots of L</c> (each row sums to 1); <c>y = Cw Ỹ</c>. Parameters (interop names): <c>router.weight</c>
/// (Φ) [E*S, d], <c>experts.fc1.weight</c> [E, hidden, d], <c>experts.fc1.bias</c> [E, hidden], <c>experts.fc2.weight</c>
/// [E, d, hidden], <c>experts.fc2.bias</c> [E, d].
/// </summary>
/// <remarks>
/// NOT causal: every output row depends on every input row of the forward (later positions, other sequences). Constructing it
/// with <c>causal: true</c> throws unless <c>allowNonCausal: true</c> is passed too. The original's L2 normalisation of x and Φ is
/// not applied. Cost for T tokens: <c>T d E S</c> (logits) + <c>E S T d</c> (slot mixing) + <c>E S 2 d hidden</c> (experts) +
/// <c>T E S d</c> (combine) multiply-adds; per token this depends on T, so <see cref="FeedForwardLayer.ForwardFlopsPerToken"/>
/// is computed for <see cref="AccountingTokens"/> tokens per forward (see <see cref="ForwardMacs"/> for any T). Every parameter
/// is active for every token.
/// </remarks>
public sealed class SoftMoe : FeedForwardLayer
{
    readonly Tensor phi;
    readonly ExpertBank experts;

    /// <summary>Number of experts E.</summary>
    public int Experts { get; }
    /// <summary>Slots per expert S.</summary>
    public int SlotsPerExpert { get; }
    /// <summary>Hidden width of each expert.</summary>
    public int Hidden { get; }
    /// <summary>Tokens per forward that the per-token cost assumes.</summary>
    public int AccountingTokens { get; }

    /// <summary>Creates the layer; Φ is uniform in ±1/sqrt(d), the experts as <see cref="ExpertBank"/>.</summary>
    /// <param name="device">Device.</param>
    /// <param name="dim">Model width d.</param>
    /// <param name="hidden">Hidden width of each expert.</param>
    /// <param name="experts">E.</param>
    /// <param name="slotsPerExpert">S.</param>
    /// <param name="causal">Whether the model this layer goes into is causal (a language model).</param>
    /// <param name="allowNonCausal">Must be true to build the layer for a causal model, acknowledging that it mixes positions.</param>
    /// <param name="accountingTokens">Tokens per forward for <see cref="FeedForwardLayer.ForwardFlopsPerToken"/>; 0 means E*S.</param>
    /// <param name="activation">Expert activation.</param>
    /// <param name="seed">Initialisation seed.</param>
    /// <exception cref="ArgumentException">causal without allowNonCausal; a non-positive size; a negative accountingTokens.</exception>
    public SoftMoe(Device device, int dim, int hidden, int experts, int slotsPerExpert, bool causal, bool allowNonCausal = false,
        int accountingTokens = 0, PeerActivation activation = PeerActivation.Gelu, ulong seed = 0) : base(device, dim)
    {
        Check.That(!causal || allowNonCausal, nameof(causal), causal,
            "a non-causal model: Soft MoE mixes all tokens of a forward into every slot, so a causal model's outputs would see " +
            "later positions; pass allowNonCausal: true to build it anyway");
        Check.Positive(experts, nameof(experts));
        Check.Positive(slotsPerExpert, nameof(slotsPerExpert));
        Check.That(accountingTokens >= 0, nameof(accountingTokens), accountingTokens, "0 (meaning E*S) or a positive token count");
        Check.That(Enum.IsDefined(activation), nameof(activation), activation, "Gelu or Relu");
        Experts = experts;
        SlotsPerExpert = slotsPerExpert;
        Hidden = hidden;
        AccountingTokens = accountingTokens > 0 ? accountingTokens : experts * slotsPerExpert;
        float bound = 1f / MathF.Sqrt(dim);
        phi = Parameter("router.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 1), -bound, bound, experts * slotsPerExpert, dim));
        this.experts = Child("experts", new ExpertBank(device, experts, dim, hidden, activation, LayerSeeds.Derive(seed, 2)));
    }

    /// <summary>Exact forward multiply-adds for T tokens: <c>3 T E S d + E S 2 d hidden</c>.</summary>
    public long ForwardMacs(int tokens)
    {
        long es = (long)Experts * SlotsPerExpert;
        return 3 * tokens * es * Dim + es * experts.MacsPerRow;
    }

    /// <inheritdoc />
    public override FeedForwardCost Cost
    {
        get
        {
            long es = (long)Experts * SlotsPerExpert, total = es * Dim + Experts * experts.ParametersPerExpert;
            return new FeedForwardCost((long)Math.Round((double)ForwardMacs(AccountingTokens) / AccountingTokens), total, total);
        }
    }

    /// <summary>Soft MoE (see the type); x F32 [T, d] with T &gt;= 1 -> F32 [T, d]. Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device with T &gt;= 1.</exception>
    public override Tensor Forward(Tensor x)
    {
        CheckInput(x, minTokens: 1);
        var logits = Ops.Linear(x, phi);                              // [T, E*S]
        var dispatch = Ops.Softmax(Ops.Transpose(logits));            // [E*S, T], softmax over tokens
        var slots = Ops.MatMul(dispatch, x);                          // [E*S, d]
        var outs = experts.Forward(slots.Reshape(Experts, SlotsPerExpert, Dim)).Reshape(Experts * SlotsPerExpert, Dim);
        var combine = Ops.Softmax(logits);                            // [T, E*S], softmax over slots
        return Ops.MatMul(combine, outs);
    }
}
