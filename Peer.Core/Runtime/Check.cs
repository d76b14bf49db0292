// Host-side argument validation shared by every op and module. Kernels never throw, so every
// shape, range and type rule is checked here, before a launch, with a message that names the
// argument, the value and what was expected.
namespace Peer;

/// <summary>Argument checks that throw <see cref="ArgumentException"/> naming the argument, the value and the rule.</summary>
public static class Check
{
    /// <summary>Throws unless <paramref name="condition"/> holds.</summary>
    /// <exception cref="ArgumentException">The condition is false.</exception>
    public static void That(bool condition, string argument, object? value, string expected)
    {
        if (!condition)
            throw new ArgumentException($"{argument} = {Format(value)}: expected {expected}.", argument);
    }

    /// <summary>Throws unless <paramref name="value"/> is in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static void InRange(long value, long min, long max, string argument)
    {
        if (value < min || value > max)
            throw new ArgumentOutOfRangeException(argument, value, $"{argument} = {value}: expected a value in [{min}, {max}].");
    }

    /// <summary>Throws unless <paramref name="value"/> is strictly positive.</summary>
    public static void Positive(long value, string argument)
    {
        if (value <= 0)
            throw new ArgumentOutOfRangeException(argument, value, $"{argument} = {value}: expected a positive value.");
    }

    /// <summary>Throws unless the tensor has exactly the expected shape.</summary>
    public static void Shape(Tensor t, string argument, params int[] expected)
    {
        if (!t.Shape.AsSpan().SequenceEqual(expected))
            throw new ArgumentException($"{argument} has shape {Tensor.FormatShape(t.Shape)}: expected {Tensor.FormatShape(expected)}.", argument);
    }

    /// <summary>Throws unless the tensor has <paramref name="rank"/> dimensions.</summary>
    public static void Rank(Tensor t, int rank, string argument)
    {
        if (t.Rank != rank)
            throw new ArgumentException($"{argument} has shape {Tensor.FormatShape(t.Shape)}: expected a rank-{rank} tensor.", argument);
    }

    /// <summary>Throws unless the tensor holds the expected element type.</summary>
    public static void DType(Tensor t, DType expected, string argument)
    {
        if (t.DType != expected)
            throw new ArgumentException($"{argument} has dtype {t.DType}: expected {expected}.", argument);
    }

    /// <summary>Throws unless both tensors live on the same device.</summary>
    public static void SameDevice(Tensor a, Tensor b, string argument)
    {
        if (!ReferenceEquals(a.Device, b.Device))
            throw new ArgumentException($"{argument} lives on device '{b.Device.Name}': expected the same device as the other operand ('{a.Device.Name}').", argument);
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> if the tensor was disposed.</summary>
    public static void Alive(Tensor t, string argument)
    {
        if (t.IsDisposed)
            throw new ObjectDisposedException(argument, $"{argument} was disposed (it belonged to a scope that has ended, or Dispose was called).");
    }

    static string Format(object? value) => value switch
    {
        null => "null",
        int[] s => Tensor.FormatShape(s),
        string s => $"'{s}'",
        _ => value.ToString() ?? "?",
    };
}
