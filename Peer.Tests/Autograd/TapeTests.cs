namespace Peer.Tests.Autograd;

public sealed class TapeTests
{
    static Device D => Devices.Cpu;

    [Test]
    public void ParameterUsedTwiceAccumulates()
    {
        using var s = Scope.Begin();
        var x = Scope.Unscope(Tensor.FromArray(D, [1f, 2f, 3f], 3));
        x.RequiresGrad = true;
        // y = x*x + 2x  -> dy/dx = 2x + 2
        var y = Peer.Ops.Add(Peer.Ops.Mul(x, x), Peer.Ops.Scale(x, 2f));
        D.Tape.Backward(y, Tensor.Full(D, 1f, 3));
        Assert.That(x.Grad!.ToArray(), Is.EqualTo(new[] { 4f, 6f, 8f }).Within(1e-6));
        // a second backward accumulates (+=)
        var y2 = Peer.Ops.Scale(x, 5f);
        D.Tape.Backward(y2, Tensor.Full(D, 1f, 3));
        Assert.That(x.Grad!.ToArray(), Is.EqualTo(new[] { 9f, 11f, 13f }).Within(1e-6));
        x.Dispose();
    }

    [Test]
    public void NoGradRecordsNothing()
    {
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, [1f, 2f], 2);
        x.RequiresGrad = true;
        using (D.Tape.NoGrad())
        {
            var y = Peer.Ops.Scale(x, 2f);
            Assert.That(y.RequiresGrad, Is.False);
            Assert.That(D.Tape.Count, Is.EqualTo(0));
        }
    }

    [Test]
    public void ScopeFreesIntermediatesAndTape()
    {
        long before = D.TensorBytes;
        var x = Tensor.FromArray(D, new float[1000], 1000);
        x.RequiresGrad = true;
        using (Scope.Begin())
        {
            var y = Peer.Ops.Mul(x, x);
            Assert.That(D.Tape.Count, Is.EqualTo(1));
            Assert.That(D.TensorBytes, Is.GreaterThanOrEqualTo(before + 8000));
        }
        Assert.That(D.Tape.Count, Is.EqualTo(0));
        Assert.That(D.TensorBytes, Is.EqualTo(before + 4000));
        x.Dispose();
        Assert.That(D.TensorBytes, Is.EqualTo(before));
    }

    [Test]
    public void GradientFlowingToADisposedIntermediateFailsNamingIt()
    {
        long before = D.TensorBytes;
        using (Scope.Begin())
        {
            var x = Tensor.FromArray(D, [1f, 2f], 2);
            x.RequiresGrad = true;
            var h = Peer.Ops.Mul(x, x);
            h.Name = "h";
            var y = Peer.Ops.Scale(h, 3f);
            h.Dispose();
            var e = Assert.Throws<InvalidOperationException>(() => D.Tape.Backward(y, Tensor.Full(D, 1f, 2)));
            Assert.That(e!.Message, Does.Contain("Tensor[2] F32 h").And.Contain("an op's output").And.Contain("disposed")
                .And.Contain("alive until Backward"));
            Assert.That(x.Grad, Is.Null, "nothing reached x");
            Assert.That(D.Tape.Count, Is.EqualTo(0), "the tape is cleared");
        }
        Assert.That(D.TensorBytes, Is.EqualTo(before), "the gradients and saved tensors were freed");
    }

    [Test]
    public void GradientFlowingToADisposedParameterFailsNamingIt()
    {
        using var s = Scope.Begin();
        var w = Scope.Unscope(Tensor.FromArray(D, [1f, 2f, 3f], 3));
        w.RequiresGrad = true;
        w.Name = "blocks.0.weight";
        var y = Peer.Ops.Scale(w, 2f);
        w.Dispose();
        var e = Assert.Throws<InvalidOperationException>(() => D.Tape.Backward(y, Tensor.Full(D, 1f, 3)));
        Assert.That(e!.Message, Does.Contain("blocks.0.weight").And.Contain("a leaf"));
    }

    [Test]
    public void BackwardFromADisposedOutputIsRefused()
    {
        using var s = Scope.Begin();
        var x = Tensor.FromArray(D, [1f, 2f], 2);
        x.RequiresGrad = true;
        var y = Peer.Ops.Scale(x, 2f);
        y.Dispose();
        Assert.Throws<ObjectDisposedException>(() => D.Tape.Backward(y, Tensor.Full(D, 1f, 2)));
    }
}
