// The library as packages and the program as a tool, as a newcomer meets them: `dotnet pack` of this clone into
// a temporary feed (from the build this test run uses), a fresh console project that references Peer.Training
// from that feed and runs the README's "Train from C#" block read from README.md itself, and the tool installed
// into a temporary --tool-path running the README's `peer` commands. Nothing is skipped: a missing SDK, feed or
// package fails the fixture.
using System.IO.Compression;
using System.Xml.Linq;
using Peer.Tests.Training;
using Peer.Training;

namespace Peer.Tests.Packaging;

[NonParallelizable]
public sealed class PackageTests
{
    /// <summary>The README line after which the test inserts its step count, so the example runs 3 steps, not 600.</summary>
    const string ConfigLine = "var config = RunConfig.Preset(\"tiny\");";
    const string StepsPatch = "config = config with { Train = config.Train with { Steps = 3, WarmupSteps = 1 } }; // inserted by PackageTests";

    static readonly TimeSpan Minutes5 = TimeSpan.FromMinutes(5);
    string work = "", feed = "", version = "";
    Dictionary<string, string> nugetEnv = new();

    [OneTimeSetUp]
    public void Pack()
    {
        work = Directory.CreateTempSubdirectory("peer-pack-test-").FullName;
        feed = Path.Combine(work, "feed");
        // A version no NuGet cache can hold yet, so the consumer and the tool get these packages, not older ones.
        version = $"0.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        Repo.RequireBuilt(Path.Combine(Repo.Root, "Peer.Core", "bin", Repo.Configuration, "net10.0", "Peer.Core.dll"), "Peer.Core");
        Repo.RequireBuilt(Path.Combine(Repo.Root, "Peer.Training", "bin", Repo.Configuration, "net10.0", "peer.dll"), "Peer.Training");
        // --no-build packs the build this test run uses; nuspecs and the tool's publish folder go to the temporary folder.
        var (exit, output, error) = Repo.Run(Repo.Dotnet,
            ["pack", "Peer.sln", "-c", Repo.Configuration, "--no-build", "--no-restore", "-o", feed, $"-p:PackageVersion={version}",
             $"-p:NuspecOutputPath={Path.Combine(work, "nuspec")}/", $"-p:PublishDir={Path.Combine(work, "publish")}/"],
            Repo.Root, Minutes5);
        Assert.That(exit, Is.EqualTo(0), $"dotnet pack failed:\n{Repo.Tail(output)}\n{error}");
        // Third-party packages come from the user's NuGet cache (a fallback folder, read only); Peer's from the feed,
        // extracted into a folder of this test, so nothing of this run stays in the user's cache.
        string userCache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(work, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources><add key="peer-test-feed" value="{feed}" /></packageSources>
              <fallbackPackageFolders><add key="user-cache" value="{userCache}" /></fallbackPackageFolders>
            </configuration>
            """);
        // Stops the search for Directory.Build.props and Directory.Packages.props above the temporary folder.
        File.WriteAllText(Path.Combine(work, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(work, "Directory.Packages.props"), "<Project />");
        nugetEnv = new() { ["NUGET_PACKAGES"] = Path.Combine(work, "packages") };
    }

    [OneTimeTearDown]
    public void Clean()
    {
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    }

    string Package(string id, string ext = "nupkg") => Path.Combine(feed, $"{id}.{version}.{ext}");

    [TestCase("Peer.Core", "lib/net10.0/Peer.Core.dll")]
    [TestCase("Peer.Training", "lib/net10.0/peer.dll")]
    public void LibraryPackagesCarryMetadataReadmeDocsAndSymbols(string id, string assembly)
    {
        using var zip = ZipFile.OpenRead(Package(id));
        var entries = zip.Entries.Select(e => e.FullName).ToArray();
        Assert.That(entries, Does.Contain(assembly).And.Contain(Path.ChangeExtension(assembly, ".xml")).And.Contain("README.md"));
        var meta = Nuspec(zip);
        Assert.That(meta("id"), Is.EqualTo(id));
        Assert.That(meta("version"), Is.EqualTo(version));
        Assert.That(meta("authors"), Is.Not.Empty);
        Assert.That(meta("description"), Has.Length.GreaterThan(40));
        Assert.That(meta("tags"), Does.Contain("peer"));
        Assert.That(meta("license"), Is.EqualTo("MIT"));
        Assert.That(meta("readme"), Is.EqualTo("README.md"));
        Assert.That(NuspecElement(zip, "repository")?.Attribute("type")?.Value, Is.EqualTo("git"));
        using (var readme = zip.GetEntry("README.md")!.Open())
            Assert.That(new StreamReader(readme).ReadToEnd(), Is.EqualTo(File.ReadAllText(Path.Combine(Repo.Root, "README.md"))));
        using var symbols = ZipFile.OpenRead(Package(id, "snupkg"));
        Assert.That(symbols.Entries.Select(e => e.FullName), Does.Contain(Path.ChangeExtension(assembly, ".pdb")));
        if (id == "Peer.Training")
            Assert.That(NuspecElement(zip, "dependencies")!.Descendants().Select(d => (string?)d.Attribute("id")), Does.Contain("Peer.Core"));
    }

    [Test]
    public void ToolPackageIsADotnetToolNamedPeer()
    {
        using var zip = ZipFile.OpenRead(Package("Peer.Tool"));
        Assert.That(Nuspec(zip)("id"), Is.EqualTo("Peer.Tool"));
        Assert.That(NuspecElement(zip, "packageTypes")!.Elements().Select(e => (string?)e.Attribute("name")), Does.Contain("DotnetTool"));
        using var settings = zip.GetEntry("tools/net10.0/any/DotnetToolSettings.xml")!.Open();
        var command = XDocument.Load(settings).Descendants("Command").Single();
        Assert.That(((string?)command.Attribute("Name"), (string?)command.Attribute("EntryPoint")), Is.EqualTo(("peer", "peer.dll")));
    }

    /// <summary>
    /// The README's "Train from C#" block, read from README.md, as the Program.cs of a new console project that
    /// references Peer.Training (and through it Peer.Core) from the feed: it builds, trains 3 steps (the line after
    /// <see cref="ConfigLine"/>), evaluates, samples and saves a checkpoint that Peer.Training reads back.
    /// </summary>
    [Test]
    public void ReadmeLibraryExampleRunsAgainstThePackages()
    {
        string code = ReadmeBlock("## Train from C#");
        Assert.That(code, Does.Contain(ConfigLine), $"the README's example must keep the line `{ConfigLine}` (the test inserts its step count after it)");
        string project = Path.Combine(work, "example");
        Directory.CreateDirectory(project);
        File.WriteAllText(Path.Combine(project, "Program.cs"), code.Replace(ConfigLine, ConfigLine + "\n" + StepsPatch));
        File.WriteAllText(Path.Combine(project, "Example.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Peer.Training" Version="{version}" />
              </ItemGroup>
            </Project>
            """);
        var (exit, output, error) = Repo.Run(Repo.Dotnet, ["run", "-c", "Release"], project, Minutes5, nugetEnv);
        Assert.That(exit, Is.EqualTo(0), $"the README example failed:\n{Repo.Tail(output)}\n{error}");
        Assert.That(output, Does.Contain("validation loss").And.Contain("expert usage"));
        Assert.That(output.Split('\n'), Has.Some.StartsWith("Returns the"));
        Assert.That(Checkpoint.ReadState(Path.Combine(project, "runs", "example")).State.Step, Is.EqualTo(3));
        Assert.That(Directory.EnumerateDirectories(Path.Combine(work, "packages")).Select(Path.GetFileName),
            Is.SupersetOf(new[] { "peer.core", "peer.training" }), "Peer's packages came from the test's feed");
    }

    /// <summary>
    /// The tool installed from the feed into a temporary --tool-path; the README's `peer` lines as written (with
    /// values for their placeholders, 3 steps and a slice of the corpus): help, devices, train, eval, generate, a sweep's plan.
    /// </summary>
    [Test]
    public void ToolInstallsAndRunsTheReadmeCommands()
    {
        string tools = Path.Combine(work, "tools");
        var (exit, output, error) = Repo.Run(Repo.Dotnet,
            ["tool", "install", "Peer.Tool", "--tool-path", tools, "--add-source", feed, "--version", version], work, Minutes5, nugetEnv);
        Assert.That(exit, Is.EqualTo(0), $"dotnet tool install failed:\n{output}\n{error}");
        string peer = Path.Combine(tools, OperatingSystem.IsWindows() ? "peer.exe" : "peer");
        (int, string, string) Peer(params string[] args) => Repo.Run(peer, args, work, Minutes5);

        var help = Peer("--help");
        Assert.That(help.Item1, Is.EqualTo(0), help.Item3);
        foreach (var command in new[] { "train", "eval", "generate", "devices", "layer", "sweep" })
            Assert.That(help.Item2, Does.Contain(command));
        var devices = Peer("devices");
        Assert.That(devices.Item1, Is.EqualTo(0), devices.Item3);
        Assert.That(devices.Item2.Split('\n')[0], Does.StartWith("cpu"));
        // A slice of the built-in corpus keeps the n-gram baselines' fit and the final evaluation short.
        string corpus = TrainingFixtures.WriteCorpus(work);
        var train = Peer("train", "--preset", "tiny", "--corpus", corpus, "--steps", "3", "--device", "cpu", "--out", "run");
        Assert.That(train.Item1, Is.EqualTo(0), train.Item2 + train.Item3);
        Assert.That(train.Item2, Does.Contain("step 3").And.Contain("val loss"));
        var eval = Peer("eval", "--checkpoint", "run");
        Assert.That(eval.Item1, Is.EqualTo(0), eval.Item2 + eval.Item3);
        Assert.That(eval.Item2, Does.StartWith("step 3").And.Contain("val loss").And.Contain("expert usage"));
        var generate = Peer("generate", "--checkpoint", "run", "--prompt", "Returns the", "--temperature", "0.8", "--top-k", "40", "--seed", "1");
        Assert.That(generate.Item1, Is.EqualTo(0), generate.Item2 + generate.Item3);
        Assert.That(generate.Item2, Does.Contain("Returns the"));
        var sweep = Peer("sweep", "--experiment", "isoflop", "--quick", "--list");
        Assert.That(sweep.Item1, Is.EqualTo(0), sweep.Item2 + sweep.Item3);
        Assert.That(sweep.Item2, Does.Contain("peer").And.Contain("ffw"));
    }

    /// <summary>The first ```csharp block after <paramref name="heading"/> in README.md.</summary>
    static string ReadmeBlock(string heading)
    {
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "README.md"));
        int h = readme.IndexOf("\n" + heading + "\n", StringComparison.Ordinal);
        Assert.That(h, Is.GreaterThanOrEqualTo(0), $"README.md has no heading '{heading}'");
        int start = readme.IndexOf("```csharp\n", h, StringComparison.Ordinal);
        int next = readme.IndexOf("\n## ", h + heading.Length + 1, StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThan(h).And.LessThan(next < 0 ? int.MaxValue : next), $"no ```csharp block under '{heading}'");
        start += "```csharp\n".Length;
        int end = readme.IndexOf("```", start, StringComparison.Ordinal);
        return readme[start..end];
    }

    static XElement? NuspecElement(ZipArchive zip, string name)
    {
        using var s = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open();
        return XDocument.Load(s).Descendants().FirstOrDefault(e => e.Name.LocalName == name);
    }

    static Func<string, string?> Nuspec(ZipArchive zip) => name => NuspecElement(zip, name)?.Value;
}
