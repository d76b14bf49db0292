// OpenBLAS's cblas_sgemm through P/Invoke: the machine's matmul ceiling in the kernels suite, written
// independently of Peer (hand-tuned assembly kernels per CPU family, its own threading). Loaded at run time
// with NativeLibrary, so a machine without it (Debian: `apt-get install libopenblas0-pthread`) reports it
// absent, with the reason, instead of failing. Never used by the framework.
using System.Runtime.InteropServices;

namespace Peer.Bench;

internal static unsafe class OpenBlas
{
    // Debian's pthread build first (the variant named in the README), then whichever build the loader finds.
    static readonly string[] Candidates =
    [
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "libopenblas.dll",
    ];

    const int RowMajor = 101, NoTrans = 111; // CBLAS_ORDER and CBLAS_TRANSPOSE values (cblas.h)

    sealed class Api
    {
        public required string Path;
        public required delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> Sgemm;
        public required string Config;
        public required int Threads;
    }

    static readonly Lazy<(Api? Api, string? Absent)> loaded = new(Load);

    /// <summary>Whether the library could be loaded and has cblas_sgemm.</summary>
    public static bool Present => loaded.Value.Api is not null;

    /// <summary>Why it is absent (null when present).</summary>
    public static string? AbsentReason => loaded.Value.Absent;

    /// <summary>The loaded file, OpenBLAS's build configuration and its thread count, e.g. for a report.</summary>
    public static string Describe() => loaded.Value.Api is { } a ? $"{a.Config}, {a.Threads} threads ({a.Path})" : $"absent: {AbsentReason}";

    static (Api?, string?) Load()
    {
        foreach (var name in Candidates)
        {
            if (!NativeLibrary.TryLoad(name, out var handle)) continue;
            if (!NativeLibrary.TryGetExport(handle, "cblas_sgemm", out var sgemm))
                return (null, $"{name} has no cblas_sgemm");
            string config = NativeLibrary.TryGetExport(handle, "openblas_get_config", out var cfg)
                ? Marshal.PtrToStringUTF8(((delegate* unmanaged<nint>)cfg)()) ?? "OpenBLAS" : "OpenBLAS";
            int threads = NativeLibrary.TryGetExport(handle, "openblas_get_num_threads", out var nt) ? ((delegate* unmanaged<int>)nt)() : 0;
            return (new Api
            {
                Path = name,
                Sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm,
                Config = config.Trim(),
                Threads = threads,
            }, null);
        }
        return (null, $"libopenblas not found (tried {string.Join(", ", Candidates)}); on Debian: apt-get install libopenblas0-pthread");
    }

    /// <summary>C = A B, row-major, A [m, k], B [k, n], C [m, n] (overwritten).</summary>
    /// <exception cref="InvalidOperationException">The library is absent.</exception>
    public static void Sgemm(float[] a, float[] b, float[] c, int m, int n, int k)
    {
        var api = loaded.Value.Api ?? throw new InvalidOperationException($"OpenBLAS is absent: {AbsentReason}");
        if (a.Length < (long)m * k || b.Length < (long)k * n || c.Length < (long)m * n)
            throw new ArgumentException($"sgemm {m}x{n}x{k}: arrays of {a.Length}, {b.Length}, {c.Length} floats are too short.");
        fixed (float* pa = a, pb = b, pc = c)
            api.Sgemm(RowMajor, NoTrans, NoTrans, m, n, k, 1f, pa, k, pb, n, 0f, pc, n);
    }
}
