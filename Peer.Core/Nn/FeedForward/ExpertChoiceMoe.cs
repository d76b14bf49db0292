// The paper's MoE baseline: expert-choice routing (Zhou et al. 2022). The router's softmax over experts scores
// every (token, expert) pair; each expert then takes its top-capacity tokens, so experts are balanced by
// construction and a token may be processed by any number of experts (zero included).
namespace Peer.Nn;

/// <summary>
/// Expert-choice mixture of E dense FFWs. For x F32 [T, d]: <c>P = softmax(x Wrᵀ)</c> over experts [T, E]; expert e takes the
/// <c>C = ceil(capacityFactor * T / E)</c> tokens (clamped to [1, T]) of largest <c>P[t, e]</c>, ties toward the smaller token
/// index; <c>y[t] = sum over experts e that took t of P[t, e] * FFW_e(x[t])</c> (a token no expert took gets 0).
/// Parameters (interop names): <c>router.weight</c> [E, d], <c>experts.fc1.weight</c> [E, hidden, d], <c>experts.fc1.bias</c>
/// [E, hidden], <c>experts.fc2.weight</c> [E, d, hidden], <c>experts.fc2.bias</c> [E, d].
/// </summary>
/// <remarks>
/// Cost per token: router <c>d E</c> + <c>capacityFactor * (2 d hidden + d)</c> multiply-adds (the experts on their E*C slots,
/// and the gate-weighted combine), exact when <c>capacityFactor * T / E</c> is an integer (<see cref="ForwardMacs"/> gives the
/// exact count for T tokens). Active parameters per token: the router plus <c>capacityFactor</c> experts (the average number
/// of experts a token visits). The routing of a token depends on the other tokens of the batch: in a causal language model
/// the selection itself looks across positions (as in the paper's baseline).
/// </remarks>
public sealed class ExpertChoiceMoe : FeedForwardLayer
{
    readonly Tensor router;
    readonly ExpertBank experts;

    /// <summary>Number of experts E.</summary>
    public int Experts { get; }
    /// <summary>Hidden width of each expert.</summary>
    public int Hidden { get; }
    /// <summary>Slots per expert = capacityFactor * T / E, rounded up.</summary>
    public double CapacityFactor { get; }

    /// <summary>Creates the layer. The router weight is uniform in ±1/sqrt(d), the experts as <see cref="ExpertBank"/>.</summary>
    /// <exception cref="ArgumentException">A non-positive size or capacity factor, or an unknown activation.</exception>
    public ExpertChoiceMoe(Device device, int dim, int hidden, int experts, double capacityFactor = 1.0,
        PeerActivation activation = PeerActivation.Gelu, ulong seed = 0) : base(device, dim)
    {
        Check.Positive(experts, nameof(experts));
        Check.That(capacityFactor > 0 && double.IsFinite(capacityFactor), nameof(capacityFactor), capacityFactor, "a positive, finite capacity factor");
        Check.That(Enum.IsDefined(activation), nameof(activation), activation, "Gelu or Relu");
        Experts = experts;
        Hidden = hidden;
        CapacityFactor = capacityFactor;
        float bound = 1f / MathF.Sqrt(dim);
        router = Parameter("router.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 1), -bound, bound, experts, dim));
        this.experts = Child("experts", new ExpertBank(device, experts, dim, hidden, activation, LayerSeeds.Derive(seed, 2)));
    }

    /// <summary>Slots per expert for a batch of <paramref name="tokens"/> tokens.</summary>
    public int CapacityFor(int tokens) => FeedForwardCost.ExpertChoiceCapacity(CapacityFactor, tokens, Experts);

    /// <summary>Exact forward multiply-adds for T tokens: <c>T d E + E C (2 d hidden + d)</c>.</summary>
    public long ForwardMacs(int tokens) => (long)tokens * Dim * Experts + (long)Experts * CapacityFor(tokens) * (experts.MacsPerRow + Dim);

    /// <inheritdoc />
    public override FeedForwardCost Cost
    {
        get
        {
            long routerParams = (long)Dim * Experts;
            return new FeedForwardCost(
                routerParams + (long)Math.Round(CapacityFactor * (experts.MacsPerRow + Dim)),
                routerParams + Experts * experts.ParametersPerExpert,
                routerParams + (long)Math.Round(CapacityFactor * experts.ParametersPerExpert));
        }
    }

    /// <summary>The router probabilities <c>softmax(x Wrᵀ)</c>, F32 [T, E]. Differentiable.</summary>
    public Tensor RouterProbabilities(Tensor x)
    {
        CheckInput(x);
        return Ops.Softmax(Ops.Linear(x, router));
    }

    /// <summary>Expert-choice mixture (see the type); x F32 [T, d] with T &gt;= 1 -> F32 [T, d]. Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device with T &gt;= 1.</exception>
    public override Tensor Forward(Tensor x)
    {
        CheckInput(x, minTokens: 1);
        var probs = RouterProbabilities(x);
        var route = Ops.ExpertChoiceRoute(probs, CapacityFor(x.Shape[0]));
        var y = Ops.MoeCombine(experts.Forward(Ops.MoeDispatch(x, route)), probs, route);
        return y;
    }
}
