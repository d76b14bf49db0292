// Training and evaluating the image classifier as a library object, as Trainer does for the language model: one
// optimizer step takes the next images of a seeded per-epoch shuffle (its position is the sampler's whole state, so a
// resumed run sees the same batches), back-propagates inside a Scope, clips the global gradient norm and steps AdamW at the
// warmup + cosine learning rate. Evaluation runs without gradients in evaluation mode (PEER's query BatchNorm on its running
// statistics) and gives loss, accuracy, per-class accuracy, the confusion matrix and each PEER layer's expert usage.
using System.Diagnostics;
using Peer.Nn;
using Peer.Optim;

namespace Peer.Training;

/// <summary>What one optimizer step of the classifier did.</summary>
/// <param name="Step">The step number (1-based).</param>
/// <param name="Loss">Training loss of the step's batch.</param>
/// <param name="Accuracy">Training accuracy of the step's batch (before the update).</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="ImagesPerSecond">Training images processed per second.</param>
public sealed record VisionStepResult(int Step, double Loss, double Accuracy, double LearningRate, double ImagesPerSecond);

/// <summary>An evaluation of the classifier on one split.</summary>
/// <param name="Loss">Mean cross-entropy in nats.</param>
/// <param name="Accuracy">Fraction classified correctly.</param>
/// <param name="Confusion">Counts <c>[true class, predicted class]</c>.</param>
/// <param name="Experts">Expert usage of each PEER layer over the split.</param>
public sealed record VisionEvalResult(double Loss, double Accuracy, long[,] Confusion, IReadOnlyList<LayerUsage> Experts)
{
    /// <summary>Images scored.</summary>
    public int Images { get; init; }
    /// <summary>Whether each image was scored by the mean logits of it and its mirror (<see cref="VisionTrainConfig.EvalFlip"/>).</summary>
    public bool FlipAveraged { get; init; }
    /// <summary>Accuracy per true class (NaN for a class without images).</summary>
    public double[] ClassAccuracy
    {
        get
        {
            int c = Confusion.GetLength(0);
            var acc = new double[c];
            for (int i = 0; i < c; i++)
            {
                long total = 0;
                for (int j = 0; j < c; j++) total += Confusion[i, j];
                acc[i] = total == 0 ? double.NaN : (double)Confusion[i, i] / total;
            }
            return acc;
        }
    }
    /// <summary>Mean over PEER layers of the fraction of experts used; null without PEER layers.</summary>
    public double? Usage => Experts.Count == 0 ? null : Experts.Average(l => l.Usage);
    /// <summary>Mean over PEER layers of the unevenness; null without PEER layers.</summary>
    public double? Unevenness => Experts.Count == 0 ? null : Experts.Average(l => l.Unevenness);
}

/// <summary>A seeded shuffle of <c>count</c> images, epoch after epoch; <see cref="State"/> (images drawn so far) is its whole state.</summary>
public sealed class ImageSampler(int count, ulong seed)
{
    int[]? order;
    long orderEpoch = -1;

    /// <summary>Images drawn so far; restoring it replays the same batches.</summary>
    public long State { get; set; }

    /// <summary>The next <paramref name="batch"/> image ids (crossing into the next epoch's shuffle when one ends).</summary>
    public int[] NextBatch(int batch)
    {
        var ids = new int[batch];
        for (int i = 0; i < batch; i++, State++)
        {
            long epoch = State / count;
            if (epoch != orderEpoch) (order, orderEpoch) = (Shuffle(epoch), epoch);
            ids[i] = order![(int)(State % count)];
        }
        return ids;
    }

    int[] Shuffle(long epoch)
    {
        var a = Enumerable.Range(0, count).ToArray();
        ulong s = seed * 0x9E3779B97F4A7C15UL + (ulong)epoch;
        for (int i = count - 1; i > 0; i--)
        {
            int j = (int)(BatchSampler.Next(ref s) % (ulong)(i + 1));
            (a[i], a[j]) = (a[j], a[i]);
        }
        return a;
    }
}

/// <summary>Trains a <see cref="VisionModel"/> on an <see cref="ImageDataset"/>.</summary>
/// <example><code>
/// using var device = Device.Open("cpu");
/// var data = ImageDataset.Load(null, validation: 5000);
/// using var trainer = new VisionTrainer(device, VisionRunConfig.Preset("peer"), data);
/// while (trainer.StepCount &lt; trainer.Config.Train.Steps) trainer.Step();
/// Console.WriteLine(trainer.Evaluate(data.Test).Accuracy);
/// </code></example>
public sealed class VisionTrainer : IDisposable
{
    readonly WarmupCosineSchedule schedule;

    /// <summary>The run's configuration.</summary>
    public VisionRunConfig Config { get; }
    /// <summary>The model being trained.</summary>
    public VisionModel Model { get; }
    /// <summary>The optimizer (AdamW over every parameter).</summary>
    public AdamW Optimizer { get; }
    /// <summary>The data.</summary>
    public ImageDataset Data { get; }
    /// <summary>The training sampler; its state is part of a checkpoint.</summary>
    public ImageSampler Sampler { get; }
    /// <summary>The device.</summary>
    public Device Device { get; }
    /// <summary>Optimizer steps taken so far.</summary>
    public int StepCount { get; internal set; }

    /// <summary>Builds the model and optimizer of <paramref name="config"/> on <paramref name="device"/>.</summary>
    /// <exception cref="ConfigException">The configuration is invalid or does not fit the data (image size, classes, validation split).</exception>
    public VisionTrainer(Device device, VisionRunConfig config, ImageDataset data)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(data);
        config.Validate();
        ModelConfig.Require(data.Train.Height == data.Train.Width && data.Train.Height == config.Model.ImageSize,
            $"image_size = {config.Model.ImageSize} but the images are {data.Train.Height}x{data.Train.Width}");
        ModelConfig.Require(config.Model.Classes == data.Classes.Length, $"classes = {config.Model.Classes} but the data has {data.Classes.Length}");
        ModelConfig.Require(config.Train.Validation == data.Validation.Count,
            $"validation = {config.Train.Validation} but the data holds back {data.Validation.Count} images");
        Device = device;
        Config = config;
        Data = data;
        Model = new VisionModel(device, config.Model, config.Train.Seed);
        var t = config.Train;
        Optimizer = new AdamW(Model.NamedParameters(), lr: t.LearningRate, weightDecay: t.WeightDecay);
        schedule = new WarmupCosineSchedule(t.LearningRate, t.WarmupSteps, t.Steps, t.LearningRate * t.MinLearningRateFraction);
        Sampler = new ImageSampler(data.Train.Count, t.Seed);
    }

    /// <summary>The learning rate of step <paramref name="step"/> (1-based): linear warmup to the peak, then cosine decay to the minimum.</summary>
    public double LearningRateAt(int step) => schedule.LearningRateAt(step - 1);

    /// <summary>Takes one optimizer step.</summary>
    /// <exception cref="TrainingDivergedException">The step's loss, or its gradient norm when clipping, is not finite: the update is not
    /// applied (parameters, optimizer state and <see cref="StepCount"/> stay those of the step before; the sampler has moved on).</exception>
    public VisionStepResult Step()
    {
        var t = Config.Train;
        var clock = Stopwatch.StartNew();
        int step = StepCount + 1;
        double lr = LearningRateAt(step);
        Model.Train();
        int[] ids = Sampler.NextBatch(t.BatchSize);
        double loss, accuracy;
        using (Scope.Begin())
        {
            var (images, labels) = Batch(Data.Train, ids);
            if (t.AugmentShift > 0 || t.AugmentFlip)
            {
                var moves = Tensor.FromArray(Device, AugmentMoves(t.Seed, step, ids.Length, t.AugmentShift, t.AugmentFlip), ids.Length, 3);
                int size = Config.Model.ImageSize;
                images = Ops.ShiftFlip(images, size, size, moves, Data.Blank);
            }
            var (l, logits) = Model.Loss(images, labels, t.LabelSmoothing);
            l.Backward();
            loss = l.Item();
            accuracy = Correct(logits.ToArray(), Data.Train.Labels, ids, Config.Model.Classes, null) / (double)ids.Length;
        }
        float norm = t.ClipNorm > 0 ? GradClip.ClipGlobalNorm(Model.Parameters(), t.ClipNorm) : 0f;
        if (!double.IsFinite(loss) || !float.IsFinite(norm))
        {
            // Not applied: the parameters and the optimizer's state stay those after the step before.
            Model.ZeroGrad();
            throw new TrainingDivergedException(!double.IsFinite(loss) ? $"the loss of step {step} is {TrainingDivergedException.Words(loss)}"
                : $"the gradient norm of step {step} is {TrainingDivergedException.Words(norm)}", step);
        }
        Optimizer.LearningRate = (float)lr;
        Optimizer.Step();
        Model.ZeroGrad();
        StepCount = step;
        return new VisionStepResult(step, loss, accuracy, lr, ids.Length / Math.Max(1e-9, clock.Elapsed.TotalSeconds));
    }

    /// <summary>
    /// The augmentation moves <c>(dy, dx, flip)</c> of the <paramref name="batch"/> images of step <paramref name="step"/>, row-major
    /// <c>[batch, 3]</c> for <see cref="Ops.ShiftFlip"/>: shifts uniform in <c>-shift..shift</c>, flip 1 with probability 1/2 when
    /// <paramref name="flip"/>. A function of (seed, step) alone, so a resumed run draws the same moves as an unbroken one.
    /// </summary>
    public static int[] AugmentMoves(ulong seed, int step, int batch, int shift, bool flip)
    {
        var moves = new int[3 * batch];
        ulong s = (seed * 0x9E3779B97F4A7C15UL) ^ ((ulong)step * 0xD1B54A32D192ED03UL) ^ 0xA0761D6478BD642FUL;
        for (int i = 0; i < batch; i++)
        {
            moves[3 * i] = shift > 0 ? (int)(BatchSampler.Next(ref s) % (ulong)(2 * shift + 1)) - shift : 0;
            moves[3 * i + 1] = shift > 0 ? (int)(BatchSampler.Next(ref s) % (ulong)(2 * shift + 1)) - shift : 0;
            moves[3 * i + 2] = flip ? (int)(BatchSampler.Next(ref s) & 1) : 0;
        }
        return moves;
    }

    (Tensor Images, Tensor Labels) Batch(ImageSplit split, int[] ids)
    {
        var images = Tensor.FromArray(Device, Data.Batch(split, ids), ids.Length, split.Size);
        var labels = Tensor.FromArray(Device, ids.Select(i => (int)split.Labels[i]).ToArray(), ids.Length);
        return (images, labels);
    }

    // Counts argmax(logits row) == label (ties toward the smaller class), filling the confusion matrix when given.
    static int Correct(float[] logits, byte[] labels, int[] ids, int classes, long[,]? confusion)
    {
        int correct = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            int best = 0;
            for (int c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
            int truth = labels[ids[i]];
            if (best == truth) correct++;
            if (confusion != null) confusion[truth, best]++;
        }
        return correct;
    }

    /// <summary>
    /// Loss, accuracy, confusion matrix and PEER expert usage over every image of <paramref name="split"/>, in evaluation mode
    /// without gradients; every module is left in the mode it was in. With <paramref name="trace"/>, each batch is announced to it
    /// (sample = the image's index in the split, position = its patch), so it records every retrieval.
    /// </summary>
    /// <param name="split">The images (the data's validation or test split, or any other of the same size).</param>
    /// <param name="trace">A trace attached to this model's PEER layers, or null.</param>
    /// <param name="progress">Called after each batch with the images done and the total.</param>
    /// <param name="batch">Images per forward (0: 500).</param>
    /// <param name="flip">Score each image by the mean logits of it and its left-right mirror (both passes count towards the expert
    /// usage); null: as <see cref="VisionTrainConfig.EvalFlip"/> says, and the images alone when tracing (a trace records one
    /// pass over the images).</param>
    /// <exception cref="ArgumentException">An empty split, or <paramref name="flip"/> true with a trace.</exception>
    public VisionEvalResult Evaluate(ImageSplit split, RetrievalTrace? trace = null, Action<int, int>? progress = null, int batch = 0, bool? flip = null)
    {
        ArgumentNullException.ThrowIfNull(split);
        Check.That(split.Count > 0, nameof(split), "no images", "at least one image");
        Check.That(flip != true || trace is null, nameof(flip), flip, "false or null with a retrieval trace, which records one pass over the images");
        bool mirror = flip ?? (Config.Train.EvalFlip && trace is null);
        batch = batch > 0 ? batch : 500;
        int classes = Config.Model.Classes;
        var peers = Model.PeerLayers().ToArray();
        var usage = peers.Select(p => new ExpertUsage(Device, p.Layer.Options.Experts)).ToArray();
        var confusion = new long[classes, classes];
        double lossSum = 0;
        int correct = 0;
        using var mode = new EvalMode(Model);
        try
        {
            for (int i = 0; i < peers.Length; i++) peers[i].Layer.Usage = usage[i];
            using var noGrad = Device.Tape.NoGrad();
            for (int first = 0; first < split.Count; first += batch)
            {
                int n = Math.Min(batch, split.Count - first);
                int[] ids = Enumerable.Range(first, n).ToArray();
                trace?.BeginBatch(first, n, Config.Model.Tokens);
                using (Scope.Begin())
                {
                    var (images, labels) = Batch(split, ids);
                    var (loss, logits) = mirror ? MirrorAveraged(images, labels) : Model.Loss(images, labels);
                    lossSum += loss.Item() * n;
                    correct += Correct(logits.ToArray(), split.Labels, ids, classes, confusion);
                }
                progress?.Invoke(first + n, split.Count);
            }
            var layers = peers.Select((p, i) =>
            {
                var stats = usage[i].Compute();
                return new LayerUsage(p.Name, usage[i].Accumulated.ToArray(), stats.Usage, stats.Unevenness);
            }).ToArray();
            return new VisionEvalResult(lossSum / split.Count, (double)correct / split.Count, confusion, layers) { Images = split.Count, FlipAveraged = mirror };
        }
        finally
        {
            foreach (var (_, layer) in peers) layer.Usage = null;
            foreach (var u in usage) u.Dispose();
        }
    }

    // The cross-entropy of the mean logits of the images and their left-right mirrors, and those logits.
    (Tensor Loss, Tensor Logits) MirrorAveraged(Tensor images, Tensor labels)
    {
        int n = images.Shape[0], size = Config.Model.ImageSize;
        var moves = new int[3 * n];
        for (int i = 0; i < n; i++) moves[3 * i + 2] = 1;
        var mirrored = Ops.ShiftFlip(images, size, size, Tensor.FromArray(Device, moves, n, 3), Data.Blank);
        var logits = Ops.Scale(Ops.Add(Model.Forward(images), Model.Forward(mirrored)), 0.5f);
        return (Ops.CrossEntropy(logits, labels), logits);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Optimizer.Dispose();
        Model.Dispose();
    }
}
