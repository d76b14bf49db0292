// Opening OpenCL devices. Kept apart from Device because making ILGPU accept PoCL (library name,
// device filter) is its own piece of work with its own tests.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime.OpenCL;

namespace Peer;

/// <summary>Finds and opens OpenCL devices.</summary>
public static class OpenClBackend
{
    /// <summary>Whether an OpenCL GPU that ILGPU accepts is present.</summary>
    public static bool HasGpu()
    {
        try
        {
            using var context = Context.Create(b => b.OpenCL());
            foreach (var d in context.GetCLDevices())
                if (d.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU) return true;
            return false;
        }
        catch
        {
            return false;
        }
    }

    /// <summary>What <see cref="Device.List"/> shows for OpenCL.</summary>
    public static DeviceInfo Describe()
    {
        try
        {
            using var context = Context.Create(b => b.OpenCL());
            var devices = context.GetCLDevices();
            return devices.Count > 0
                ? new DeviceInfo(Backend.OpenCL, devices[0].Name, true, null)
                : new DeviceInfo(Backend.OpenCL, null, false, "no OpenCL device that ILGPU accepts");
        }
        catch (Exception e)
        {
            return new DeviceInfo(Backend.OpenCL, null, false, $"OpenCL unavailable: {e.Message}");
        }
    }

    /// <summary>Opens the OpenCL device at <see cref="DeviceOptions.Index"/>.</summary>
    public static Device Open(DeviceOptions options)
    {
        var context = Context.Create(b => b.OpenCL().EnableAlgorithms().Optimize(OptimizationLevel.O2).Math(MathMode.Default));
        var devices = context.GetCLDevices();
        if (devices.Count <= options.Index)
        {
            context.Dispose();
            throw new ArgumentException($"device = 'opencl' (index {options.Index}): no such OpenCL device here. Present: {Device.Describe(Device.List())}.", "name");
        }
        return Device.FromOpenCl(context, devices[options.Index].CreateAccelerator(context));
    }
}
