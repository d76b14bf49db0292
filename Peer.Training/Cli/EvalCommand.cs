// `peer eval` and `peer generate`: load a run's checkpoint and report validation loss and perplexity on the
// whole validation split (or a sample of windows) beside the n-gram baselines on the same windows, and
// expert usage; or sample a continuation of a prompt.
using System.CommandLine;
using Spectre.Console;

namespace Peer.Training;

static class EvalCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A run folder (or a checkpoint folder inside it).", Required = true };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default: the run's)." };
        var windows = new Option<int?>("--windows") { Description = "Evaluate only this many windows spread over the validation split (default: the whole split)." };
        var cmd = new Command("eval", "Evaluate a checkpoint on its run's validation split: loss, perplexity, PEER expert usage.") { checkpoint, device, windows };
        cmd.SetAction(r => PeerCli.Guard(error, () =>
        {
            if (r.GetValue(windows) is < 1) throw new ConfigException($"--windows: {r.GetValue(windows)}; expected at least 1 window");
            var (state, _) = Checkpoint.ReadState(r.GetValue(checkpoint)!, withOptimizer: false);
            int? sample = r.GetValue(windows);
            var config = state.Config with { Train = state.Config.Train with { Device = r.GetValue(device) ?? state.Config.Train.Device, EvalWindows = sample ?? state.Config.Train.EvalWindows } };
            config.Validate();
            var data = Dataset.Create(Corpus.Load(config.Train.Corpus), Tokenizers.Create(config.Train.Tokenizer), config.Model.Context);
            using var dev = PeerCli.OpenDevice(config.Train.Device);
            using var trainer = Checkpoint.Load(dev, r.GetValue(checkpoint)!, data, config, withOptimizer: false);
            data.Baselines.CacheFile = RunFolder(r.GetValue(checkpoint)!) is { } run ? Path.Combine(run, "baselines.json") : null;
            var coverage = sample is null ? EvalCoverage.Whole : EvalCoverage.Sample;
            EvalResult result;
            if (EvalDisplay.Interactive(output))
            {
                EvalResult? done = null;
                EvalDisplay.Progress().Start(ctx =>
                    {
                        ProgressTask? task = null;
                        done = trainer.Evaluate(coverage, (n, count) =>
                        {
                            task ??= ctx.AddTask(coverage == EvalCoverage.Whole ? "whole validation split" : $"{count:N0} validation windows", maxValue: count);
                            task.Value = n;
                        });
                    });
                result = done!;
            }
            else result = trainer.Evaluate(coverage);
            string scope = coverage == EvalCoverage.Whole ? "the whole validation split" : "a sample of the validation split";
            output.WriteLine($"step {state.Step}  val loss {result.Loss:F4}  val ppl {result.Perplexity:F2}  on {scope} ({result.Tokens:N0} tokens in {result.Windows:N0} windows)");
            output.WriteLine($"baselines   {EvalDisplay.Baselines(data.UnigramEntropy(), result.Baselines)}");
            foreach (var layer in result.Experts)
                output.WriteLine($"{layer.Layer}: expert usage {layer.Usage:P2}  unevenness {layer.Unevenness:F4}");
            return 0;
        }));
        return cmd;
    }

    // The run folder of a --checkpoint path (itself, or the folder above checkpoints/), where baselines.json is cached; null for a lone checkpoint folder.
    static string? RunFolder(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (Checkpoint.Exists(full)) return full;
        string? parent = Path.GetDirectoryName(full);
        return parent != null && Path.GetFileName(parent) == "checkpoints" && Path.GetDirectoryName(parent) is { } run && Checkpoint.Exists(run) ? run : null;
    }
}

static class GenerateCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A run folder (or a checkpoint folder inside it).", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue.", DefaultValueFactory = _ => "The " };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "Draw only from the k most likely tokens; 0 means all.", DefaultValueFactory = _ => 40 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the draws.", DefaultValueFactory = _ => 1UL };
        var length = new Option<int>("--length") { Description = "Tokens to generate.", DefaultValueFactory = _ => 200 };
        var device = new Option<string>("--device") { Description = "cpu, cuda, opencl or auto (default: the run's)." };
        var cmd = new Command("generate", "Continue a prompt with a trained model.") { checkpoint, prompt, temperature, topK, seed, length, device };
        cmd.SetAction(r => PeerCli.Guard(error, () =>
        {
            if (r.GetValue(length) < 0) throw new ConfigException($"--length: {r.GetValue(length)} is negative; expected a token count");
            if (!(r.GetValue(temperature) >= 0 && float.IsFinite(r.GetValue(temperature))))
                throw new ConfigException($"--temperature: {r.GetValue(temperature)}; expected 0 (greedy) or a positive number");
            if (r.GetValue(topK) < 0) throw new ConfigException($"--top-k: {r.GetValue(topK)} is negative; expected 0 (all tokens) or a positive count");
            var (state, _) = Checkpoint.ReadState(r.GetValue(checkpoint)!, withOptimizer: false);
            var tokenizer = Tokenizers.Create(state.Config.Train.Tokenizer);
            string text = r.GetValue(prompt)!;
            int[] ids = tokenizer.Encode(text);
            if (ids.Length == 0) throw new ConfigException("--prompt: empty; pass --prompt TEXT");
            using var dev = PeerCli.OpenDevice(r.GetValue(device) ?? state.Config.Train.Device);
            var (model, _) = Checkpoint.LoadModel(dev, r.GetValue(checkpoint)!);
            using (model)
            {
                var generated = model.Generate(ids, r.GetValue(length), r.GetValue(temperature), r.GetValue(topK), r.GetValue(seed));
                output.WriteLine(text + tokenizer.Decode(generated));
            }
            return 0;
        }));
        return cmd;
    }
}
