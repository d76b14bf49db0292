// Peer.Bench: `dotnet run -c Release --project Peer.Bench -- <suite> [options]`. A small dispatcher of suites
// (each measures one layer of the stack beside plain-C# references written here, never used by the
// framework); every suite prints tables and adds its rows to results.json.
using Peer.Bench;

var suites = new ISuite[] { new KernelsSuite() };

if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(BenchOptions.Usage(suites));
    return args.Length == 0 ? 1 : 0;
}
var suite = suites.FirstOrDefault(s => s.Name == args[0]);
if (suite is null)
{
    Console.Error.WriteLine($"unknown suite '{args[0]}'. {BenchOptions.Usage(suites)}");
    return 1;
}
BenchOptions options;
try { options = BenchOptions.Parse(args[1..]); }
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(BenchOptions.Usage(suites));
    return 1;
}

var results = new Results(suite.Name, args);
Console.WriteLine($"Peer.Bench {suite.Name}: {results.Machine}");
suite.Run(options, results);
results.Write(options.Output);
Console.WriteLine($"results written to {options.Output}");
return 0;
