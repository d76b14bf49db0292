using Peer.Optim;

namespace Peer.Tests.Optim.Cpu;

/// <summary>The CPU accelerator's AdamW body (AdamWCpu, loaded on <see cref="Devices.Cpu"/>) against the portable kernels
/// (loaded on <see cref="Devices.CpuPortable"/>): same bits.</summary>
public sealed class AdamWCpuTests
{
    // Three steps of one AdamW over a dense [n] parameter and a [rows, cols] table with a sparse gradient, on device D.
    static (float[] Dense, float[] Table, float[] State) Run(Device D, int n, int rows, int cols, int[] touched)
    {
        using var s = Scope.Begin();
        var dense = Tensor.FromArray(D, GradCheck.Rand(n, 1), n);
        var table = Tensor.FromArray(D, GradCheck.Rand(rows * cols, 2), rows, cols);
        dense.RequiresGrad = table.RequiresGrad = true;
        using var opt = new AdamW([("d", dense), ("t", table)], 3e-2f, 0.85f, 0.98f, 1e-6f, 0.1f);
        for (int step = 0; step < 3; step++)
        {
            opt.ZeroGrad();
            dense.Grad = Tensor.FromArray(D, GradCheck.Rand(n, 10 + step), n);
            table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, touched, touched.Length),
                Tensor.FromArray(D, GradCheck.Rand(touched.Length * cols, 20 + step), touched.Length, cols));
            opt.Step();
        }
        var state = opt.StateDict().Where(e => e.T.DType == DType.F32).SelectMany(e => e.T.ToArray()).ToArray();
        return (dense.ToArray(), table.ToArray(), state);
    }

    [TestCase(1, 3, 1, new[] { 2 })]
    [TestCase(1003, 50, 37, new[] { 0, 1, 17, 30, 49 })]
    [TestCase(64, 9, 16, new[] { 8 })]
    public void CpuBodyMatchesPortableBitForBit(int n, int rows, int cols, int[] touched)
    {
        var portable = Run(Devices.CpuPortable, n, rows, cols, touched);
        var cpu = Run(Devices.Cpu, n, rows, cols, touched);
        Assert.That(cpu.Dense, Is.EqualTo(portable.Dense));
        Assert.That(cpu.Table, Is.EqualTo(portable.Table));
        Assert.That(cpu.State, Is.EqualTo(portable.State));
    }
}
