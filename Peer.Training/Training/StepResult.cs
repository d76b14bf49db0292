// What Trainer.Step returns. Its loss stays on the device until someone asks for it (Trainer.ReadBack reads the losses of
// every step since the last read, with the device's divergence flag, in one go), so that a training loop that logs now
// and then never waits for the device inside a step.
namespace Peer.Training;

/// <summary>Training produced a non-finite loss, gradient or parameter; the step was not applied. Its message is one line naming the step.</summary>
public sealed class TrainingDivergedException(string message, int step) : Exception(message)
{
    /// <summary>The step (1-based) that produced the non-finite value.</summary>
    public int Step { get; } = step;

    /// <summary>A non-finite value in words: NaN, infinity or -infinity.</summary>
    internal static string Words(double v) => double.IsNaN(v) ? "NaN" : v > 0 ? "infinity" : "-infinity";

    /// <summary>The one line a training command stops with: which step, what was not finite, what happened to it
    /// (<paramref name="consequence"/>), that the last checkpoint (step <paramref name="lastCheckpoint"/>, or none) is as it was,
    /// and what to change.</summary>
    internal static TrainingDivergedException Stopped(TrainingDivergedException e, string consequence, int? lastCheckpoint, string runDir, bool clips)
    {
        string kept = lastCheckpoint is { } step ? $"the last checkpoint, step {step}, is unchanged in {runDir}" : "no checkpoint was written";
        return new TrainingDivergedException($"training stopped: {e.Message}; {consequence}; {kept}. "
            + $"Lower train.learning_rate or train.weight_decay{(clips ? "" : ", or set train.clip_norm,")} and start a new run (another --out)", e.Step);
    }
}

/// <summary>What one optimizer step did.</summary>
/// <remarks>A result from <see cref="Trainer.Step"/> in one process reads its <see cref="Loss"/> from the device when it is first
/// asked for (with every other unread step's: <see cref="Trainer.ReadBack"/>), not when the step returns.</remarks>
public sealed record StepResult
{
    // The loss, shared by the copies a `with` makes, so that the trainer's read reaches them all.
    sealed class LossCell(Trainer? source, double value)
    {
        public Trainer? Source = source; // set while the loss is on the device
        public double Value = value;
        public TrainingDivergedException? Failure;
    }

    readonly LossCell cell;

    /// <summary>A result with its loss known.</summary>
    /// <param name="Step">The step number (1-based).</param>
    /// <param name="Loss">Mean training loss over the step's micro-batches.</param>
    /// <param name="LearningRate">Learning rate used (of the dense parameters; the row-sparse tables' is this times sparse_learning_rate / learning_rate).</param>
    /// <param name="TokensPerSecond">Training tokens processed per second.</param>
    public StepResult(int Step, double Loss, double LearningRate, double TokensPerSecond)
    {
        this.Step = Step;
        cell = new LossCell(null, Loss);
        this.LearningRate = LearningRate;
        this.TokensPerSecond = TokensPerSecond;
    }

    /// <summary>A result whose loss <paramref name="source"/> reads later.</summary>
    internal StepResult(int step, Trainer source, double learningRate, double tokensPerSecond) : this(step, double.NaN, learningRate, tokensPerSecond)
        => cell.Source = source;

    /// <summary>The step number (1-based).</summary>
    public int Step { get; init; }

    /// <summary>Mean training loss over the step's micro-batches. The first read of a result of <see cref="Trainer.Step"/> waits for the
    /// device (see <see cref="Trainer.ReadBack"/>); later reads return the number.</summary>
    /// <exception cref="TrainingDivergedException">This step, or an earlier unread one, had a non-finite loss or gradient: it was not applied.</exception>
    /// <exception cref="ObjectDisposedException">The trainer was disposed before the loss was read.</exception>
    public double Loss
    {
        get
        {
            cell.Source?.ReadPending();
            if (cell.Failure is { } f) throw new TrainingDivergedException(f.Message, f.Step);
            return cell.Value;
        }
        init => cell = new LossCell(null, value);
    }

    /// <summary>Learning rate used (of the dense parameters; the row-sparse tables' is this times sparse_learning_rate / learning_rate).</summary>
    public double LearningRate { get; init; }

    /// <summary>Training tokens processed per second: tokens over the host's time in <see cref="Trainer.Step"/> (on a GPU, the time to
    /// queue the step's work, which a full queue makes the time to run it).</summary>
    public double TokensPerSecond { get; init; }

    /// <summary>Bytes the step's collectives brought to this rank (0 in one process; how they are counted: <see cref="Peer.Distributed.Communicator.Traffic"/>).</summary>
    public long BytesReceived { get; init; }

    /// <summary>The step's four numbers (reads <see cref="Loss"/>).</summary>
    public void Deconstruct(out int Step, out double Loss, out double LearningRate, out double TokensPerSecond) =>
        (Step, Loss, LearningRate, TokensPerSecond) = (this.Step, this.Loss, this.LearningRate, this.TokensPerSecond);

    /// <summary>Sets the loss read from the device (<paramref name="value"/>) or the divergence that left this step unapplied.</summary>
    internal void Resolve(double value, TrainingDivergedException? diverged)
    {
        cell.Value = value;
        cell.Failure = diverged;
        cell.Source = null;
    }

    /// <summary>Equal numbers (reads <see cref="Loss"/> of both).</summary>
    public bool Equals(StepResult? other) => other is not null && Step == other.Step && Loss.Equals(other.Loss)
        && LearningRate.Equals(other.LearningRate) && TokensPerSecond.Equals(other.TokensPerSecond) && BytesReceived == other.BytesReceived;

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Step, Loss, LearningRate, TokensPerSecond, BytesReceived);
}
