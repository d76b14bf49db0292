// The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): two zero bytes, a type
// byte (0x08 for unsigned bytes, the only type these datasets use), a byte giving the number of dimensions, each
// dimension as a big-endian int32, then the data in row-major order. Files may be gzipped (Debian ships them so); the
// reader recognises gzip by its magic bytes. Every header field and the exact data size are checked, so a truncated,
// padded or foreign file is refused with one line naming the file and what is wrong.
using System.Buffers.Binary;
using System.IO.Compression;

namespace Peer.Training;

/// <summary>A dataset file that cannot be used (missing, damaged, or of another shape); its message is one line.</summary>
public sealed class DatasetException(string message) : Exception(message);

/// <summary>An IDX array of unsigned bytes: its dimensions and its data, row-major.</summary>
/// <param name="Dims">The dimensions, outermost first.</param>
/// <param name="Data">The elements (the product of <paramref name="Dims"/> of them).</param>
public sealed record IdxArray(int[] Dims, byte[] Data);

/// <summary>Reads and writes IDX files of unsigned bytes (gzipped or not).</summary>
public static class Idx
{
    /// <summary>The IDX type code of unsigned bytes.</summary>
    public const byte UnsignedByte = 0x08;
    // Larger than any file of these datasets (47 MB for 60,000 images); guards the allocation against a forged header.
    const long MaxElements = 1L << 30;

    /// <summary>Reads <paramref name="path"/> and checks it holds <paramref name="rank"/> dimensions of unsigned bytes.</summary>
    /// <exception cref="DatasetException">The file is missing, unreadable, not gzip or IDX, of another type or rank, or its size
    /// differs from what its header announces.</exception>
    public static IdxArray Read(string path, int rank)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
            if (bytes.Length >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) bytes = Gunzip(bytes);
        }
        catch (InvalidDataException e)
        {
            throw new DatasetException($"data: {path} is not a valid gzip file ({e.Message})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DatasetException($"data: cannot read {path}: {e.Message}");
        }
        return Parse(bytes, rank, path);
    }

    /// <summary>Parses IDX bytes (already decompressed); <paramref name="name"/> names them in errors.</summary>
    /// <exception cref="DatasetException">As <see cref="Read"/>.</exception>
    public static IdxArray Parse(byte[] bytes, int rank, string name)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        if (bytes.Length < 4 || bytes[0] != 0 || bytes[1] != 0)
            throw new DatasetException($"data: {name} is not an IDX file (it does not start with two zero bytes)");
        if (bytes[2] != UnsignedByte)
            throw new DatasetException($"data: {name} holds IDX type 0x{bytes[2]:x2}; expected 0x08 (unsigned bytes)");
        if (bytes[3] != rank)
            throw new DatasetException($"data: {name} has {bytes[3]} dimensions; expected {rank}");
        int header = 4 + 4 * rank;
        if (bytes.Length < header)
            throw new DatasetException($"data: {name} is truncated ({bytes.Length} bytes, shorter than its {header}-byte header)");
        var dims = new int[rank];
        long count = 1;
        for (int i = 0; i < rank; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + 4 * i));
            if (dims[i] <= 0) throw new DatasetException($"data: {name} has dimension {i} = {dims[i]}; expected a positive size");
            count *= dims[i];
            if (count > MaxElements) throw new DatasetException($"data: {name} announces more than {MaxElements:N0} elements");
        }
        if (bytes.Length - header != count)
            throw new DatasetException($"data: {name} holds {bytes.Length - header:N0} data bytes; its header [{string.Join(", ", dims)}] announces {count:N0}"
                + (bytes.Length - header < count ? " (truncated)" : " (trailing bytes)"));
        return new IdxArray(dims, bytes[header..]);
    }

    /// <summary>The IDX bytes of <paramref name="array"/> (for tests and tools).</summary>
    /// <exception cref="ArgumentException">The data length differs from the product of the dimensions.</exception>
    public static byte[] Encode(IdxArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        long count = array.Dims.Aggregate(1L, (a, d) => a * d);
        Check.That(array.Data.Length == count, nameof(array), $"{array.Data.Length} data bytes", $"{count} (the product of the dimensions)");
        var bytes = new byte[4 + 4 * array.Dims.Length + array.Data.Length];
        bytes[2] = UnsignedByte;
        bytes[3] = (byte)array.Dims.Length;
        for (int i = 0; i < array.Dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), array.Dims[i]);
        array.Data.CopyTo(bytes, 4 + 4 * array.Dims.Length);
        return bytes;
    }

    /// <summary>Writes <paramref name="array"/> to <paramref name="path"/>, gzipped when <paramref name="gzip"/> (atomically).</summary>
    public static void Write(string path, IdxArray array, bool gzip)
    {
        byte[] bytes = Encode(array);
        AtomicFile.Write(path, tmp =>
        {
            using var file = File.Create(tmp);
            if (!gzip) file.Write(bytes);
            else
            {
                using var z = new GZipStream(file, CompressionLevel.Fastest);
                z.Write(bytes);
            }
        });
    }

    static byte[] Gunzip(byte[] bytes)
    {
        using var input = new GZipStream(new MemoryStream(bytes), CompressionMode.Decompress);
        using var output = new MemoryStream();
        // Copy in blocks with a cap, so that a forged stream cannot inflate without bound.
        var buffer = new byte[1 << 16];
        int n;
        while ((n = input.Read(buffer, 0, buffer.Length)) > 0)
        {
            output.Write(buffer, 0, n);
            if (output.Length > MaxElements + 64) throw new InvalidDataException($"it inflates past {MaxElements:N0} bytes");
        }
        return output.ToArray();
    }
}
