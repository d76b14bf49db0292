// `peer sweep`: builds an experiment's variants (SweepPlan), trains those not yet finished in --out
// (SweepRunner; finished ones are skipped, interrupted ones resume from their checkpoint) and writes
// results.csv, results.md and the plots. Ctrl+C or SIGTERM saves the running variant's checkpoint and
// exits with code 130; rerunning the same command continues.
using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Peer.Training;

static class SweepCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken interrupt)
    {
        var experiment = new Option<string>("--experiment") { Description = "isoflop (dense, MoE, PKM, PEER at equal FLOPs), experts (PEER's N with and without query BatchNorm) or active (PEER's h and k).", Required = true };
        experiment.AcceptOnlyFromAmong(SweepSettings.Experiments);
        var budget = new Option<double[]>("--budget") { Description = "Training FLOP budget of each variant (repeatable, e.g. --budget 5e10 --budget 1.5e11); default: the experiment's.", AllowMultipleArgumentsPerToken = true };
        var corpus = new Option<string>("--corpus") { Description = "A UTF-8 text file or a folder of *.txt files (default: the built-in corpus)." };
        var outDir = new Option<string>("--out") { Description = "Sweep folder (default runs/sweep-<experiment>[-quick]); rerunning with the same folder resumes." };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default auto).", DefaultValueFactory = _ => "auto" };
        var seeds = new Option<int>("--seeds") { Description = "Seeds per variant (default 1).", DefaultValueFactory = _ => 1 };
        var quick = new Option<bool>("--quick") { Description = "The reduced experiment: fewer, smaller variants, context 32, a smaller default budget." };
        var list = new Option<bool>("--list") { Description = "Print the variants (steps, tokens, FLOPs) and exit without training." };
        var cmd = new Command("sweep", "Train an experiment's model variants at given FLOP budgets; writes results.csv, results.md and PNG plots.")
        {
            experiment, budget, corpus, outDir, device, seeds, quick, list,
        };
        cmd.SetAction(r => PeerCli.Guard(error, () =>
        {
            var settings = new SweepSettings
            {
                Experiment = r.GetValue(experiment)!, Budgets = r.GetValue(budget) ?? [], Seeds = r.GetValue(seeds),
                Quick = r.GetValue(quick), Corpus = r.GetValue(corpus), Device = r.GetValue(device)!,
            };
            settings.Validate();
            if (settings.Corpus != null) Corpus.Load(settings.Corpus); // a bad path fails before any training
            string dir = Path.GetFullPath(r.GetValue(outDir) ?? Path.Combine("runs", $"sweep-{settings.Experiment}{(settings.Quick ? "-quick" : "")}"));
            using var dev = PeerCli.OpenDevice(settings.Device);
            var variants = SweepPlan.Build(dev, settings);
            foreach (var v in variants)
                MemoryEstimate.Require(v.Config, Corpus.BytesOnDisk(v.Config.Train.Corpus), MemoryEstimate.AvailableBytes(dev),
                    dev.IsCpu ? "the CPU accelerator" : dev.Name, host: dev.IsCpu, resume: true);
            if (r.GetValue(list))
            {
                foreach (var v in variants)
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{v.Name,-32} A {v.Cost.ForwardMacsPerToken,10:N0} MACs/token  params {v.Cost.TotalParameters,10:N0}  steps {v.Config.Train.Steps,6}  tokens {(long)v.Config.Train.Steps * v.TokensPerStep,10:N0}  FLOPs {v.SpentFlops:G3}"));
                return 0;
            }
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(interrupt);
            void OnSignal(PosixSignalContext context)
            {
                context.Cancel = !cts.IsCancellationRequested; // a second signal ends the process at once
                cts.Cancel();
            }
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
            using var sweepLock = RunLock.Acquire(dir); // one sweep per folder: a second is refused while this one runs
            RunFolder.RemoveTemporaries(dir);
            output.WriteLine($"sweep {settings.Experiment}{(settings.Quick ? " (quick)" : "")}: {variants.Count} variants in {dir} on {dev.Name}");
            var results = new SweepRunner(dev, dir, output, cts.Token).Run(variants);
            if (results is null)
            {
                output.WriteLine($"interrupted: finished variants are recorded in {dir}; rerun the same command to continue");
                return PeerCli.InterruptedExit;
            }
            output.WriteLine($"done: results.csv, results.md and plots in {dir}");
            return 0;
        }));
        return cmd;
    }
}
