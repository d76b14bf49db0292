// Routing of the coarse mixtures of experts, on the device: expert-choice selection (each expert keeps its
// top-capacity tokens by router probability, found by a per-expert radix select on the probability's bits,
// which order like the values because probabilities are never negative), token-choice top-k with a capacity
// limit (slots filled in token order), and the differentiable dispatch [T, d] -> [E, C, d] and gate-weighted
// combine [E, C, d] -> [T, d]. A route is a slot table (token of each expert slot, or -1) and its inverse
// (slot of each token at each expert, or -1), so every kernel owns its outputs: no atomics, deterministic.
using ILGPU;
using ILGPU.Runtime;

namespace Peer;

/// <summary>
/// Where tokens go in a mixture of E experts of capacity C: <see cref="Slots"/> I32 [E, C] holds the token of each expert slot
/// (or -1 when the slot is empty), <see cref="Positions"/> I32 [T, E] the slot of token t at expert e (or -1 when e did not
/// take t). For token-choice routing <see cref="Chosen"/> F32 [T, E] is 1 where the token chose the expert (before the capacity
/// limit) and <see cref="ChoiceFraction"/> F32 [E] the fraction of all T*k choices that went to each expert. Not differentiable.
/// </summary>
public sealed class MoeRoute : IDisposable
{
    /// <summary>Token of each expert slot, or -1; I32 [E, C].</summary>
    public Tensor Slots { get; }
    /// <summary>Slot of token t at expert e, or -1; I32 [T, E].</summary>
    public Tensor Positions { get; }
    /// <summary>Token-choice only: 1 where token t chose expert e (whether or not it fit), else 0; F32 [T, E].</summary>
    public Tensor? Chosen { get; }
    /// <summary>Token-choice only: f_e = (choices of expert e) / (T * k), before the capacity limit; F32 [E].</summary>
    public Tensor? ChoiceFraction { get; }

    /// <summary>Number of experts E.</summary>
    public int Experts => Slots.Shape[0];
    /// <summary>Slots per expert C.</summary>
    public int Capacity => Slots.Shape[1];
    /// <summary>Number of tokens T.</summary>
    public int Tokens => Positions.Shape[0];

    internal MoeRoute(Tensor slots, Tensor positions, Tensor? chosen = null, Tensor? fraction = null)
    {
        Slots = slots;
        Positions = positions;
        Chosen = chosen;
        ChoiceFraction = fraction;
    }

    /// <summary>Disposes the route's tensors.</summary>
    public void Dispose()
    {
        Slots.Dispose();
        Positions.Dispose();
        Chosen?.Dispose();
        ChoiceFraction?.Dispose();
    }
}

public static partial class Ops
{
    /// <summary>The largest k <see cref="TopKRoute"/> accepts (its per-token lists live in fixed local arrays).</summary>
    public const int MoeMaxTopK = 16;

    /// <summary>
    /// Expert-choice routing (Zhou et al. 2022): expert e takes the <paramref name="capacity"/> tokens with the largest
    /// <c>probs[t, e]</c>, ties toward the smaller token index; its slots list them in ascending token order.
    /// </summary>
    /// <param name="probs">Router probabilities F32 [T, E], each &gt;= 0 (a softmax); the selection orders their bit patterns.</param>
    /// <param name="capacity">C, 1 &lt;= C &lt;= T.</param>
    /// <exception cref="ArgumentException">probs is not F32 [T, E] with T, E &gt;= 1, or C is outside [1, T].</exception>
    public static MoeRoute ExpertChoiceRoute(Tensor probs, int capacity)
    {
        Check.DType(probs, DType.F32, nameof(probs));
        Check.Rank(probs, 2, nameof(probs));
        int t = probs.Shape[0], e = probs.Shape[1];
        Check.That(t >= 1 && e >= 1, nameof(probs), probs.Shape, "[T, E] with T >= 1 tokens and E >= 1 experts");
        Check.That(capacity >= 1 && capacity <= t, nameof(capacity), capacity, $"a capacity in [1, T = {t}]");
        var d = probs.Device;
        var slots = Tensor.Empty(d, DType.I32, e, capacity);
        var pos = Tensor.Empty(d, DType.I32, t, e);
        var w = d.Split(e);
        d.Get(static d => new MoeRoutingKernels(d)).ExpertChoice(w.Workers, w, new RouteShape(t, e, capacity, 0), probs.View, slots.IntView, pos.IntView);
        return new MoeRoute(slots, pos);
    }

    /// <summary>
    /// Token-choice top-k routing with a capacity limit (Switch/GShard): token t chooses the k experts of largest
    /// <c>probs[t, e]</c> (ties toward the smaller expert index); expert e then fills its <paramref name="capacity"/> slots with
    /// the tokens that chose it in ascending token order, and drops the rest (a dropped token gets nothing from e; a token
    /// never occupies two slots of one expert).
    /// </summary>
    /// <param name="probs">Router probabilities F32 [T, E].</param>
    /// <param name="k">Experts per token, 1 &lt;= k &lt;= min(E, <see cref="MoeMaxTopK"/>).</param>
    /// <param name="capacity">C &gt;= 1 slots per expert.</param>
    /// <exception cref="ArgumentException">probs is not F32 [T, E] with T, E &gt;= 1, k or C out of range.</exception>
    public static MoeRoute TopKRoute(Tensor probs, int k, int capacity)
    {
        Check.DType(probs, DType.F32, nameof(probs));
        Check.Rank(probs, 2, nameof(probs));
        int t = probs.Shape[0], e = probs.Shape[1];
        Check.That(t >= 1 && e >= 1, nameof(probs), probs.Shape, "[T, E] with T >= 1 tokens and E >= 1 experts");
        Check.That(k >= 1 && k <= e && k <= MoeMaxTopK, nameof(k), k, $"1 <= k <= min(E = {e}, {MoeMaxTopK})");
        Check.That(capacity >= 1, nameof(capacity), capacity, "a capacity of at least 1 slot per expert");
        var d = probs.Device;
        var kernels = d.Get(static d => new MoeRoutingKernels(d));
        var shape = new RouteShape(t, e, capacity, k);
        using var choice = Tensor.Empty(d, DType.I32, t, k);
        var chosen = Tensor.Empty(d, DType.F32, t, e);
        var wt = d.Split(t);
        kernels.Choose(wt.Workers, wt, shape, probs.View, choice.IntView, chosen.View);
        var slots = Tensor.Empty(d, DType.I32, e, capacity);
        var pos = Tensor.Empty(d, DType.I32, t, e);
        var fraction = Tensor.Empty(d, DType.F32, e);
        var we = d.Split(e);
        kernels.Capacity(we.Workers, we, shape, choice.IntView, slots.IntView, pos.IntView, fraction.View);
        return new MoeRoute(slots, pos, chosen, fraction);
    }

    /// <summary>
    /// Gathers each expert's tokens: <c>y[e, c] = x[slots[e, c]]</c>, or zeros for an empty slot; x F32 [T, d] -> y F32 [E, C, d].
    /// Differentiable: <c>dx[t] = sum over experts e that took t of dy[e, positions[t, e]]</c>.
    /// </summary>
    /// <exception cref="ArgumentException">x is not F32 [T, d] with T the route's token count, or is on another device.</exception>
    public static Tensor MoeDispatch(Tensor x, MoeRoute route)
    {
        ArgumentNullException.ThrowIfNull(route);
        Check.DType(x, DType.F32, nameof(x));
        Check.SameDevice(x, route.Slots, nameof(route));
        Check.That(x.Rank == 2 && x.Shape[0] == route.Tokens, nameof(x), x.Shape, $"[T = {route.Tokens}, d] (the route's tokens)");
        var d = x.Device;
        int dm = x.Shape[1], e = route.Experts, c = route.Capacity, t = route.Tokens;
        var kernels = d.Get(static d => new MoeRoutingKernels(d));
        var y = Tensor.Empty(d, DType.F32, e, c, dm);
        var w = d.Split(e * c);
        kernels.Dispatch(w.Workers, w, dm, x.View, route.Slots.IntView, y.View);
        if (d.Tape.Needs(x))
        {
            var slots = route.Slots.Detach();
            var pos = route.Positions.Detach();
            d.Tape.Record(y, [x], dY =>
            {
                var dX = Tensor.Empty(d, DType.F32, t, dm);
                var wt = d.Split(t);
                kernels.DispatchBackward(wt.Workers, wt, new RouteShape(t, e, c, dm), dY.View, pos.IntView, dX.View);
                Tape.Accumulate(x, dX);
            }, slots, pos);
        }
        return y;
    }

    /// <summary>
    /// Gate-weighted combine: <c>y[t] = sum over experts e with p = positions[t, e] &gt;= 0 of gates[t, e] * outputs[e, p]</c>;
    /// outputs F32 [E, C, d], gates F32 [T, E] -> y F32 [T, d] (a token no expert took gets zeros). Differentiable in both:
    /// <c>doutputs[e, c] = gates[s, e] dy[s]</c> for s = slots[e, c] (zero for an empty slot), <c>dgates[t, e] = outputs[e, p] . dy[t]</c>
    /// (zero where e did not take t).
    /// </summary>
    /// <exception cref="ArgumentException">Shapes that disagree with the route, other dtypes than F32, or another device.</exception>
    public static Tensor MoeCombine(Tensor outputs, Tensor gates, MoeRoute route)
    {
        ArgumentNullException.ThrowIfNull(route);
        Check.DType(outputs, DType.F32, nameof(outputs));
        Check.DType(gates, DType.F32, nameof(gates));
        Check.SameDevice(outputs, gates, nameof(gates));
        Check.SameDevice(outputs, route.Slots, nameof(route));
        int e = route.Experts, c = route.Capacity, t = route.Tokens;
        Check.That(outputs.Rank == 3 && outputs.Shape[0] == e && outputs.Shape[1] == c, nameof(outputs), outputs.Shape, $"[E = {e}, C = {c}, d]");
        Check.Shape(gates, nameof(gates), t, e);
        var d = outputs.Device;
        int dm = outputs.Shape[2];
        var shape = new RouteShape(t, e, c, dm);
        var kernels = d.Get(static d => new MoeRoutingKernels(d));
        var y = Tensor.Empty(d, DType.F32, t, dm);
        var w = d.Split(t);
        kernels.Combine(w.Workers, w, shape, outputs.View, gates.View, route.Positions.IntView, y.View);
        if (d.Tape.Needs(outputs, gates))
        {
            var slots = route.Slots.Detach();
            var pos = route.Positions.Detach();
            d.Tape.Record(y, [outputs, gates], dY =>
            {
                if (outputs.RequiresGrad)
                {
                    var dOut = Tensor.Empty(d, DType.F32, e, c, dm);
                    var ws = d.Split(e * c);
                    kernels.CombineBackwardOutputs(ws.Workers, ws, shape, gates.View, slots.IntView, dY.View, dOut.View);
                    Tape.Accumulate(outputs, dOut);
                }
                if (gates.RequiresGrad)
                {
                    var dG = Tensor.Empty(d, DType.F32, t, e);
                    var wt = d.Split(t);
                    kernels.CombineBackwardGates(wt.Workers, wt, shape, outputs.View, pos.IntView, dY.View, dG.View);
                    Tape.Accumulate(gates, dG);
                }
            }, slots, pos);
        }
        return y;
    }

    /// <summary>
    /// Per-expert bias: <c>y[e, c, j] = x[e, c, j] + bias[e, j]</c>; x F32 [E, C, n], bias F32 [E, n]. Differentiable
    /// (<c>dbias[e, j] = sum_c dy[e, c, j]</c>, one work item per bias element).
    /// </summary>
    /// <exception cref="ArgumentException">Shapes that disagree, other dtypes than F32, or another device.</exception>
    public static Tensor AddExpertBias(Tensor x, Tensor bias)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(bias, DType.F32, nameof(bias));
        Check.SameDevice(x, bias, nameof(bias));
        Check.Rank(x, 3, nameof(x));
        int e = x.Shape[0], c = x.Shape[1], n = x.Shape[2];
        Check.Shape(bias, nameof(bias), e, n);
        var d = x.Device;
        var kernels = d.Get(static d => new MoeRoutingKernels(d));
        var y = Tensor.Empty(d, DType.F32, x.Shape);
        if (y.Length > 0)
        {
            var w = d.Split(e * c);
            kernels.Bias(w.Workers, w, c, n, x.View, bias.View, y.View);
        }
        if (d.Tape.Needs(x, bias))
        {
            d.Tape.Record(y, [x, bias], dY =>
            {
                if (x.RequiresGrad) Tape.Accumulate(x, Scale(dY, 1f));
                if (bias.RequiresGrad)
                {
                    var dB = Tensor.Zeros(d, e, n);
                    if (dB.Length > 0 && c > 0)
                    {
                        var w = d.Split(e * n);
                        kernels.BiasBackward(w.Workers, w, c, n, dY.View, dB.View);
                    }
                    Tape.Accumulate(bias, dB);
                }
            });
        }
        return y;
    }
}

/// <summary>Sizes of a route: T tokens, E experts, C slots per expert, and K (k for top-k routing, the row width d elsewhere).</summary>
internal readonly struct RouteShape(int tokens, int experts, int capacity, int k)
{
    public readonly int T = tokens, E = experts, C = capacity, K = k;
}
