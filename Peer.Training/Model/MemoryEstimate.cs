// What a training run will hold in device memory, from its configuration alone (nothing is allocated): parameters
// and buffers, their gradients, AdamW's two moments, and the activations of one micro-batch, which the tape keeps
// until the backward walk frees them. The program compares the total with the device's memory before it loads the
// corpus or writes anything, and checks that no tensor would exceed the 2^31 - 1 elements a tensor can index.
// The activation counts follow the ops each block calls (LanguageModel and the feed-forward layers), rounded up;
// MemoryEstimateTests measures the device's peak on small configurations of every feed-forward kind and holds
// the estimate to an upper bound within a factor of UpperBoundFactor of it.
namespace Peer.Training;

/// <summary>Bytes a training run needs on its device, by part (see <see cref="Of"/>).</summary>
/// <param name="Parameters">Parameters and buffers.</param>
/// <param name="Gradients">Dense gradients, and row-sparse ones for the retrieval tables (rows one step can touch).</param>
/// <param name="OptimizerState">AdamW's first and second moments of every parameter.</param>
/// <param name="Activations">What one micro-batch's forward and backward hold at their peak.</param>
/// <param name="Host">Host memory beside the device's: the corpus text and its tokens (counted against the CPU accelerator's memory, which is the host's).</param>
public sealed record MemoryEstimate(double Parameters, double Gradients, double OptimizerState, double Activations, double Host)
{
    /// <summary>The most the estimate may exceed the measured peak of a training step on the configurations the tests measure.</summary>
    public const double UpperBoundFactor = 2;

    // The per-token counts below are rounded up op by op; this margin covers what they leave out (transient scratch
    // of a kernel, the order in which the backward walk frees and allocates).
    const double ActivationMargin = 1.25;

    /// <summary>Device bytes: parameters, gradients, optimizer state and activations.</summary>
    public double DeviceBytes => Parameters + Gradients + OptimizerState + Activations;

    /// <summary>Parameter and buffer elements of the model (equals the length of <see cref="Nn.Module.StateDict"/>'s tensors).</summary>
    public long ParameterElements { get; init; }

    /// <summary>Tensors of the run whose element count would pass <see cref="int.MaxValue"/>, each as a sentence naming the size and the
    /// settings to lower; empty when all fit.</summary>
    public IReadOnlyList<string> Oversized { get; init; } = [];

    /// <summary>The estimate of training <paramref name="config"/> on a corpus of <paramref name="corpusBytes"/> bytes of text.</summary>
    /// <param name="config">A validated configuration.</param>
    /// <param name="corpusBytes">Size of the corpus files (0 when unknown).</param>
    public static MemoryEstimate Of(RunConfig config, long corpusBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        var m = config.Model;
        var t = config.Train;
        double d = m.DModel, v = m.VocabSize, ctx = m.Context, f = m.HiddenWidth;
        double rows = (double)t.BatchSize * ctx;          // tokens of one micro-batch
        double accumulated = rows * t.Accumulation;       // tokens of one optimizer step
        var oversized = new List<string>();
        const string Batch = "batch_size (raise accumulation to keep the tokens per step) or context";
        void Fits(string what, double elements, string remedy)
        {
            if (elements > int.MaxValue) oversized.Add($"{what} = {(elements < 1e15 ? elements.ToString("N0") : elements.ToString("G3"))} elements, more than the {int.MaxValue:N0} one tensor can hold; lower {remedy}");
        }
        Fits("batch_size x (context + 1) tokens of a micro-batch", t.BatchSize * (ctx + 1), Batch);
        Fits("batch_size x context x vocab_size logits", rows * v, Batch);
        Fits("vocab_size x d_model token embeddings", v * d, "d_model (the vocabulary is the tokenizer's)");
        double positions = m.Positions == "learned" ? ctx * d : 0; // rotary positions have no table
        Fits("context x d_model position embeddings", positions, "context or d_model");
        Fits("eval_windows x (context + 1) validation tokens", (double)t.EvalWindows * (ctx + 1), "eval_windows");

        // Dense parameters shared by every block kind: embeddings, attention, norms, head.
        double dense = v * d + positions + m.Layers * (4 * d * d + 8 * d) + 2 * d + (m.TiedHead ? 0 : v * d);
        double buffers = 0, sparse = 0, sparseGrads = 0, transient = 0;
        // Per token of a micro-batch, in floats: embeddings (ids, two lookups, their sum), then the final norm, the
        // logits and cross-entropy with the logits' gradient, and per block the attention part (two norms with their
        // statistics, qkv and its permuted copy, q/k/v slices, the output, its permuted copy, projection, two residual sums).
        double perToken = 2 + 3 * d + d + 2 + 3 * v;
        foreach (var kind in m.BlockKinds())
        {
            perToken += 18 * d + m.Heads + 4 + (m.Positions == "rotary" ? 2 * d : 0); // rotary: turned copies of q and k
            switch (kind)
            {
                case "ffw":
                    dense += 2 * d * f + f + d;
                    perToken += 3 * f + 2 * d;                                 // fc1, activation, fc2 and the backward's hidden gradient
                    Fits("batch_size x context x ffw_hidden hidden activations", rows * f, "ffw_hidden, " + Batch);
                    break;
                case "peer":
                case "pkm":
                {
                    var p = kind == "pkm" ? m.Pkm : m.Peer;
                    double hq = (double)p.Heads * p.QueryDim, n = Math.Sqrt(p.Experts), hk = (double)p.Heads * p.TopK;
                    bool norm = p.QueryNorm != "none";
                    dense += hq * d + hq + (norm ? 2 * hq : 0);
                    if (p.QueryNorm == "batch") buffers += 2 * hq;
                    double table = kind == "pkm" ? 1 : 2;                      // values, or experts.down and experts.up
                    sparse += n * p.QueryDim + table * p.Experts * d;
                    // Row-sparse gradients hold at most the rows a step touches; merging micro-batches holds both sides and the result.
                    double touched = Math.Min(p.Experts, accumulated * hk), keyRows = Math.Min(n, accumulated * hk);
                    sparseGrads += (table * touched * (d + 1) + keyRows * (p.QueryDim + 2)) * (t.Accumulation > 1 ? 3 : 1);
                    // query, its norm (and statistics), k x k candidates, ids, scores, router weights and pre-activations, the
                    // output; the backward's coefficients and gradients. The sub-key scores are computed in blocks of about
                    // 2^22 per table (Ops.ProductKeyTopK), whatever the batch.
                    perToken += 3 * hq + 10 * hk + p.TopK * p.TopK + 3 * d;
                    transient = Math.Max(transient, 2 * Math.Min(rows * p.Heads, Math.Max(1, Math.Floor((1 << 22) / n))) * (n + p.QueryDim));
                    Fits($"{kind}.experts x d_model table", p.Experts * d, $"{kind}.experts or d_model");
                    Fits($"batch_size x context x {kind}.heads x {kind}.top_k^2 candidates", rows * hk * p.TopK, $"{kind}.heads, {kind}.top_k, " + Batch);
                    break;
                }
                default:
                {
                    var moe = m.Moe;
                    double e = moe.Experts, expert = 2 * d * f + f + d;
                    if (kind == "soft-moe")
                    {
                        double slots = e * moe.SlotsPerExpert;
                        dense += slots * d + e * expert;
                        perToken += 6 * slots + 3 * d;                         // logits, transposed, two softmaxes, their gradients
                        // Slots are per batch, not per token: the dispatched inputs, the experts' hidden activations, outputs.
                        perToken += slots * (3 * f + 4 * d) / Math.Max(1, rows);
                        Fits("batch_size x context x moe.experts x moe.slots_per_expert dispatch weights", rows * slots, "moe.experts, moe.slots_per_expert, " + Batch);
                    }
                    else
                    {
                        double perTokenSlots = moe.CapacityFactor * (kind == "moe-topk" ? moe.TopK : 1);
                        dense += d * e + e * expert;
                        // router probabilities and routing tables, the dispatched rows, the experts' hidden activations, the combination
                        perToken += 4 * e + perTokenSlots * (3 * f + 4 * d + 4) + 3 * d;
                        Fits("batch_size x context x moe.experts router probabilities", rows * e, "moe.experts, " + Batch);
                        Fits("batch_size x context x moe.capacity_factor x ffw_hidden expert activations", rows * perTokenSlots * f, "moe.capacity_factor, ffw_hidden, " + Batch);
                    }
                    break;
                }
            }
        }
        double parameters = dense + sparse;
        // An evaluation adds one usage accumulator of N floats per PEER layer.
        double usage = m.BlockKinds().Count(k => k == "peer") * (double)m.Peer.Experts;
        double textBytes = corpusBytes * 8.0;                               // UTF-16 text (2 per byte) and int tokens (4 per byte at most), with slack
        // The optimizer packs the dense parameters and their gradients into one buffer apiece at its first step (the parameter
        // arena), copying them while the unpacked ones still exist: for that moment both are held twice.
        return new MemoryEstimate(
            Parameters: 4 * (parameters + buffers + dense),
            Gradients: 4 * (2 * dense + sparseGrads),
            OptimizerState: 4 * 2 * parameters,
            Activations: 4 * (ActivationMargin * rows * perToken + transient + usage),
            Host: textBytes)
        {
            ParameterElements = (long)Math.Min(long.MaxValue, parameters + buffers),
            Oversized = oversized,
        };
    }

    /// <summary>The peak while a checkpoint is restored: parameters, optimizer state and the file's copy of it (no gradients or activations yet).</summary>
    public double ResumeBytes => Parameters + 2 * OptimizerState;

    /// <summary>
    /// Memory the device offers a run: on the CPU accelerator the host's available memory (MemAvailable of /proc/meminfo where
    /// there is one, never more than the runtime's limit for this process, which includes a container's); on a GPU its memory size.
    /// </summary>
    public static long AvailableBytes(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!device.IsCpu) return device.Accelerator.MemorySize;
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return MemAvailable() is long available ? Math.Min(available, limit) : limit;
    }

    static long? MemAvailable()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Replace("kB", "").Trim(), out long kb)) return kb * 1024;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not Linux, or not readable: the runtime's limit stands.
        }
        return null;
    }

    /// <summary>
    /// Refuses a run whose tensors would not fit one tensor's 2^31 - 1 elements, or whose estimate exceeds <paramref name="available"/>
    /// bytes of <paramref name="where"/>, with a message saying how much it needs, how much there is, and which settings to lower.
    /// </summary>
    /// <param name="config">The run.</param>
    /// <param name="corpusBytes">Size of the corpus files (counted on the CPU accelerator, whose memory is the host's).</param>
    /// <param name="available">Bytes the device offers (see <see cref="AvailableBytes"/>).</param>
    /// <param name="where">The device, as the message should name it.</param>
    /// <param name="host">Whether the device's memory is the host's (the CPU accelerator): then the corpus counts too.</param>
    /// <param name="resume">Whether the run starts by restoring a checkpoint (whose optimizer state is briefly held twice).</param>
    /// <exception cref="ConfigException">The run cannot fit.</exception>
    public static void Require(RunConfig config, long corpusBytes, long available, string where, bool host, bool resume)
    {
        var e = Of(config, corpusBytes);
        if (e.Oversized.Count > 0)
            throw new ConfigException($"memory: {e.Oversized[0]}");
        double need = Math.Max(e.DeviceBytes, resume ? e.ResumeBytes : 0) + (host ? e.Host : 0);
        if (need <= available) return;
        throw new ConfigException($"memory: this run needs about {Size(need)} on {where} (parameters {Size(e.Parameters)}, gradients {Size(e.Gradients)}, "
            + $"optimizer state {Size(e.OptimizerState)}, activations of one micro-batch {Size(e.Activations)}{(host && e.Host > 0 ? $", corpus {Size(e.Host)}" : "")}) "
            + $"but {Size(available)} are available; lower batch_size (raise accumulation to keep the tokens per step), context, d_model, layers or the experts");
    }

    static string Size(double bytes) => bytes >= 1 << 30 ? $"{bytes / (1 << 30):N1} GiB" : $"{bytes / (1 << 20):N1} MiB";
}
