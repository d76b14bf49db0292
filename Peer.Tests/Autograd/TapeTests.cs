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
        long before = D.LiveBytes;
        var x = Tensor.FromArray(D, new float[1000], 1000);
        x.RequiresGrad = true;
        using (Scope.Begin())
        {
            var y = Peer.Ops.Mul(x, x);
            Assert.That(D.Tape.Count, Is.EqualTo(1));
            Assert.That(D.LiveBytes, Is.GreaterThanOrEqualTo(before + 8000));
        }
        Assert.That(D.Tape.Count, Is.EqualTo(0));
        Assert.That(D.LiveBytes, Is.EqualTo(before + 4000));
        x.Dispose();
        Assert.That(D.LiveBytes, Is.EqualTo(before));
    }
}
