// Peer.Bench: `dotnet run -c Release --project Peer.Bench -- [suites...] [--devices cpu,opencl,cuda|all] [--quick|--smoke] [--out DIR]`.
// Each suite measures one layer of the stack on each chosen device (beside plain-C# references or the naive
// design, run interleaved in the same process), prints its tables, and adds its figures to the run's results.
using Peer.Bench;

if (args.Length > 0 && args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(BenchOptions.Usage(Bench.All()));
    return 0;
}
BenchOptions options;
try { options = BenchOptions.Parse(args, Bench.All().Select(s => s.Name).ToArray()); }
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(BenchOptions.Usage(Bench.All()));
    return 1;
}
try { Bench.Run(options, args, Console.Out); }
catch (BenchCheckException e)
{
    Console.Error.WriteLine($"error: {e.Message}; no ratio against it is reported.");
    return 2;
}
Console.WriteLine($"results written to {Path.GetFullPath(options.Output)} (results.json, results.md, *.png)");
return 0;
