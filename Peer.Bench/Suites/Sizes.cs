namespace Peer.Bench;

/// <summary>Per-mode choice of a size or count: the full run, --quick (the whole run under two minutes on 2 cores), and the test's smoke run.</summary>
internal static class Sizes
{
    public static T Pick<T>(BenchOptions o, T full, T quick, T smoke) => o.Smoke ? smoke : o.Quick ? quick : full;

    /// <summary>Timed repeats after warm-up: --repeats when given, else the mode's default.</summary>
    public static int Repeats(BenchOptions o) => Repeats(o, 7, 3, 2);

    /// <summary>Timed repeats: --repeats when given, else <paramref name="full"/>, <paramref name="quick"/> or <paramref name="smoke"/> by mode.</summary>
    public static int Repeats(BenchOptions o, int full, int quick, int smoke) => o.Repeats > 0 ? o.Repeats : Pick(o, full, quick, smoke);

    public static int Warmup(BenchOptions o) => Pick(o, 2, 1, 1);
}
