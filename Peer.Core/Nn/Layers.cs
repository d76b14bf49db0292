// The standard layers as modules over the ops in Peer.Core/Ops: Linear, Embedding, LayerNorm, RMSNorm,
// BatchNorm1d, Dropout and Sequential. Parameter and buffer names follow PyTorch ("weight", "bias",
// "running_mean", "running_var"; Sequential children "0", "1", ...), so state dicts line up with it.
namespace Peer.Nn;

/// <summary>Fully connected layer <c>y = x @ weightᵀ + bias</c> (see <see cref="Ops.Linear"/>).</summary>
/// <remarks>Parameters: <c>weight</c> <c>[out, in]</c> and (when <c>bias</c> is true) <c>bias</c> <c>[out]</c>, both initialised
/// uniform in <c>[-1/sqrt(in), 1/sqrt(in))</c> as PyTorch does, from <c>seed</c> (the bias from a seed derived from it).</remarks>
public sealed class Linear : Module, ILayer
{
    /// <summary>Weight <c>[out, in]</c>.</summary>
    public Tensor Weight { get; }
    /// <summary>Bias <c>[out]</c>, or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Creates the layer with PyTorch's default initialisation.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A feature count is not positive.</exception>
    public Linear(Device d, int inFeatures, int outFeatures, bool bias = true, ulong seed = 0) : base(d)
    {
        Check.Positive(inFeatures, nameof(inFeatures));
        Check.Positive(outFeatures, nameof(outFeatures));
        float bound = 1f / MathF.Sqrt(inFeatures);
        Weight = Parameter("weight", Ops.Uniform(d, seed, -bound, bound, outFeatures, inFeatures));
        if (bias) Bias = Parameter("bias", Ops.Uniform(d, LayerSeeds.Derive(seed, 1), -bound, bound, outFeatures));
    }

    /// <summary><c>x</c> <c>[.., in]</c> → <c>[.., out]</c>.</summary>
    public Tensor Forward(Tensor x) => Ops.Linear(x, Weight, Bias);
}

/// <summary>Lookup table of <c>count</c> vectors of size <c>dim</c> (see <see cref="Ops.Embedding"/>).</summary>
/// <remarks>Parameter <c>weight</c> <c>[count, dim]</c>, initialised normal(0, 1) from <c>seed</c>. With <c>sparse</c> (the default)
/// its gradient is a <see cref="RowSparseGrad"/> of the looked-up rows; pass false for a dense gradient (small tables, or a
/// table shared with an output projection).</remarks>
public sealed class Embedding : Module, ILayer
{
    /// <summary>Table <c>[count, dim]</c>.</summary>
    public Tensor Weight { get; }
    /// <summary>Whether the table's gradient is row-sparse.</summary>
    public bool Sparse { get; }

    /// <summary>Creates the table.</summary>
    /// <exception cref="ArgumentOutOfRangeException">count or dim is not positive.</exception>
    public Embedding(Device d, int count, int dim, ulong seed = 0, bool sparse = true) : base(d)
    {
        Check.Positive(count, nameof(count));
        Check.Positive(dim, nameof(dim));
        Weight = Parameter("weight", Ops.Normal(d, seed, 0f, 1f, count, dim), rowSparse: sparse);
        Sparse = sparse;
    }

    /// <summary>I32 ids <c>[..]</c> → <c>[.., dim]</c>; an id outside [0, count) gives a row of NaN.</summary>
    public Tensor Forward(Tensor x) => Ops.Embedding(x, Weight, Sparse);
}

/// <summary>Layer normalisation over the last dimension with affine parameters (see <see cref="Ops.LayerNorm"/>).</summary>
/// <remarks>Parameters <c>weight</c> (ones) and <c>bias</c> (zeros), <c>[features]</c>.</remarks>
public sealed class LayerNorm : Module, ILayer
{
    /// <summary>Scale <c>[features]</c>.</summary>
    public Tensor Weight { get; }
    /// <summary>Shift <c>[features]</c>.</summary>
    public Tensor Bias { get; }
    /// <summary>Added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentException">features is not positive or eps is not positive.</exception>
    public LayerNorm(Device d, int features, float eps = 1e-5f) : base(d)
    {
        Check.Positive(features, nameof(features));
        Check.That(eps > 0, nameof(eps), eps, "a positive epsilon");
        Weight = Parameter("weight", Tensor.Full(d, 1f, features));
        Bias = Parameter("bias", Tensor.Zeros(d, features));
        Eps = eps;
    }

    /// <summary><c>x</c> <c>[.., features]</c> → same shape.</summary>
    public Tensor Forward(Tensor x) => Ops.LayerNorm(x, Weight, Bias, Eps);
}

/// <summary>Root-mean-square normalisation over the last dimension (see <see cref="Ops.RMSNorm"/>).</summary>
/// <remarks>Parameter <c>weight</c> (ones), <c>[features]</c>.</remarks>
public sealed class RMSNorm : Module, ILayer
{
    /// <summary>Scale <c>[features]</c>.</summary>
    public Tensor Weight { get; }
    /// <summary>Added to the mean square.</summary>
    public float Eps { get; }

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentException">features is not positive or eps is not positive.</exception>
    public RMSNorm(Device d, int features, float eps = 1e-6f) : base(d)
    {
        Check.Positive(features, nameof(features));
        Check.That(eps > 0, nameof(eps), eps, "a positive epsilon");
        Weight = Parameter("weight", Tensor.Full(d, 1f, features));
        Eps = eps;
    }

    /// <summary><c>x</c> <c>[.., features]</c> → same shape.</summary>
    public Tensor Forward(Tensor x) => Ops.RMSNorm(x, Weight, Eps);
}

/// <summary>Batch normalisation of <c>[N, features]</c> per feature (see <see cref="Ops.BatchNorm1d"/>).</summary>
/// <remarks>Parameters <c>weight</c> (ones) and <c>bias</c> (zeros); buffers <c>running_mean</c> (zeros) and <c>running_var</c>
/// (ones). In training mode the batch statistics normalise and the running statistics are updated as PyTorch does (unbiased
/// variance, <c>momentum</c>); in evaluation mode the running statistics normalise and stay unchanged.</remarks>
public sealed class BatchNorm1d : Module, ILayer
{
    /// <summary>Scale <c>[features]</c>.</summary>
    public Tensor Weight { get; }
    /// <summary>Shift <c>[features]</c>.</summary>
    public Tensor Bias { get; }
    /// <summary>Running mean <c>[features]</c> (buffer).</summary>
    public Tensor RunningMean { get; }
    /// <summary>Running unbiased variance <c>[features]</c> (buffer).</summary>
    public Tensor RunningVar { get; }
    /// <summary>Weight of the newest batch in the running statistics.</summary>
    public float Momentum { get; }
    /// <summary>Added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentException">features not positive, momentum outside [0, 1], or eps not positive.</exception>
    public BatchNorm1d(Device d, int features, float momentum = 0.1f, float eps = 1e-5f) : base(d)
    {
        Check.Positive(features, nameof(features));
        Check.That(momentum >= 0 && momentum <= 1, nameof(momentum), momentum, "a momentum in [0, 1]");
        Check.That(eps > 0, nameof(eps), eps, "a positive epsilon");
        Weight = Parameter("weight", Tensor.Full(d, 1f, features));
        Bias = Parameter("bias", Tensor.Zeros(d, features));
        RunningMean = Buffer("running_mean", Tensor.Zeros(d, features));
        RunningVar = Buffer("running_var", Tensor.Full(d, 1f, features));
        Momentum = momentum;
        Eps = eps;
    }

    /// <summary><c>x</c> <c>[N, features]</c> → same shape; uses <see cref="Module.IsTraining"/>.</summary>
    public Tensor Forward(Tensor x) => Ops.BatchNorm1d(x, Weight, Bias, RunningMean, RunningVar, IsTraining, Momentum, Eps);
}

/// <summary>Seeded dropout (see <see cref="Ops.Dropout"/>): in training each call draws a fresh mask, in evaluation it is the identity.</summary>
/// <remarks>Call n (counting training calls from 0) uses a seed derived from (<c>seed</c>, n), so a run is reproducible;
/// <see cref="Step"/> is that counter, to be saved and restored with a checkpoint.</remarks>
public sealed class Dropout : Module, ILayer
{
    /// <summary>Drop probability.</summary>
    public float P { get; }
    /// <summary>Base seed.</summary>
    public ulong Seed { get; }
    /// <summary>Number of training-mode calls so far; the next call's mask depends on it.</summary>
    public long Step { get; set; }

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentException">p outside [0, 1].</exception>
    public Dropout(Device d, float p, ulong seed) : base(d)
    {
        Check.That(p >= 0f && p <= 1f, nameof(p), p, "a drop probability in [0, 1]");
        P = p;
        Seed = seed;
    }

    /// <summary>Training: dropout with this call's seed (then the step advances). Evaluation: returns <paramref name="x"/> itself.</summary>
    public Tensor Forward(Tensor x)
    {
        if (!IsTraining) return x;
        return Ops.Dropout(x, P, LayerSeeds.Derive(Seed, (ulong)Step++), training: true);
    }
}

/// <summary>Applies its layers in order; children are named "0", "1", ... as in PyTorch.</summary>
public sealed class Sequential : Module, ILayer
{
    readonly ILayer[] layers;

    /// <summary>Chains <paramref name="layers"/>, each a module implementing <see cref="ILayer"/> on device <paramref name="d"/>.</summary>
    /// <exception cref="ArgumentException">A layer is null, does not implement <see cref="ILayer"/>, or lives on another device.</exception>
    public Sequential(Device d, params Module[] layers) : base(d)
    {
        ArgumentNullException.ThrowIfNull(layers);
        this.layers = new ILayer[layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            var m = layers[i];
            Check.That(m is ILayer, $"layers[{i}]", m?.GetType().Name ?? "null", "a module implementing Peer.Nn.ILayer");
            Check.That(ReferenceEquals(m!.Device, d), $"layers[{i}]", m.GetType().Name, $"a module on device '{d.Name}'");
            this.layers[i] = (ILayer)Child(i.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
        }
    }

    /// <summary>Number of layers.</summary>
    public int Count => layers.Length;

    /// <summary>The layer at <paramref name="index"/>.</summary>
    public Module this[int index] => (Module)layers[index];

    /// <summary>Applies every layer in order.</summary>
    public Tensor Forward(Tensor x)
    {
        foreach (var layer in layers) x = layer.Forward(x);
        return x;
    }
}

/// <summary>Seeds derived from a base seed and a counter, spread by a 64-bit mix so neighbouring counters give unrelated streams.</summary>
internal static class LayerSeeds
{
    public static ulong Derive(ulong seed, ulong counter)
    {
        ulong z = seed + (counter + 1) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
