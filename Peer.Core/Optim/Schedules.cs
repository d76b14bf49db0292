// Learning-rate schedules: pure functions of the step index, so a resumed run gets the same rate from the
// step count alone. Set optimizer.LearningRate = schedule.LearningRateAt(step) before each Step().
namespace Peer.Optim;

/// <summary>A learning rate as a function of the 0-based step index.</summary>
public abstract class LearningRateSchedule
{
    /// <summary>The learning rate for step <paramref name="step"/> (0 for the first step).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="step"/> is negative.</exception>
    public abstract float LearningRateAt(long step);

    private protected static void CheckStep(long step) => Check.InRange(step, 0, long.MaxValue, nameof(step));

    private protected static void CheckRate(float value, string argument)
    {
        if (!(value >= 0 && float.IsFinite(value)))
            throw new ArgumentOutOfRangeException(argument, value, $"{argument} = {value}: expected a finite value >= 0.");
    }
}

/// <summary>The same learning rate at every step.</summary>
public sealed class ConstantSchedule : LearningRateSchedule
{
    /// <summary>The rate.</summary>
    public float LearningRate { get; }

    /// <summary>Creates a constant schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rate is negative or not finite.</exception>
    public ConstantSchedule(float learningRate)
    {
        CheckRate(learningRate, nameof(learningRate));
        LearningRate = learningRate;
    }

    /// <inheritdoc />
    public override float LearningRateAt(long step)
    {
        CheckStep(step);
        return LearningRate;
    }
}

/// <summary>
/// Linear warmup then cosine decay. With W = warmupSteps and T = totalSteps, at step s:
/// <code>
/// s &lt; W:       lr = baseLr * (s + 1) / W
/// W &lt;= s &lt; T:  lr = minLr + (baseLr - minLr) * (1 + cos(pi * (s - W) / (T - W))) / 2
/// s >= T:      lr = minLr
/// </code>
/// so the rate reaches baseLr on the last warmup step, starts the decay at baseLr and ends it at minLr.
/// </summary>
public sealed class WarmupCosineSchedule : LearningRateSchedule
{
    /// <summary>Peak rate, reached at the end of warmup.</summary>
    public float BaseLr { get; }
    /// <summary>Steps of linear warmup.</summary>
    public long WarmupSteps { get; }
    /// <summary>Step at which the decay reaches <see cref="MinLr"/>.</summary>
    public long TotalSteps { get; }
    /// <summary>Final rate.</summary>
    public float MinLr { get; }

    /// <summary>Creates the schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A rate negative or not finite, minLr above baseLr, warmupSteps negative, or totalSteps below warmupSteps.</exception>
    public WarmupCosineSchedule(float baseLr, long warmupSteps, long totalSteps, float minLr = 0f)
    {
        CheckRate(baseLr, nameof(baseLr));
        CheckRate(minLr, nameof(minLr));
        if (minLr > baseLr) throw new ArgumentOutOfRangeException(nameof(minLr), minLr, $"minLr = {minLr}: expected a value <= baseLr ({baseLr}).");
        Check.InRange(warmupSteps, 0, long.MaxValue, nameof(warmupSteps));
        Check.InRange(totalSteps, warmupSteps, long.MaxValue, nameof(totalSteps));
        BaseLr = baseLr;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        MinLr = minLr;
    }

    /// <inheritdoc />
    public override float LearningRateAt(long step)
    {
        CheckStep(step);
        if (step < WarmupSteps) return (float)((double)BaseLr * (step + 1) / WarmupSteps);
        if (step >= TotalSteps) return MinLr;
        double progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return (float)(MinLr + (BaseLr - (double)MinLr) * (1 + Math.Cos(Math.PI * progress)) / 2);
    }
}
