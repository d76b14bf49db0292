// The kernel gate: every kernel Peer can run on a GPU is compiled, on this GPU-less machine, to PTX for two CUDA
// architectures through ILGPU's PTX backend, and built as OpenCL C on PoCL, so that a kernel that cannot load on
// those backends fails CI instead of a user's first run. What is compiled is what the launchers choose for such devices
// (Support/KernelInventory.cs), checked against a reflection scan of the library so that no kernel escapes it.
using System.Diagnostics;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Peer.Tests.Runtime;

public sealed class KernelGateTests
{
    // Volta (the oldest architecture with the independent thread scheduling that CUDA 12 assumes) and Hopper. PTX ISA 8.0
    // covers both; ILGPU picks the newest ISA the installed driver accepts, which for a CUDA 12 driver is at least 8.0.
    static readonly CudaArchitecture[] Architectures = [CudaArchitecture.SM_70, CudaArchitecture.SM_90];
    static readonly CudaInstructionSet Isa = CudaInstructionSet.ISA_80;

    static IReadOnlyList<LoadedKernel> Gpu => gpu.Value;
    static readonly Lazy<IReadOnlyList<LoadedKernel>> gpu = new(() => KernelInventory.For(InventoryShape.CudaGpu));

    [Test]
    public void EveryKernelShapedMethodIsChosenSomewhereOrIsACpuBody()
    {
        var chosen = Gpu.Concat(KernelInventory.For(InventoryShape.OpenClOnCpu)).Select(k => KernelInventory.Definition(k.Method)).ToHashSet();
        using (var cpu = Device.Open("cpu"))
            chosen.UnionWith(KernelInventory.BuildAll(cpu).Select(k => KernelInventory.Definition(k.Method)));
        var shaped = KernelInventory.KernelShaped();
        var stray = shaped.Where(s => !s.CpuBody && !chosen.Contains(s.Method)).Select(s => KernelInventory.Name(s.Method)).ToArray();
        Assert.That(stray, Is.Empty, "kernel-shaped methods that no device's launchers load: load them through Device.LoadKernel in a launcher named XKernels, or delete them");
        var unscanned = chosen.Where(m => !shaped.Any(s => s.Method == m)).Select(KernelInventory.Name).ToArray();
        Assert.That(unscanned, Is.Empty, "kernels the launchers load but the scan does not recognise as kernels");
        TestContext.Out.WriteLine($"kernel scan: {shaped.Count} kernel-shaped methods in Peer.Core and Peer.Training, " +
            $"{shaped.Count(s => s.CpuBody)} of them CPU bodies' kernels; {KernelInventory.Launchers().Count} launchers");
    }

    [Test]
    public void NoGpuLauncherChoosesACpuBody()
    {
        var cpuBodies = KernelInventory.KernelShaped().Where(s => s.CpuBody).Select(s => s.Method).ToHashSet();
        Assert.That(cpuBodies, Is.Not.Empty, "the scan finds the CPU bodies' kernels");
        var wrong = Gpu.Where(k => cpuBodies.Contains(KernelInventory.Definition(k.Method))).Select(k => KernelInventory.Name(k.Method));
        Assert.That(wrong, Is.Empty);
    }

    [Test]
    public void EveryGpuKernelCompilesToPtxWithoutExternalFunctions()
    {
        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        var localBytes = new Dictionary<string, int>();
        int compiled = 0;
        using var context = Device.CreateCudaContext(withDevices: false);
        foreach (var arch in Architectures)
        {
            using var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, Isa, null);
            foreach (var k in Gpu)
            {
                string name = $"{KernelInventory.Name(k.Method)} ({arch})";
                try
                {
                    var entry = k.ExplicitlyGrouped
                        ? EntryPointDescription.FromExplicitlyGroupedKernel(k.Method)
                        : EntryPointDescription.FromImplicitlyGroupedKernel(k.Method);
                    var ptx = ((PTXCompiledKernel)backend.Compile(entry, new KernelSpecialization())).PTXAssembly;
                    compiled++;
                    if (Environment.GetEnvironmentVariable("PEER_PTX_DIR") is { Length: > 0 } dir) // to read or assemble the PTX (ptxas)
                    {
                        Directory.CreateDirectory(dir);
                        File.WriteAllText(Path.Combine(dir, $"{KernelInventory.Name(k.Method).Replace('<', '[').Replace('>', ']')}.{arch}.ptx"), ptx);
                    }
                    // An .extern function is a symbol nothing defines: the module would fail to load on a GPU.
                    foreach (Match m in Regex.Matches(ptx, @"^\s*\.extern\s+\.func[^\n]*", RegexOptions.Multiline))
                        failures.Add($"{name}: {m.Value.Trim()}");
                    int local = Regex.Matches(ptx, @"\.local\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]").Sum(m => int.Parse(m.Groups[1].Value));
                    if (local > 0) localBytes[KernelInventory.Name(k.Method)] = local;
                }
                catch (Exception e)
                {
                    failures.Add($"{name}: {e.GetType().Name}: {e.Message}");
                    context.ClearCache(ClearCacheMode.Everything); // one failed compile breaks the context (docs/ilgpu.md)
                }
            }
        }
        TestContext.Out.WriteLine($"PTX gate: {Gpu.Count} kernels chosen for a CUDA GPU by {KernelInventory.Launchers().Count} launchers, " +
            $"{compiled} compiles for {string.Join(" and ", Architectures)} (PTX ISA {Isa}) in {clock.Elapsed.TotalSeconds:F1} s, {failures.Count} failures");
        foreach (var (name, bytes) in localBytes.OrderByDescending(p => p.Value))
            TestContext.Out.WriteLine($"PTX gate: {name} keeps {bytes} bytes per thread in local memory");
        Assert.That(failures, Is.Empty);
        Assert.That(compiled, Is.EqualTo(Gpu.Count * Architectures.Length), "every chosen kernel compiled for every architecture");
        // Per-thread arrays go to local memory, which is off-chip: the PEER step keeps its state in registers and shared memory
        // (the grouped retrieval, masked or not, and experts). Only the routing of the top-k MoE and expert-choice baselines
        // still uses it.
        string[] exempt = [nameof(MoeRoutingKernels) + "."];
        Assert.That(localBytes.Keys.Where(k => !exempt.Any(e => k.StartsWith(e, StringComparison.Ordinal))), Is.Empty,
            "kernels a GPU runs that keep per-thread arrays in local memory");
    }

    // Where a CUDA device is present (Peer.Bench/gpu-check.sh): every launcher built on it, so that the driver loads every kernel
    // module (JIT-compiling the PTX); and the kernels a real GPU chooses are those the inventory lists for one.
    [Test]
    public void EveryGpuKernelLoadsOnCuda()
    {
        Devices.RequireCuda();
        var clock = Stopwatch.StartNew();
        using var d = Device.Open("cuda");
        var loaded = KernelInventory.BuildAll(d);
        TestContext.Out.WriteLine($"CUDA gate: {loaded.Count} kernels loaded on '{d.Name}' in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.That(loaded.Select(k => k.Method), Is.EquivalentTo(Gpu.Select(k => k.Method)), "the inventory's CUDA shape chooses what a real GPU does");
    }

    // ILGPU 1.5.3 leaves MathF/Math.FusedMultiplyAdd as an undefined external function in PTX; Peer's CUDA contexts emit the
    // hardware instruction, which rounds once as .NET does (GpuIntrinsics).
    [Test]
    public void PtxFusedMultiplyAddIsTheHardwareInstruction()
    {
        string Ptx(Context context, Delegate kernel)
        {
            using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_70), CudaArchitecture.SM_70, Isa, null);
            return ((PTXCompiledKernel)backend.Compile(EntryPointDescription.FromImplicitlyGroupedKernel(kernel.Method), new KernelSpecialization())).PTXAssembly;
        }
        using (var bare = Context.Create(b => b.EnableAlgorithms()))
            Assert.That(Ptx(bare, FmaKernel), Does.Contain(".extern .func"), "ILGPU's own translation, which the gate would refuse");
        using var peer = Device.CreateCudaContext(withDevices: false);
        var single = Ptx(peer, FmaKernel);
        Assert.That(single, Does.Contain("fma.rn.f32").And.Not.Contain(".extern"));
        Assert.That(Ptx(peer, FmaDoubleKernel), Does.Contain("fma.rn.f64").And.Not.Contain(".extern"));
    }

    static void FmaKernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c) => c[i] = MathF.FusedMultiplyAdd(a[i], b[i], c[i]);

    static void FmaDoubleKernel(Index1D i, ArrayView<double> a, ArrayView<double> b, ArrayView<double> c) => c[i] = Math.FusedMultiplyAdd(a[i], b[i], c[i]);

    [Test]
    public void EveryKernelBuildsOnOpenCl()
    {
        Devices.RequireOpenCl();
        var clock = Stopwatch.StartNew();
        // A device of its own: ILGPU caches what a context compiled, so the suite's device may have built some already.
        using var d = Device.Open("opencl");
        var failures = new List<string>();
        List<LoadedKernel> built;
        try
        {
            built = KernelInventory.BuildAll(d).ToList(); // what the launchers choose for this device, each built here
        }
        catch (InvalidOperationException e)
        {
            Assert.Fail(e.Message);
            return;
        }
        foreach (var k in Gpu.Where(k => !built.Contains(k)))
        {
            // The kernels a GPU would run that this device does not choose, built here too.
            try
            {
                using var kernel = k.ExplicitlyGrouped ? d.Accelerator.LoadKernel(k.Method) : d.Accelerator.LoadAutoGroupedKernel(k.Method);
                built.Add(k);
            }
            catch (Exception e)
            {
                failures.Add($"{KernelInventory.Name(k.Method)}: {e.GetType().Name}: {e.Message}");
                d.Context.ClearCache(ClearCacheMode.Everything);
            }
        }
        TestContext.Out.WriteLine($"OpenCL gate: {built.Count} kernels built on '{d.Name}' in {clock.Elapsed.TotalSeconds:F1} s " +
            $"(those its launchers choose, and those a GPU's would), {failures.Count} failures");
        Assert.That(failures, Is.Empty);
    }
}
