// One device per backend for the whole suite (one ILGPU context each, opened lazily, closed at the
// end). Fixtures that should run on every backend take a backend name from Devices.Backends.
namespace Peer.Tests;

[SetUpFixture]
public sealed class Devices
{
    static readonly Dictionary<string, Device> open = new();
    static readonly object gate = new();

    /// <summary>
    /// Backends the suite runs on: always "cpu"; "opencl" too when an OpenCL device Peer can open is present, and "cuda" when
    /// a CUDA device is. PEER_TEST_OPENCL=0 (PEER_TEST_CUDA=0) leaves that backend out; =1 requires it (CI sets
    /// PEER_TEST_OPENCL=1, Peer.Bench/gpu-check.sh PEER_TEST_CUDA=1), so a missing device fails its fixtures with the reason
    /// instead of silently running the suite on fewer backends.
    /// </summary>
    public static IEnumerable<string> Backends()
    {
        yield return "cpu";
        if (OpenClWanted) yield return "opencl";
        if (CudaWanted) yield return "cuda";
    }

    static string? OpenClSetting => Environment.GetEnvironmentVariable("PEER_TEST_OPENCL");
    static bool OpenClWanted => OpenClSetting == "1" || (OpenClSetting != "0" && OpenClBackend.Describe().Available);

    static string? CudaSetting => Environment.GetEnvironmentVariable("PEER_TEST_CUDA");
    // Probing CUDA creates a context: once per run.
    static readonly Lazy<DeviceInfo> cuda = new(() => Device.List().Single(d => d.Backend == Backend.Cuda));
    static bool CudaWanted => CudaSetting == "1" || (CudaSetting != "0" && cuda.Value.Available);

    /// <summary>Ignores the calling test when no CUDA device is present, unless PEER_TEST_CUDA=1 demands one (then it fails).</summary>
    public static void RequireCuda()
    {
        if (cuda.Value.Available && CudaSetting != "0") return;
        string why = cuda.Value.Available ? "PEER_TEST_CUDA=0" : $"no CUDA device here: {cuda.Value.Reason}";
        if (CudaSetting == "1") Assert.Fail($"PEER_TEST_CUDA=1 but {why}");
        Assert.Ignore(why);
    }

    /// <summary>Ignores the calling test when no OpenCL device is present, unless PEER_TEST_OPENCL=1 demands one (then it fails).</summary>
    public static void RequireOpenCl()
    {
        var info = OpenClBackend.Describe();
        if (info.Available && OpenClSetting != "0") return;
        string why = info.Available ? "PEER_TEST_OPENCL=0" : $"no OpenCL device here: {info.Reason}";
        if (OpenClSetting == "1") Assert.Fail($"PEER_TEST_OPENCL=1 but {why}");
        Assert.Ignore(why);
    }

    /// <summary>The shared device of a backend.</summary>
    public static Device Get(string backend)
    {
        lock (gate)
        {
            if (!open.TryGetValue(backend, out var d))
            {
                if (backend == "opencl") RequireOpenCl();
                if (backend == "cuda") RequireCuda();
                open[backend] = d = Device.Open(backend);
            }
            return d;
        }
    }

    /// <summary>The shared CPU accelerator device (its launchers load the CPU bodies where the CPU allows them).</summary>
    public static Device Cpu => Get("cpu");

    /// <summary>A second CPU accelerator device whose launchers load every op's portable kernel (the definition), to hold
    /// the CPU bodies of <see cref="Cpu"/> to.</summary>
    public static Device CpuPortable => GetCpu("cpu portable", new DeviceOptions { PortableKernels = true });

    /// <summary>A CPU accelerator device whose CPU bodies use at most 256-bit vectors, so that the 256-bit paths are tested
    /// on an AVX-512 machine too (on others it loads what <see cref="Cpu"/> loads).</summary>
    public static Device CpuNarrow => GetCpu("cpu narrow", new DeviceOptions { MaxCpuVectorBits = 256 });

    static Device GetCpu(string key, DeviceOptions options)
    {
        lock (gate)
        {
            if (!open.TryGetValue(key, out var d)) open[key] = d = Device.Open("cpu", options);
            return d;
        }
    }

    [OneTimeTearDown]
    public void CloseAll()
    {
        lock (gate)
        {
            foreach (var d in open.Values) d.Dispose();
            open.Clear();
        }
    }
}
