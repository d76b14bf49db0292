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

    // The row-gradient paths (embedding lookups, PEER experts, product keys, PKM values) fail as the dense one does: a disposed
    // table that requires gradient is an error, not a silently dropped gradient.
    [Test]
    public void RowGradientsToADisposedTableFailAsTheDenseOnesDo()
    {
        long before = D.TensorBytes;
        using (Scope.Begin())
        {
            var table = Scope.Unscope(Tensor.FromArray(D, [1f, 2f, 3f, 4f, 5f, 6f], 3, 2));
            table.RequiresGrad = true;
            table.Name = "embed.weight";
            var ids = Tensor.FromArray(D, new[] { 2, 0, 2 }, 3);
            var rows = Tensor.Full(D, 1f, 3, 2);
            var y = Peer.Ops.Embedding(ids, table);
            table.Dispose();
            var e = Assert.Throws<InvalidOperationException>(() => D.Tape.Backward(y, Tensor.Full(D, 1f, 3, 2)));
            Assert.That(e!.Message, Does.Contain("embed.weight").And.Contain("a leaf").And.Contain("disposed"));
            e = Assert.Throws<InvalidOperationException>(() => Peer.Ops.AccumulateRowGrad(table, ids, rows));
            Assert.That(e!.Message, Does.Contain("embed.weight"));
            var g = RowSparseGradients.Coalesce(null, ids, rows, 3);
            e = Assert.Throws<InvalidOperationException>(() => RowSparseGradients.Accumulate(table, g));
            Assert.That(e!.Message, Does.Contain("embed.weight"));
            Assert.That(g.Rows.IsDisposed && g.Values.IsDisposed, "the gradient it was handed is freed");
            // A table that does not require gradient still takes nothing, silently, disposed or not.
            var frozen = Tensor.Zeros(D, 3, 2);
            frozen.Dispose();
            Assert.DoesNotThrow(() => Peer.Ops.AccumulateRowGrad(frozen, ids, rows));
        }
        Assert.That(D.TensorBytes, Is.EqualTo(before), "everything was freed");
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
