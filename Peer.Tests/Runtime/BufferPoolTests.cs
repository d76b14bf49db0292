// The device's pool of idle tensor buffers (Runtime/Storage.cs): a disposed tensor's buffer serves the next tensor of its
// size and type, pooled bytes count as live until trimmed, the pool keeps no more than its limit, and a limit of 0 turns
// it off.
namespace Peer.Tests.Runtime;

public sealed class BufferPoolTests
{
    [Test]
    public void ADisposedBufferServesTheNextTensorOfItsSize()
    {
        using var d = Device.Open("cpu");
        long before = d.LiveBytes;
        var a = Tensor.FromArray(d, [1f, 2f, 3f, 4f], 4);
        a.Dispose();
        Assert.That(d.PooledBytes, Is.EqualTo(16), "the buffer waits in the pool");
        Assert.That(d.LiveBytes, Is.EqualTo(before + 16), "pooled bytes are device memory held: they count as live");
        Assert.That(d.TensorBytes, Is.EqualTo(before), "but no tensor views them");
        using var p = d.Profile();
        var b = Tensor.Zeros(d, 2, 2);
        var c = Tensor.Empty(d, DType.I32, 4); // another type: not the pooled float buffer
        var calls = p.Rows().ToDictionary(r => r.Op + " " + r.Phase, r => r.Calls);
        Assert.That(calls.GetValueOrDefault("Tensor.Reuse Forward"), Is.EqualTo(1));
        Assert.That(calls.GetValueOrDefault("Tensor.Allocate Forward"), Is.EqualTo(1), "the int tensor");
        Assert.That(b.ToArray(), Is.EqualTo(new float[4]), "Zeros zeroes a reused buffer");
        Assert.That(d.PooledBytes, Is.Zero);
        Assert.That(d.LiveBytes, Is.EqualTo(before + 32));
        b.Dispose();
        c.Dispose();
        Assert.That(d.PooledBytes, Is.EqualTo(32));
        Assert.That(d.TrimPool(), Is.EqualTo(32));
        Assert.That(d.PooledBytes, Is.Zero);
        Assert.That(d.LiveBytes, Is.EqualTo(before), "trimmed: freed");
    }

    [Test]
    public void ThePoolKeepsNoMoreThanItsLimit()
    {
        using var d = Device.Open("cpu", new DeviceOptions { BufferPoolBytes = 100 });
        long before = d.LiveBytes;
        var tensors = Enumerable.Range(0, 10).Select(_ => Tensor.Empty(d, DType.F32, 8)).ToList(); // 32 bytes each
        foreach (var t in tensors) t.Dispose();
        Assert.That(d.PooledBytes, Is.EqualTo(96), "three of 32 bytes fit in 100");
        Assert.That(d.LiveBytes, Is.EqualTo(before + 96), "the others were freed");
        using var big = Tensor.Empty(d, DType.F32, 1000);
        big.Dispose();
        Assert.That(d.PooledBytes, Is.EqualTo(96), "a buffer over the limit is freed at once");
    }

    [Test]
    public void ALimitOfZeroTurnsThePoolOff()
    {
        using var d = Device.Open("cpu", new DeviceOptions { BufferPoolBytes = 0 });
        long before = d.LiveBytes;
        Tensor.Zeros(d, 64).Dispose();
        Assert.That(d.PooledBytes, Is.Zero);
        Assert.That(d.LiveBytes, Is.EqualTo(before));
        var e = Assert.Throws<ArgumentException>(() => Device.Open("cpu", new DeviceOptions { BufferPoolBytes = -1 }));
        Assert.That(e!.Message, Does.Contain("BufferPoolBytes = -1"));
    }

    [Test]
    public void APeakCountsPooledBuffersAndAStepReusesThem()
    {
        using var d = Device.Open("cpu");
        var x = Peer.Ops.Normal(d, 1, 0f, 1f, 64, 32);
        void Step()
        {
            using var s = Scope.Begin();
            Peer.Ops.Softmax(Peer.Ops.Gelu(Peer.Ops.Scale(x, 2f)));
        }
        Step();
        long held = d.LiveBytes;
        d.ResetPeak();
        using var p = d.Profile();
        Step();
        Assert.That(p.Rows().Where(r => r.Op == "Tensor.Allocate"), Is.Empty, "the second step takes every buffer from the pool");
        Assert.That(d.LiveBytes, Is.EqualTo(held), "and returns them");
        Assert.That(d.PeakBytes, Is.EqualTo(held), "the pooled buffers were counted all along, so the step added nothing");
        Assert.That(d.PeakTensorBytes, Is.GreaterThan(d.TensorBytes), "while the tensors' peak shows what the step needed");
        Assert.That(d.PeakTensorBytes - d.TensorBytes, Is.LessThanOrEqualTo(d.PooledBytes));
    }
}
