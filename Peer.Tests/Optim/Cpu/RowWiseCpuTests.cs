using Peer.Optim;

namespace Peer.Tests.Optim.Cpu;

/// <summary>The CPU accelerator's row-wise AdaGrad and AdamW bodies (RowWiseAdagradCpu, RowWiseAdamWCpu, loaded on
/// <see cref="Devices.Cpu"/>) against the portable kernels (loaded on <see cref="Devices.CpuPortable"/>): same bits, for row
/// widths below, at and past the eight-float vectors of the row's sum of squares and the machine's vector width.</summary>
public sealed class RowWiseCpuTests
{
    // Three steps over a dense [rows, cols] parameter and a [rows, cols] table with a sparse gradient, on device D.
    static (float[] Dense, float[] Table, float[] State) Run(Device D, string kind, int rows, int cols, int[] touched)
    {
        using var s = Scope.Begin();
        var dense = Tensor.FromArray(D, GradCheck.Rand(rows * cols, 1, 3f), rows, cols);
        var table = Tensor.FromArray(D, GradCheck.Rand(rows * cols, 2), rows, cols);
        dense.RequiresGrad = table.RequiresGrad = true;
        using Optimizer opt = kind switch
        {
            "adagrad" => new RowWiseAdagrad([("d", dense), ("t", table)], 0.07f, 1e-6f, 0.1f),
            "adamw" => new RowWiseAdamW([("d", dense), ("t", table)], 3e-2f, 0.85f, 0.98f, 1e-6f, 0.1f),
            _ => new RowWiseAdamW([("d", dense), ("t", table)], 3e-2f, 0f, 0.98f, 1e-6f, 0.1f),
        };
        for (int step = 0; step < 3; step++)
        {
            opt.ZeroGrad();
            dense.Grad = Tensor.FromArray(D, GradCheck.Rand(rows * cols, 10 + step, 5f), rows, cols);
            table.SparseGrad = new RowSparseGrad(Tensor.FromArray(D, touched, touched.Length),
                Tensor.FromArray(D, GradCheck.Rand(touched.Length * cols, 20 + step, 0.3f), touched.Length, cols));
            opt.Step();
        }
        var state = opt.StateDict().Where(e => e.T.DType == DType.F32).SelectMany(e => e.T.ToArray()).ToArray();
        return (dense.ToArray(), table.ToArray(), state);
    }

    static readonly string[] Kinds = ["adagrad", "adamw", "adamw-no-first-moment"];

    [Test]
    public void CpuBodyMatchesPortableBitForBit(
        [ValueSource(nameof(Kinds))] string kind,
        [Values(1, 7, 8, 37, 64, 259)] int cols)
    {
        int[] touched = [0, 2, 5, 6];
        var portable = Run(Devices.CpuPortable, kind, 7, cols, touched);
        var cpu = Run(Devices.Cpu, kind, 7, cols, touched);
        Assert.That(GradCheck.Bits(cpu.Dense), Is.EqualTo(GradCheck.Bits(portable.Dense)));
        Assert.That(GradCheck.Bits(cpu.Table), Is.EqualTo(GradCheck.Bits(portable.Table)));
        Assert.That(GradCheck.Bits(cpu.State), Is.EqualTo(GradCheck.Bits(portable.State)));
    }

}
