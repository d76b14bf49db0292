// The profiler: while attached to a device (Device.Profile), every kernel launch (Runtime/DeviceKernels.cs) and every
// allocation, free, zero fill and host copy of tensor storage adds its time and one call to its op's row for the phase
// the work runs in (forward by default; the tape's backward walk and the optimizers mark theirs). The time between those
// records goes to a "(host)" row of the phase: op set-up, shape checks, the tape, the caller's own code. So the rows sum
// to the wall time profiled, and the shares to 100 %, as torch.profiler's key averages do for a step.
// A launch is timed until it finished: on the CPU accelerator a launch returns when its work is done; elsewhere the
// profiler synchronises the device after each launch (profiling then serialises the device, which is the point).
using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Peer;

/// <summary>The part of a training step work belongs to, as <see cref="Profiler"/> reports it.</summary>
public enum ProfilePhase
{
    /// <summary>Everything outside the other two phases: the forward pass, the loss, data handling.</summary>
    Forward,
    /// <summary>The tape's backward walk (<see cref="Tape.Backward(Tensor)"/>).</summary>
    Backward,
    /// <summary>Gradient clipping and the optimizer step.</summary>
    Optimizer,
}

/// <summary>One row of a profile: an op in one phase.</summary>
/// <param name="Op">The op: a kernel (<c>Launcher.Kernel</c>, e.g. <c>PeerExpert.Backward</c>), tensor storage's own work
/// (<c>Tensor.Allocate</c>, <c>Tensor.Free</c>, <c>Tensor.Zero</c>, <c>Tensor.ToHost</c>, <c>Tensor.FromHost</c>), or
/// <see cref="Profiler.HostRow"/> for the time between them.</param>
/// <param name="Phase">The phase it ran in.</param>
/// <param name="Calls">Launches (for a kernel) or calls.</param>
/// <param name="Time">Total time.</param>
/// <param name="Share">Fraction of the wall time profiled, in [0, 1]; the rows' shares sum to 1.</param>
public sealed record ProfileRow(string Op, ProfilePhase Phase, long Calls, TimeSpan Time, double Share)
{
    /// <summary>Whether the row is a kernel (not tensor storage's work or the host row).</summary>
    public bool IsKernel => Op != Profiler.HostRow && !Op.StartsWith("Tensor.", StringComparison.Ordinal);
}

/// <summary>
/// Time and calls per op and phase on one device, from <see cref="Device.Profile"/> until disposed (see the file's header).
/// Reading it (<see cref="Rows"/>, <see cref="Report"/>) works while attached and after.
/// </summary>
/// <remarks>Used from the thread that launches the device's work, as the tape is.</remarks>
public sealed class Profiler : IDisposable
{
    /// <summary>The name of the rows that hold the time between recorded ops.</summary>
    public const string HostRow = "(host)";

    const int Phases = 3;
    readonly Device device;
    long[] ticks = new long[64 * Phases], calls = new long[64 * Phases];
    readonly long[] hostTicks = new long[Phases];
    long last, wall;
    bool attached = true, disposed;

    internal Profiler(Device device)
    {
        this.device = device;
        last = Stopwatch.GetTimestamp();
    }

    /// <summary>The phase that work is recorded under now.</summary>
    public ProfilePhase Phase { get; private set; }

    /// <summary>Steps marked by <see cref="MarkStep"/>; the report gives per-step figures when there are any.</summary>
    public int Steps { get; private set; }

    /// <summary>Whether recording is paused (<see cref="Pause"/>).</summary>
    public bool IsPaused => !attached;

    /// <summary>Counts one step (the trainer and the bench's step runners call it at the end of each step).</summary>
    public void MarkStep()
    {
        if (attached) Steps++;
    }

    /// <summary>Records under <paramref name="phase"/> until the returned object is disposed, then under the phase before.</summary>
    public IDisposable Enter(ProfilePhase phase)
    {
        var scope = new PhaseScope(this, Phase);
        SetPhase(phase);
        return scope;
    }

    sealed class PhaseScope(Profiler profiler, ProfilePhase outer) : IDisposable
    {
        bool done;
        public void Dispose()
        {
            if (done) return;
            done = true;
            profiler.SetPhase(outer);
        }
    }

    void SetPhase(ProfilePhase phase)
    {
        if (attached) Flush(Stopwatch.GetTimestamp());
        Phase = phase;
    }

    // The time since the last record belongs to the current phase's host row.
    void Flush(long now)
    {
        hostTicks[(int)Phase] += now - last;
        wall += now - last;
        last = now;
    }

    /// <summary>Stops recording (the device then runs as without a profiler) until <see cref="Resume"/>: time in between is not counted.</summary>
    public void Pause()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!attached) return;
        Flush(Stopwatch.GetTimestamp());
        device.Detach(this);
        attached = false;
    }

    /// <summary>Records again after <see cref="Pause"/>.</summary>
    /// <exception cref="InvalidOperationException">Another profiler was attached to the device meanwhile.</exception>
    public void Resume()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (attached) return;
        if (!device.Attach(this))
            throw new InvalidOperationException($"Another profiler was attached to device '{device.Name}' while this one was paused.");
        attached = true;
        last = Stopwatch.GetTimestamp();
    }

    /// <summary>Forgets everything recorded so far (steps included) and starts the clock again.</summary>
    public void Reset()
    {
        Array.Clear(ticks);
        Array.Clear(calls);
        Array.Clear(hostTicks);
        wall = 0;
        Steps = 0;
        last = Stopwatch.GetTimestamp();
    }

    // Called around a recorded op: Begin closes the host interval, End adds the op's time.
    internal long Begin()
    {
        long now = Stopwatch.GetTimestamp();
        Flush(now);
        return now;
    }

    internal void End(int op, long start)
    {
        if (!device.IsCpu) device.Synchronize();
        long now = Stopwatch.GetTimestamp();
        int i = op * Phases + (int)Phase;
        if (i >= ticks.Length)
        {
            int size = Math.Max(2 * ticks.Length, (op + 1) * Phases);
            Array.Resize(ref ticks, size);
            Array.Resize(ref calls, size);
        }
        ticks[i] += now - start;
        calls[i]++;
        wall += now - start;
        last = now;
    }

    /// <summary>Wall time profiled so far (the sum of every row's time).</summary>
    public TimeSpan Elapsed
    {
        get
        {
            if (attached) Flush(Stopwatch.GetTimestamp());
            return Stopwatch.GetElapsedTime(0, wall);
        }
    }

    /// <summary>Every op and phase with at least one call, and each phase's host row, slowest first.</summary>
    public IReadOnlyList<ProfileRow> Rows()
    {
        if (attached) Flush(Stopwatch.GetTimestamp());
        double all = Math.Max(1, wall); // shares from the clock's own units: TimeSpans round each row
        var rows = new List<ProfileRow>();
        for (int i = 0; i < ticks.Length; i++)
        {
            if (calls[i] == 0) continue;
            rows.Add(new ProfileRow(device.OpName(i / Phases), (ProfilePhase)(i % Phases), calls[i], Stopwatch.GetElapsedTime(0, ticks[i]), ticks[i] / all));
        }
        for (int ph = 0; ph < Phases; ph++)
        {
            if (hostTicks[ph] == 0) continue;
            rows.Add(new ProfileRow(HostRow, (ProfilePhase)ph, 0, Stopwatch.GetElapsedTime(0, hostTicks[ph]), hostTicks[ph] / all));
        }
        rows.Sort((a, b) => b.Time.CompareTo(a.Time));
        return rows;
    }

    /// <summary>
    /// The profile as a text table, slowest first: op, phase, total ms, ms per step (with marked steps), share, calls, calls per
    /// step and µs per call, then one line per phase with its share. <paramref name="top"/> &gt; 0 keeps that many rows.
    /// </summary>
    public string Report(int top = 0)
    {
        var rows = Rows();
        var total = TimeSpan.FromTicks(rows.Sum(r => r.Time.Ticks));
        int steps = Steps;
        var inv = CultureInfo.InvariantCulture;
        long launches = rows.Where(r => r.IsKernel).Sum(r => r.Calls);
        var sb = new StringBuilder();
        sb.Append(inv, $"profile of {device.Name}: {total.TotalMilliseconds:F1} ms");
        if (steps > 0) sb.Append(inv, $" over {steps} steps ({total.TotalMilliseconds / steps:F2} ms/step, {(double)launches / steps:F0} kernel launches/step)");
        else sb.Append(inv, $", {launches} kernel launches");
        sb.AppendLine();
        int width = Math.Max(24, rows.Count == 0 ? 0 : rows.Max(r => r.Op.Length));
        sb.AppendLine(string.Format(inv, "{0}  {1,-9} {2,10} {3,9} {4,7} {5,9} {6,9} {7,10}",
            "op".PadRight(width), "phase", "total ms", "ms/step", "share", "calls", "calls/st", "us/call"));
        double per = Math.Max(1, steps);
        foreach (var r in top > 0 ? rows.Take(top) : rows)
        {
            string perCall = r.Calls > 0 ? (r.Time.TotalMicroseconds / r.Calls).ToString("F1", inv) : "";
            sb.AppendLine(string.Format(inv, "{0}  {1,-9} {2,10:F2} {3,9} {4,6:F1}% {5,9} {6,9} {7,10}",
                r.Op.PadRight(width), r.Phase.ToString().ToLowerInvariant(), r.Time.TotalMilliseconds,
                steps > 0 ? (r.Time.TotalMilliseconds / per).ToString("F3", inv) : "", 100 * r.Share,
                r.Op == HostRow ? "" : r.Calls.ToString(inv), r.Op == HostRow || steps == 0 ? "" : (r.Calls / per).ToString("F1", inv), perCall));
        }
        if (top > 0 && rows.Count > top) sb.AppendLine(inv, $"... {rows.Count - top} more rows");
        foreach (var ph in Enum.GetValues<ProfilePhase>())
        {
            var of = rows.Where(r => r.Phase == ph).ToList();
            if (of.Count == 0) continue;
            double ms = of.Sum(r => r.Time.TotalMilliseconds);
            sb.AppendLine(inv, $"{ph.ToString().ToLowerInvariant(),-9} {ms,10:F2} ms{(steps > 0 ? $" ({ms / per:F2} ms/step)" : "")}, {100 * of.Sum(r => r.Share):F1}% " +
                $"({100 * of.Where(r => r.Op == HostRow).Sum(r => r.Share):F1}% host), {of.Where(r => r.IsKernel).Sum(r => r.Calls)} launches");
        }
        sb.Append(inv, $"{HostRow}: time between recorded ops (op set-up, the tape, the caller's code). Tensor.*: storage allocation, free, zero fill, host copies.");
        return sb.ToString();
    }

    /// <summary>Detaches from the device; what was recorded stays readable.</summary>
    public void Dispose()
    {
        if (disposed) return;
        if (attached) Flush(Stopwatch.GetTimestamp());
        attached = false;
        disposed = true;
        device.Detach(this);
    }
}
