// Opening OpenCL devices. What it takes to make ILGPU accept PoCL (library name, device filter) lives
// in OpenClAdapter; this file turns the adapter's findings into what Device.Open and Device.List need.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime.OpenCL;

namespace Peer;

/// <summary>Finds and opens OpenCL devices (GPUs, or PoCL on the CPU).</summary>
public static class OpenClBackend
{
    static readonly Lazy<OpenClProbe> probe = new(SafeProbe);

    // Devices do not come and go within a process; probing creates an ILGPU context (0.1-0.2 s), so it is done once.
    static OpenClProbe SafeProbe()
    {
        try
        {
            return OpenClAdapter.Probe();
        }
        catch (Exception e)
        {
            return new OpenClProbe([], $"probing OpenCL failed: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Index (as <see cref="DeviceOptions.Index"/> counts) of the first OpenCL GPU Peer can open, or null.</summary>
    internal static int? FirstGpu()
    {
        int i = 0;
        foreach (var d in probe.Value.Accepted)
        {
            if (d.IsGpu) return i;
            i++;
        }
        return null;
    }

    /// <summary>Whether <paramref name="accelerator"/> is an OpenCL device of CPU type (PoCL): many work items per hardware thread.</summary>
    internal static bool RunsOnHostCpu(ILGPU.Runtime.Accelerator accelerator) =>
        accelerator is CLAccelerator cl && cl.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_CPU);

    /// <summary>
    /// What <see cref="Device.List"/> shows for OpenCL: the first device Peer can open (name and platform), or why
    /// there is none: the OpenCL library is missing, it reports no platform, or each device found and why it was refused.
    /// </summary>
    public static DeviceInfo Describe()
    {
        var p = probe.Value;
        var first = p.Accepted.FirstOrDefault();
        return first is not null
            ? new DeviceInfo(Backend.OpenCL, $"{first.Name} ({first.Platform})", true, null)
            : new DeviceInfo(Backend.OpenCL, null, false, OpenClAdapter.Summary(p));
    }

    /// <summary>Opens the OpenCL device at <see cref="DeviceOptions.Index"/> among those Peer accepts.</summary>
    /// <exception cref="ArgumentException">No such device; the message says what was found and why each device was refused.</exception>
    public static Device Open(DeviceOptions options)
    {
        // O2 is required, not only faster: at O1 ILGPU leaves __generic pointers, which a device without generic address
        // space (PoCL) rejects. Hazard of O2 in ILGPU 1.5.3: it moves a load below a store to the same element
        // (`int c = x[j]; x[j] = run; run += c;` reads the stored value), so kernels must not load-then-store one element.
        var (context, device) = OpenClAdapter.Select(options.Index, static b => b.EnableAlgorithms().Optimize(OptimizationLevel.O2).Math(MathMode.Default));
        try
        {
            return Device.FromOpenCl(context, device.CreateCLAccelerator(context), options);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }
}
