// The trainer's reads of the device. In one process a step reads nothing: ReadBack reads the losses of every step since the last
// read and the StepGuard's divergence flag in one go, when a caller wants them (a log line, an evaluation, a checkpoint, the
// end of the run, a StepResult's Loss) or after Trainer.MaxUnreadSteps steps. A distributed step reads its loss and gradient
// norm before the optimizer, since the ranks add their losses on the host (through MPI's host buffers) and must stop together.
// How a skipped step is kept consistent: the device skips every update from the first bad step on, while the host's counters
// (the sampler, the optimizers' step counts) go on; the trainer is stopped from then on and Checkpoint.Save refuses it, so none
// of those counters is ever saved, and StepCount is set back to the last step that was applied.
using ILGPU.Runtime;
using Peer.Optim;

namespace Peer.Training;

public sealed partial class Trainer
{
    /// <summary>A distributed step's read, before the optimizer: the summed loss (all-reduced over the ranks, so that all stop together)
    /// and the gradient norm; throws for a non-finite one before anything is applied. Returns the summed loss.</summary>
    double DistributedCheck(int step)
    {
        var t = Config.Train;
        var group = Distribution.Group;
        float norm;
        double lossSum;
        if (sharded.Length > 0)
        {
            // Split tables: the norm's sharded part is all-reduced on the host (it reads the norm there); with clipping off, a
            // bound no norm reaches scales nothing.
            norm = GradClip.ClipGlobalNorm(replicated.Select(p => p.Param), sharded, group, t.ClipNorm > 0 ? t.ClipNorm : float.MaxValue);
            lossTotal.View.CopyToCPU(host.AsSpan(0, 1));
            lossSum = host[0];
        }
        else
        {
            if (t.ClipNorm > 0) GradClip.ClipGlobalNorm(Model.Parameters(), t.ClipNorm, gradNorm);
            else GradClip.GlobalNorm(Model.Parameters(), gradNorm);
            readback.View.SubView(0, 1).CopyFrom(lossTotal.View);
            readback.View.SubView(1, 1).CopyFrom(gradNorm.View);
            readback.View.CopyToCPU(host.AsSpan()); // waits for the device; the span overload pins the array
            lossSum = host[0];
            norm = host[1];
        }
        HostReads++;
        if (group.Size > 1)
        {
            // Each rank's loss is its share's; the step's is their sum, the same on every rank, so that all ranks stop together.
            var total = new[] { lossSum };
            group.AllReduce(total.AsSpan());
            lossSum = total[0];
        }
        if (!double.IsFinite(lossSum) || !float.IsFinite(norm))
        {
            Model.ZeroGrad();
            throw new TrainingDivergedException(!double.IsFinite(lossSum)
                ? $"the loss of step {step} is {TrainingDivergedException.Words(lossSum)}"
                : $"the gradient norm of step {step} is {TrainingDivergedException.Words(norm)}", step);
        }
        return lossSum;
    }

    /// <summary>
    /// Reads, waiting for the device, the losses of the steps taken since the last read (setting their <see cref="StepResult.Loss"/>)
    /// and the device's divergence flag. Nothing is read when every step was read already. A run that logs every n steps calls this
    /// (or reads a loss) at those steps only; <see cref="Evaluate"/> and <c>Checkpoint.Save</c> call it first.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A step since the last read had a non-finite loss or gradient norm; the message
    /// names the first. Neither it nor any later step was applied: the parameters and the optimizer's moments are those after the step
    /// before it, which <see cref="StepCount"/> is again. The trainer is stopped: the sampler and the optimizers' host-side step counts
    /// went on, so <see cref="Step"/> and this throw the same again and <c>Checkpoint.Save</c> refuses it.</exception>
    public void ReadBack()
    {
        ReadPending();
        if (diverged is { } stopped) throw new TrainingDivergedException(stopped.Message, stopped.Step);
    }

    /// <summary>The read of <see cref="ReadBack"/>, recording a divergence instead of throwing it.</summary>
    internal void ReadPending()
    {
        if (unread.Count == 0) return;
        ObjectDisposedException.ThrowIf(disposed, this);
        var bad = guard.Read();
        var sums = losses.ToArray();
        HostReads += 2;
        if (bad is { } b)
        {
            diverged = new TrainingDivergedException(b.IsLoss ? $"the loss of step {b.Step} is {TrainingDivergedException.Words(b.Value)}"
                : $"the gradient norm of step {b.Step} is {TrainingDivergedException.Words(b.Value)}", b.Step);
            StepCount = b.Step - 1;
        }
        foreach (var r in unread)
            if (diverged is { } d && r.Step >= d.Step) r.Resolve(double.NaN, d);
            else r.Resolve((double)sums[(r.Step - 1) % MaxUnreadSteps] / Config.Train.Accumulation, null);
        unread.Clear();
    }
}
