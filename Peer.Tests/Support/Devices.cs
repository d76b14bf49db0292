// One device per backend for the whole suite (one ILGPU context each, opened lazily, closed at the
// end). Fixtures that should run on every backend take a backend name from Devices.Backends.
namespace Peer.Tests;

[SetUpFixture]
public sealed class Devices
{
    static readonly Dictionary<string, Device> open = new();
    static readonly object gate = new();

    /// <summary>Backends the suite runs on: always "cpu"; "opencl" too when an OpenCL device is present.</summary>
    public static IEnumerable<string> Backends()
    {
        yield return "cpu";
        if (OpenClAvailable) yield return "opencl";
    }

    static bool? openClAvailable;
    static bool OpenClAvailable => openClAvailable ??= OpenClBackend.Describe().Available && Environment.GetEnvironmentVariable("PEER_TEST_OPENCL") != "0";

    /// <summary>The shared device of a backend.</summary>
    public static Device Get(string backend)
    {
        lock (gate)
        {
            if (!open.TryGetValue(backend, out var d))
                open[backend] = d = Device.Open(backend);
            return d;
        }
    }

    /// <summary>The shared CPU accelerator device.</summary>
    public static Device Cpu => Get("cpu");

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
