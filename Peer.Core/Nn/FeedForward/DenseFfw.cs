// The dense feed-forward baseline, y = W2 act(W1 x + b1) + b2, and the bank of E such FFWs that the coarse
// mixtures of experts run on their gathered token groups with one batched matmul per projection.
namespace Peer.Nn;

/// <summary>
/// Dense feed-forward layer <c>y = fc2(act(fc1(x)))</c>, x F32 [T, d] -> y F32 [T, d]. Parameters (interop names):
/// <c>fc1.weight</c> [hidden, d], <c>fc1.bias</c> [hidden], <c>fc2.weight</c> [d, hidden], <c>fc2.bias</c> [d], initialised as
/// PyTorch's Linear. Cost: <c>2 d hidden</c> multiply-adds per token; every parameter is active.
/// </summary>
public sealed class DenseFfw : FeedForwardLayer
{
    readonly Linear fc1, fc2;

    /// <summary>Hidden width.</summary>
    public int Hidden { get; }
    /// <summary>Activation between the projections.</summary>
    public PeerActivation Activation { get; }

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentOutOfRangeException">dim or hidden is not positive.</exception>
    public DenseFfw(Device device, int dim, int hidden, PeerActivation activation = PeerActivation.Gelu, ulong seed = 0) : base(device, dim)
    {
        Check.Positive(hidden, nameof(hidden));
        Check.That(Enum.IsDefined(activation), nameof(activation), activation, "Gelu or Relu");
        Hidden = hidden;
        Activation = activation;
        fc1 = Child("fc1", new Linear(device, dim, hidden, true, LayerSeeds.Derive(seed, 1)));
        fc2 = Child("fc2", new Linear(device, hidden, dim, true, LayerSeeds.Derive(seed, 2)));
    }

    /// <inheritdoc />
    public override FeedForwardCost Cost => FeedForwardCost.Dense(Dim, Hidden);

    /// <summary><c>fc2(act(fc1(x)))</c>; x F32 [T, d] -> F32 [T, d].</summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] on this device.</exception>
    public override Tensor Forward(Tensor x)
    {
        CheckInput(x);
        // fc1's bias and the activation run fused (Ops.LinearGelu, Ops.LinearRelu): the same values as fc1 then the activation.
        var h = Activation == PeerActivation.Relu ? Ops.LinearRelu(x, fc1.Weight, fc1.Bias!) : Ops.LinearGelu(x, fc1.Weight, fc1.Bias!);
        return fc2.Forward(h);
    }
}

/// <summary>
/// E dense FFWs applied to token groups: <c>y[e] = act(x[e] W1[e]ᵀ + b1[e]) W2[e]ᵀ + b2[e]</c> for x F32 [E, C, d]. Parameters:
/// <c>fc1.weight</c> [E, hidden, d], <c>fc1.bias</c> [E, hidden], <c>fc2.weight</c> [E, d, hidden], <c>fc2.bias</c> [E, d], each
/// expert initialised as PyTorch's Linear (uniform in ±1/sqrt(fan in)).
/// </summary>
public sealed class ExpertBank : Module
{
    readonly Tensor w1, b1, w2, b2;

    /// <summary>Number of experts E.</summary>
    public int Experts { get; }
    /// <summary>Model width d.</summary>
    public int Dim { get; }
    /// <summary>Hidden width of each expert.</summary>
    public int Hidden { get; }
    /// <summary>Activation of each expert.</summary>
    public PeerActivation Activation { get; }

    /// <summary>Creates E experts.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public ExpertBank(Device device, int experts, int dim, int hidden, PeerActivation activation, ulong seed) : base(device)
    {
        Check.Positive(experts, nameof(experts));
        Check.Positive(dim, nameof(dim));
        Check.Positive(hidden, nameof(hidden));
        Check.That((long)experts * dim * hidden <= int.MaxValue, nameof(hidden), hidden, $"experts * dim * hidden <= {int.MaxValue} (one tensor per projection)");
        Experts = experts;
        Dim = dim;
        Hidden = hidden;
        Activation = activation;
        float b1Bound = 1f / MathF.Sqrt(dim), b2Bound = 1f / MathF.Sqrt(hidden);
        w1 = Parameter("fc1.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 1), -b1Bound, b1Bound, experts, hidden, dim));
        b1 = Parameter("fc1.bias", Ops.Uniform(device, LayerSeeds.Derive(seed, 2), -b1Bound, b1Bound, experts, hidden));
        w2 = Parameter("fc2.weight", Ops.Uniform(device, LayerSeeds.Derive(seed, 3), -b2Bound, b2Bound, experts, dim, hidden));
        b2 = Parameter("fc2.bias", Ops.Uniform(device, LayerSeeds.Derive(seed, 4), -b2Bound, b2Bound, experts, dim));
    }

    /// <summary>x F32 [E, C, d] -> F32 [E, C, d], expert e applied to its C rows (two batched matmuls). Differentiable.</summary>
    /// <exception cref="ArgumentException">x is not F32 [E, C, d].</exception>
    public Tensor Forward(Tensor x)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.That(x.Rank == 3 && x.Shape[0] == Experts && x.Shape[2] == Dim, nameof(x), x.Shape, $"[E = {Experts}, C, d = {Dim}]");
        var h = Ops.AddExpertBias(Ops.MatMul(x, w1, false, true), b1);
        h = FeedForwardLayer.Activate(h, Activation);
        return Ops.AddExpertBias(Ops.MatMul(h, w2, false, true), b2);
    }

    /// <summary>Multiply-adds of one expert on one row: <c>2 d hidden</c>.</summary>
    public long MacsPerRow => 2L * Dim * Hidden;

    /// <summary>Parameters of one expert: <c>2 d hidden + hidden + d</c>.</summary>
    public long ParametersPerExpert => FeedForwardCost.DenseParameters(Dim, Hidden);
}
