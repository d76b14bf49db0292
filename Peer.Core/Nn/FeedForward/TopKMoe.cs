// Token-choice top-k mixture of experts (Switch / GShard style): each token picks its k best experts, experts
// accept tokens in token order up to their capacity and drop the rest, and a load-balancing auxiliary loss
// (Switch: E * sum_e f_e P_e) is reported beside the output for the caller to weight and add.
namespace Peer.Nn;

/// <summary>
/// Top-k token-choice mixture of E dense FFWs. For x F32 [T, d]: <c>P = softmax(x Wrᵀ)</c> [T, E]; token t chooses the k experts
/// of largest <c>P[t, e]</c> (ties toward the smaller expert index); expert e accepts the tokens that chose it in ascending
/// token order up to <c>C = ceil(capacityFactor * k * T / E)</c> (clamped to [1, T]) and drops the others (a dropped token
/// gets nothing from e: its output is the sum over its accepted experts, or 0). <c>y[t] = sum over accepted e of
/// gate[t, e] * FFW_e(x[t])</c> with <c>gate = P</c>, or with <c>renormalize</c> <c>gate[t, e] = P[t, e] / sum over t's k chosen
/// experts of P</c> (renormalised over the choices, before any drop). Parameters as <see cref="ExpertChoiceMoe"/>:
/// <c>router.weight</c> [E, d], <c>experts.fc1.weight</c>, <c>experts.fc1.bias</c>, <c>experts.fc2.weight</c>, <c>experts.fc2.bias</c>.
/// </summary>
/// <remarks>
/// <see cref="AuxiliaryLoss"/> = <c>E * sum_e f_e P̄_e</c> with <c>f_e</c> the fraction of the T*k choices that went to e (before
/// the capacity limit, not differentiated) and <c>P̄_e = mean over tokens of P[t, e]</c> (differentiated). For k = 1 it is
/// Switch Transformer's loss; it equals 1 under perfectly uniform routing. Cost per token: router <c>d E</c> +
/// <c>capacityFactor * k * (2 d hidden + d)</c> multiply-adds (experts on their E*C slots, empty slots included, and the combine,
/// counted for every slot: an upper bound when slots stay empty);
/// exact when <c>capacityFactor * k * T / E</c> is an integer (see <see cref="ForwardMacs"/>). Active parameters per token: the
/// router plus k experts.
/// </remarks>
public sealed class TopKMoe : FeedForwardLayer
{
    readonly Tensor router;
    readonly ExpertBank experts;
    Tensor? aux;

    /// <summary>Number of experts E.</summary>
    public int Experts { get; }
    /// <summary>Hidden width of each expert.</summary>
    public int Hidden { get; }
    /// <summary>Experts per token k.</summary>
    public int TopK { get; }
    /// <summary>Slots per expert = capacityFactor * k * T / E, rounded up.</summary>
    public double CapacityFactor { get; }
    /// <summary>Whether gates are renormalised over each token's k choices.</summary>
    public bool Renormalize { get; }

    /// <summary>Creates the layer. The router weight is uniform in ±1/sqrt(d), the experts as <see cref="ExpertBank"/>.</summary>
    /// <exception cref="ArgumentException">A non-positive size or capacity factor, k outside [1, min(E, <see cref="Ops.MoeMaxTopK"/>)], or an unknown activation.</exception>
    public TopKMoe(Device device, int dim, int hidden, int experts, int k, double capacityFactor = 1.0, bool renormalize = false,
        PeerActivation activation = PeerActivation.Gelu, ulong seed = 0) : base(device, dim)
    {
        Check.Positive(experts, nameof(experts));
        Check.That(k >= 1 && k <= experts && k <= Ops.MoeMaxTopK, nameof(k), k, $"1 <= k <= min(experts = {experts}, {Ops.MoeMaxTopK})");
        Check.That(capacityFactor > 0 && double.IsFinite(capacityFactor), nameof(capacityFactor), capacityFactor, "a positive, finite capacity factor");
        Check.That(Enum.IsDefined(activation), nameof(activation), activation, "Gelu or Relu");
        Experts = experts;
        Hidden = hidden;
        TopK = k;
        CapacityFactor = capacityFactor;
        Renormalize = renormalize;
        float bound = 1f / MathF.Sqrt(dim);
        router = Parameter("router.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 1), -bound, bound, experts, dim));
        this.experts = Child("experts", new ExpertBank(device, experts, dim, hidden, activation, LayerSeeds.Derive(seed, 2)));
    }

    /// <summary>Slots per expert for a batch of <paramref name="tokens"/> tokens.</summary>
    public int CapacityFor(int tokens) => FeedForwardCost.TopKCapacity(CapacityFactor, TopK, tokens, Experts);

    /// <summary>Exact forward multiply-adds for T tokens: <c>T d E + E C (2 d hidden + d)</c>.</summary>
    public long ForwardMacs(int tokens) => (long)tokens * Dim * Experts + (long)Experts * CapacityFor(tokens) * (experts.MacsPerRow + Dim);

    /// <inheritdoc />
    public override FeedForwardCost Cost
    {
        get
        {
            long routerParams = (long)Dim * Experts;
            return new FeedForwardCost(
                routerParams + (long)Math.Round(CapacityFactor * TopK * (experts.MacsPerRow + Dim)),
                routerParams + Experts * experts.ParametersPerExpert,
                routerParams + TopK * experts.ParametersPerExpert);
        }
    }

    /// <summary>The load-balancing loss of the last forward (see the remarks), F32 [1], differentiable; null before any forward.</summary>
    public override Tensor? AuxiliaryLoss => aux is { IsDisposed: false } ? aux : null;

    /// <summary>The router probabilities <c>softmax(x Wrᵀ)</c>, F32 [T, E]. Differentiable.</summary>
    public Tensor RouterProbabilities(Tensor x)
    {
        CheckInput(x);
        return Ops.Softmax(Ops.Linear(x, router));
    }

    /// <summary>Top-k mixture (see the type); x F32 [T, d] with T &gt;= 1 -> F32 [T, d]. Also sets <see cref="AuxiliaryLoss"/>. Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device with T &gt;= 1.</exception>
    public override Tensor Forward(Tensor x)
    {
        CheckInput(x, minTokens: 1);
        int t = x.Shape[0];
        var probs = RouterProbabilities(x);
        var route = Ops.TopKRoute(probs, TopK, CapacityFor(t));
        var gates = probs;
        if (Renormalize)
        {
            var kept = Ops.Mul(probs, route.Chosen!);
            gates = Ops.Div(kept, Ops.SumLastDim(kept, keepDim: true));
        }
        var y = Ops.MoeCombine(experts.Forward(Ops.MoeDispatch(x, route)), gates, route);
        // E * sum_e f_e * mean_t P[t, e] = (E / T) * sum_{t,e} P[t, e] f_e
        aux = Ops.Scale(Ops.Sum(Ops.Mul(probs, route.ChoiceFraction!)), (float)Experts / t);
        return y;
    }
}
