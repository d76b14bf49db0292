// The OpenCL adapter (Peer.Core/Runtime/OpenClAdapter.cs): library resolution, the version guard of its
// bypass, and, where an OpenCL device is present (PoCL in CI), that the device opens, names itself, runs
// kernels with the CPU accelerator's results, refuses a bad kernel clearly and loads a good one after it.
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.OpenCL;

namespace Peer.Tests.Runtime;

public sealed class OpenClTests
{
    static bool IcdLoaderInstalled()
    {
        if (!NativeLibrary.TryLoad("libOpenCL.so.1", out var h)) return false;
        NativeLibrary.Free(h);
        return true;
    }

    static void RequireDevice() => Devices.RequireOpenCl();

    [Test]
    public void ResolverMapsIlgpusOpenClNameToTheIcdLoader()
    {
        if (!OperatingSystem.IsLinux() || !IcdLoaderInstalled()) Assert.Ignore("needs Linux with the OpenCL ICD loader (libOpenCL.so.1)");
        var ilgpu = typeof(CLAPI).Assembly;
        Assert.That(OpenClAdapter.Resolve(ilgpu, "OpenCL"), Is.Not.EqualTo(IntPtr.Zero));
        Assert.That(OpenClAdapter.Resolve(ilgpu, "cuda"), Is.EqualTo(IntPtr.Zero), "other libraries are left to the runtime and ILGPU");
        Assert.That(OpenClAdapter.Resolve(typeof(OpenClTests).Assembly, "OpenCL"), Is.EqualTo(IntPtr.Zero), "only ILGPU's imports are mapped");
    }

    [Test]
    public void BypassAppliesToTheLoadedIlgpu()
    {
        Assert.That(typeof(Context).Assembly.GetName().Version, Is.EqualTo(OpenClAdapter.SupportedIlgpu));
        Assert.That(OpenClAdapter.ShapeProblem(), Is.Null);
    }

    [Test]
    public void BypassRefusesAnotherIlgpuVersionByName()
    {
        var problem = OpenClAdapter.ShapeProblem(new Version(1, 6, 0, 0));
        Assert.That(problem, Does.Contain("ILGPU 1.6.0.0 is loaded").And.Contain("1.5.3").And.Contain("OpenClAdapter.cs"));
    }

    [Test]
    public void DescribeNamesTheDeviceOrSaysWhyNot()
    {
        var info = OpenClBackend.Describe();
        Assert.That(info.Backend, Is.EqualTo(Backend.OpenCL));
        if (info.Available)
            Assert.That(info.Name, Is.Not.Empty.And.Contain("("), "device name and platform");
        else
            Assert.That(info.Reason, Does.Contain("OpenCL"), "the reason names what is missing");
        Assert.That(Device.List().Single(d => d.Backend == Backend.OpenCL), Is.EqualTo(info));
    }

    [Test]
    public void MissingLibraryIsNamedWithTheFix()
    {
        var probe = OpenClAdapter.Probe(["libOpenCL-absent.so.9"]);
        Assert.That(probe.Devices, Is.Empty);
        Assert.That(OpenClAdapter.Summary(probe), Does.Contain("OpenCL library not found").And.Contain("libOpenCL-absent.so.9").And.Contain("apt-get install"));
    }

    [Test]
    public void ProbeNotesTheBypassOnDevicesWithoutGenericAddressSpace()
    {
        RequireDevice();
        var probe = OpenClAdapter.Probe();
        Assert.That(probe.Problem, Is.Null);
        // PoCL 3.1 reports no generic address space; other drivers may, so only PoCL's devices have a known answer.
        var pocl = probe.Devices.Where(d => d.Platform.Contains("Portable Computing Language")).ToList();
        if (pocl.Count == 0) Assert.Ignore("no PoCL device here; the devices present: " + OpenClAdapter.Summary(probe));
        foreach (var d in pocl)
            Assert.That(d.Note, Does.Contain("generic address space"), d.Name);
    }

    [Test]
    public void OpensAndNamesItself()
    {
        RequireDevice();
        using var d = Device.Open("opencl");
        var first = OpenClAdapter.Probe().Accepted.First();
        Assert.That(d.Backend, Is.EqualTo(Backend.OpenCL));
        Assert.That(d.Accelerator.AcceleratorType, Is.EqualTo(AcceleratorType.OpenCL));
        // The device opened at index 0 is the first one the probe accepts, and its kind is the one the probe reported.
        var cl = ((CLAccelerator)d.Accelerator).Device;
        Assert.That(cl.Name, Is.EqualTo(first.Name));
        Assert.That(cl.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_GPU), Is.EqualTo(first.IsGpu));
        Assert.That(d.Name, Does.StartWith("opencl (").And.Contain(first.Name));
    }

    [Test]
    public void OnTheHostCpuEachIndexTakesAContiguousChunk()
    {
        RequireDevice();
        var d = Devices.Get("opencl");
        if (!OpenClBackend.RunsOnHostCpu(d.Accelerator)) Assert.Ignore("the OpenCL device is not a CPU device");
        // A grid-stride loop made PoCL ~50x slower on 4M floats (each work item strides through the whole array).
        var w = d.Split(1 << 22);
        Assert.That(w.Chunk, Is.GreaterThan(1));
        Assert.That(w.Stride, Is.GreaterThanOrEqualTo(w.N), "one round covers every item");
    }

    [Test]
    public void MissingIndexSaysWhatIsPresent()
    {
        var e = Assert.Throws<ArgumentException>(() => Device.Open("opencl", new DeviceOptions { Index = 99 }));
        Assert.That(e!.Message, Does.Contain("index 99").And.Contain("OpenCL"));
    }

    [Test]
    public void KernelResultsEqualTheCpuAccelerators()
    {
        RequireDevice();
        var cl = Devices.Get("opencl");
        var x = Enumerable.Range(0, 5000).Select(i => i * 7919 - 1_000_000).ToArray();
        // Integer arithmetic: both backends must agree exactly.
        Assert.That(RunMix(cl, x), Is.EqualTo(RunMix(Devices.Cpu, x)));

        // Float matmul: same sums in the same order per output, so only contraction (FMA) may differ.
        using var s = Scope.Begin();
        var a = GradCheck.Rand(33 * 29, 5);
        var b = GradCheck.Rand(29 * 17, 6);
        var onCl = Peer.Ops.MatMul(Tensor.FromArray(cl, a, 33, 29), Tensor.FromArray(cl, b, 29, 17)).ToArray();
        var onCpu = Peer.Ops.MatMul(Tensor.FromArray(Devices.Cpu, a, 33, 29), Tensor.FromArray(Devices.Cpu, b, 29, 17)).ToArray();
        Assert.That(onCl, Is.EqualTo(onCpu).Within(1e-5));
    }

    [Test]
    public void FusedMultiplyAddCompilesAndStaysFused()
    {
        RequireDevice();
        // (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 exactly; computed unfused the product rounds to 1 + 2^-11 and gives 0.
        float x = 1f + MathF.Pow(2, -12), z = -(1f + MathF.Pow(2, -11));
        var cl = Devices.Get("opencl");
        foreach (var d in new[] { Devices.Cpu, cl })
        {
            var k = d.Get(static d => new FmaKernels(d));
            using var a = d.Accelerator.Allocate1D(new[] { x, 2f });
            using var c = d.Accelerator.Allocate1D(new[] { z, 0.5f });
            using var y = d.Accelerator.Allocate1D<float>(2);
            k.Fma(2, a.View, c.View, y.View);
            d.Synchronize();
            Assert.That(y.GetAsArray1D(), Is.EqualTo(new[] { MathF.Pow(2, -24), 4.5f }), d.Name);
        }
    }

    static int[] RunMix(Device d, int[] x)
    {
        var k = d.Get(static d => new MixKernels(d));
        using var input = d.Accelerator.Allocate1D(x);
        using var output = d.Accelerator.Allocate1D<int>(x.Length);
        var w = d.Split(x.Length);
        k.Mix(w.Workers, w, input.View, output.View);
        d.Synchronize();
        return output.GetAsArray1D();
    }

    [Test]
    public void FailedCompileIsClearAndLaterKernelsStillLoad()
    {
        RequireDevice();
        // A fresh device, so that a failed recovery cannot spoil the shared one for the rest of the suite.
        using var d = Device.Open("opencl");
        var e = Assert.Throws<InternalCompilerException>(() => d.Get(static d => new ThrowingKernels(d)));
        Assert.That(e!.Message, Does.Contain(nameof(ThrowingKernels)), "the error names the kernel");
        Assert.That(e.InnerException?.Message, Does.Contain("'Throw'"), "and the unsupported instruction");
        var x = new[] { 3, -4, 5 };
        Assert.That(RunMix(d, x), Is.EqualTo(RunMix(Devices.Cpu, x)));
    }

    [Test]
    public void GroupCollectivesRunOrFailClearlyByWhatTheDeviceOffers()
    {
        RequireDevice();
        // A fresh device: a kernel the OpenCL compiler rejects must not spoil the shared one.
        using var d = Device.Open("opencl");
        if (!OpenClAdapter.HasWorkGroupCollectives(((CLAccelerator)d.Accelerator).Device))
        {
            // PoCL 3.1: ILGPU's group collectives compile to OpenCL 2.0 functions the device does not have.
            var e = Assert.Throws<NotSupportedException>(() => d.Get(static d => new GroupKernels(d)));
            Assert.That(e!.Message, Does.Contain(nameof(GroupKernels)).And.Contain("no work-group collective functions").And.Contain("Group.Barrier"));
            Assert.That(RunMix(d, [3, -4, 5]), Is.EqualTo(RunMix(Devices.Cpu, [3, -4, 5])), "later kernels still load");
            return;
        }
        // Groups of 64: sum, inclusive and exclusive scan, and the last item's value, per group.
        const int groups = 3, size = 64;
        var x = Enumerable.Range(0, groups * size).Select(i => (i * 37) % 11 - 5).ToArray();
        var want = new int[4 * x.Length];
        for (int g = 0; g < groups; g++)
        {
            int sum = 0, last = x[g * size + size - 1];
            for (int i = 0; i < size; i++) sum += x[g * size + i];
            for (int i = 0, run = 0; i < size; i++)
            {
                int at = g * size + i;
                want[at] = sum;
                want[x.Length + at] = run + x[at];
                want[2 * x.Length + at] = run;
                want[3 * x.Length + at] = last;
                run += x[at];
            }
        }
        var k = d.Get(static d => new GroupKernels(d));
        using var input = d.Accelerator.Allocate1D(x);
        using var output = d.Accelerator.Allocate1D<int>(want.Length);
        k.All((groups, size), input.View, output.View);
        d.Synchronize();
        Assert.That(output.GetAsArray1D(), Is.EqualTo(want));
    }

    sealed class GroupKernels(Device d)
    {
        public readonly Action<KernelConfig, ArrayView<int>, ArrayView<int>> All = d.Accelerator.LoadStreamKernel<ArrayView<int>, ArrayView<int>>(AllKernel);

        // x: [n] (explicit groups) -> y: [4, n] = group sum, inclusive scan, exclusive scan, the group's last value
        static void AllKernel(ArrayView<int> x, ArrayView<int> y)
        {
            int i = Grid.GlobalIndex.X, n = (int)x.Length;
            int v = x[i];
            y[i] = ILGPU.Algorithms.GroupExtensions.AllReduce<int, ILGPU.Algorithms.ScanReduceOperations.AddInt32>(v);
            y[n + i] = ILGPU.Algorithms.GroupExtensions.InclusiveScan<int, ILGPU.Algorithms.ScanReduceOperations.AddInt32>(v);
            y[2 * n + i] = ILGPU.Algorithms.GroupExtensions.ExclusiveScan<int, ILGPU.Algorithms.ScanReduceOperations.AddInt32>(v);
            y[3 * n + i] = Group.Broadcast(v, Group.DimX - 1);
        }
    }

    sealed class MixKernels(Device d)
    {
        public readonly Action<Index1D, Work, ArrayView<int>, ArrayView<int>> Mix =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, Work, ArrayView<int>, ArrayView<int>>(MixKernel);

        // x: [n] -> y: [n], integer hash-like mix (shifts, xor, wrap-around multiply)
        static void MixKernel(Index1D w, Work work, ArrayView<int> x, ArrayView<int> y)
        {
            for (int s = work.Start(w); s < work.N; s += work.Stride)
                for (int i = s, e = work.End(s); i < e; i++)
                {
                    int v = x[i];
                    v ^= v >> 13;
                    v *= 0x5bd1e995;
                    y[i] = v ^ (v << 7) ^ i;
                }
        }
    }

    sealed class FmaKernels(Device d)
    {
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> Fma =
            d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(FmaKernel);

        // a: [n], c: [n] -> y: [n] = fma(a, a, c)
        static void FmaKernel(Index1D i, ArrayView<float> a, ArrayView<float> c, ArrayView<float> y) => y[i] = MathF.FusedMultiplyAdd(a[i], a[i], c[i]);
    }

    sealed class ThrowingKernels(Device d)
    {
        public readonly Action<Index1D, ArrayView<int>> Bad = d.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>>(BadKernel);

        static int Checked(int v) => v >= 0 ? v : throw new InvalidOperationException("negative");

        // x: [n] -> x: [n]; calls a method whose body throws, which no ILGPU backend compiles
        static void BadKernel(Index1D i, ArrayView<int> x) => x[i] = Checked(x[i]);
    }
}
