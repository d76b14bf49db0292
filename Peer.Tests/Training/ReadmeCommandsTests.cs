// Every `peer …` the README shows must be a command line the program accepts: the command exists, each option it
// names is one of that command's options, and each choice it lists (`--preset tiny|small|paper`) is one the
// option's help offers. Read from README.md, checked against the parser's own help, in-process.
using System.Text.RegularExpressions;
using Peer.Training;

namespace Peer.Tests.Training;

public sealed class ReadmeCommandsTests
{
    static string[] ReadmeCommands()
    {
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "README.md"));
        return Regex.Matches(readme, "`(peer [^`]+)`").Select(m => m.Groups[1].Value.Replace("\\|", "|")).Distinct().ToArray();
    }

    static string Help(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        Assert.That(PeerCli.Run(args, output, error), Is.EqualTo(0), $"peer {string.Join(' ', args)}: {error}");
        return output.ToString();
    }

    [Test]
    public void EveryPeerLineInTheReadmeParses()
    {
        var lines = ReadmeCommands();
        var commands = lines.Select(l => l.Split(' ')[1]).Where(c => !c.StartsWith('<')).Distinct().ToArray();
        Assert.That(commands, Is.SupersetOf(new[] { "train", "eval", "generate", "layer", "devices", "sweep" }), "the README shows every command");
        foreach (var line in lines)
        {
            var words = line.Replace("[", " ").Replace("]", " ").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words[1].StartsWith('<')) continue; // `peer <command> --help`
            string help = Help(words[1], "--help");
            for (int i = 2; i < words.Length; i++)
            {
                if (!words[i].StartsWith("--", StringComparison.Ordinal)) continue;
                var option = Regex.Match(help, $@"^\s+(-\S+, )?{Regex.Escape(words[i])}\b(?!-).*$", RegexOptions.Multiline);
                Assert.That(option.Success, $"README: `{line}`: `peer {words[1]}` has no option {words[i]}");
                if (i + 1 < words.Length && words[i + 1].Contains('|'))
                    foreach (var choice in words[i + 1].Split('|'))
                        Assert.That(option.Value, Does.Match($@"\b{Regex.Escape(choice)}\b"), $"README: `{line}`: {words[i]} {choice} is not among the choices its help lists");
            }
        }
    }
}
