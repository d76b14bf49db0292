// A corpus is text plus a name: the built-in .NET documentation prose, one UTF-8 file, or every *.txt
// file under a folder (ordinal order of relative paths, joined by newlines). Problems the user can fix
// (missing, empty, not UTF-8) are CorpusExceptions with one-line messages.
using System.Text;

namespace Peer.Training;

/// <summary>Training text and where it came from.</summary>
/// <param name="Name">The built-in corpus's name or the full path that was loaded.</param>
/// <param name="Text">The text.</param>
public sealed record Corpus(string Name, string Text)
{
    /// <summary>Loads the built-in corpus (<paramref name="path"/> null, empty or <c>dotnet-docs</c>), a UTF-8 text file, or a folder's *.txt files.</summary>
    /// <exception cref="CorpusException">The path does not exist, a file is not UTF-8, or the text is empty.</exception>
    public static Corpus Load(string? path)
    {
        if (string.IsNullOrWhiteSpace(path) || path == BuiltInCorpus.Name)
            return new Corpus(BuiltInCorpus.Name, BuiltInCorpus.Load());
        string full = Path.GetFullPath(path);
        string text;
        if (File.Exists(full)) text = ReadUtf8(full);
        else if (Directory.Exists(full))
        {
            var files = Directory.GetFiles(full, "*.txt", SearchOption.AllDirectories)
                .OrderBy(f => Path.GetRelativePath(full, f), StringComparer.Ordinal).ToArray();
            if (files.Length == 0) throw new CorpusException($"corpus: the folder {full} holds no *.txt files");
            long total = files.Sum(f => new FileInfo(f).Length);
            if (total > MaxBytes) throw new CorpusException($"corpus: the *.txt files under {full} hold {total:N0} bytes, more than the {MaxBytes:N0} one corpus can hold; pass a part of them");
            text = string.Join("\n", files.Select(f => new FileInfo(f).Length == 0 ? "" : ReadUtf8(f)));
        }
        else throw new CorpusException($"corpus: {full} does not exist");
        if (string.IsNullOrWhiteSpace(text)) throw new CorpusException($"corpus: {full} is empty");
        return new Corpus(full, text);
    }

    /// <summary>Bytes of text <see cref="Load"/> would read from <paramref name="path"/>, without reading it (0 for the built-in corpus or a missing path).</summary>
    public static long BytesOnDisk(string? path)
    {
        if (string.IsNullOrWhiteSpace(path) || path == BuiltInCorpus.Name) return 0;
        try
        {
            string full = Path.GetFullPath(path);
            if (File.Exists(full)) return new FileInfo(full).Length;
            if (Directory.Exists(full)) return Directory.GetFiles(full, "*.txt", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            // Load will say what is wrong with the path.
        }
        return 0;
    }

    /// <summary>The most text one corpus may hold: it is decoded into one .NET string (at most about 2^30 characters).</summary>
    public const long MaxBytes = 1L << 30;

    static string ReadUtf8(string file)
    {
        // A device or a pipe (/dev/zero, a FIFO) reports no length and never ends: only regular files with text are read.
        long length = new FileInfo(file).Length;
        if (length == 0) throw new CorpusException($"corpus: {file} is empty (or not a regular file)");
        if (length > MaxBytes) throw new CorpusException($"corpus: {file} holds {length:N0} bytes, more than the {MaxBytes:N0} one corpus can hold; pass a part of it");
        try
        {
            // Strict UTF-8 without encoding detection (a UTF-16 byte-order mark is an error, not a hint); a UTF-8 BOM is dropped.
            byte[] bytes = File.ReadAllBytes(file);
            int skip = bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes, skip, bytes.Length - skip);
        }
        catch (DecoderFallbackException)
        {
            throw new CorpusException($"corpus: {file} is not UTF-8 text");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CorpusException($"corpus: cannot read {file}: {e.Message}");
        }
    }
}
