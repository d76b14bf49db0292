// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then
// the raw little-endian data; offsets are relative to the start of the data and tile it contiguously.
// Writes go to a temporary file in the target folder and are renamed over the target when complete.
// Reads validate the whole header against the file's length before any tensor data is allocated.
using System.Runtime.InteropServices;
using ILGPU.Runtime;
using System.Text;
using System.Text.Json;

namespace Peer.IO;

/// <summary>Element types of safetensors data that Peer reads and writes.</summary>
public enum SafeDType
{
    /// <summary>32-bit IEEE float ("F32").</summary>
    F32,
    /// <summary>64-bit IEEE float ("F64").</summary>
    F64,
    /// <summary>32-bit signed integer ("I32").</summary>
    I32,
    /// <summary>64-bit signed integer ("I64").</summary>
    I64,
}

/// <summary>One tensor of a safetensors file as its header describes it.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first (empty for a scalar).</param>
/// <param name="Begin">First byte, relative to the start of the data buffer.</param>
/// <param name="End">One past the last byte, relative to the start of the data buffer.</param>
public sealed record SafeTensorInfo(string Name, SafeDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements: the product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount => SafeTensors.Numel(Shape);
}

/// <summary>A tensor held on the host as raw little-endian bytes, ready to write.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Bytes">The data: product(Shape) * size of DType bytes.</param>
public sealed record SafeTensorEntry(string Name, SafeDType DType, long[] Shape, byte[] Bytes);

/// <summary>A tensor written by a callback that streams its raw little-endian bytes (for tensors assembled while writing, e.g. gathered
/// from several processes block by block).</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="WriteData">Writes exactly product(Shape) * size of DType bytes to the stream.</param>
public sealed record SafeTensorSource(string Name, SafeDType DType, long[] Shape, Action<Stream> WriteData);

/// <summary>A set of host tensors and metadata to write with <see cref="SafeTensors.Write(string, SafeTensorFile)"/>.</summary>
public sealed class SafeTensorFile
{
    readonly List<SafeTensorEntry> entries = new();

    /// <summary>The tensors, in the order they were added (and will be laid out).</summary>
    public IReadOnlyList<SafeTensorEntry> Entries => entries;

    /// <summary>String metadata written under <c>__metadata__</c>.</summary>
    public Dictionary<string, string> Metadata { get; } = new();

    /// <summary>Adds raw bytes of the given type and shape.</summary>
    /// <exception cref="ArgumentException">The name is empty, reserved or taken, a dimension is negative, or the byte count is not product(shape) * element size.</exception>
    public void Add(string name, SafeDType dtype, long[] shape, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(bytes);
        SafeTensors.CheckName(name, entries.Select(e => e.Name));
        Check.That(shape.All(s => s >= 0), nameof(shape), "[" + string.Join(", ", shape) + "]", "non-negative dimensions");
        long expected = SafeTensors.Numel(shape) * SafeTensors.SizeOf(dtype);
        Check.That(bytes.LongLength == expected, nameof(bytes), $"{bytes.LongLength} bytes", $"{expected} bytes for {dtype} of shape [{string.Join(", ", shape)}]");
        entries.Add(new SafeTensorEntry(name, dtype, (long[])shape.Clone(), bytes));
    }

    /// <summary>Adds float32 data of the given shape (a 1-D shape of the array's length when none is given).</summary>
    public void Add(string name, float[] data, params long[] shape) => AddTyped<float>(name, SafeDType.F32, data, shape);
    /// <summary>Adds float64 data of the given shape (a 1-D shape of the array's length when none is given).</summary>
    public void Add(string name, double[] data, params long[] shape) => AddTyped<double>(name, SafeDType.F64, data, shape);
    /// <summary>Adds int32 data of the given shape (a 1-D shape of the array's length when none is given).</summary>
    public void Add(string name, int[] data, params long[] shape) => AddTyped<int>(name, SafeDType.I32, data, shape);
    /// <summary>Adds int64 data of the given shape (a 1-D shape of the array's length when none is given).</summary>
    public void Add(string name, long[] data, params long[] shape) => AddTyped<long>(name, SafeDType.I64, data, shape);

    void AddTyped<T>(string name, SafeDType dtype, T[] data, long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(data);
        SafeTensors.RequireLittleEndian();
        if (shape.Length == 0) shape = [data.LongLength];
        Add(name, dtype, shape, MemoryMarshal.AsBytes(data.AsSpan()).ToArray());
    }
}

/// <summary>Reads and writes the safetensors format.</summary>
public static class SafeTensors
{
    /// <summary>Largest header accepted when reading (as the reference implementation: 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Key of the string-to-string metadata object in the header.</summary>
    public const string MetadataKey = "__metadata__";

    const int CopyChunk = 1 << 22; // elements per device-to-host copy when writing tensors

    /// <summary>Bytes per element of <paramref name="dtype"/>.</summary>
    public static int SizeOf(SafeDType dtype) => dtype is SafeDType.F32 or SafeDType.I32 ? 4 : 8;

    /// <summary>
    /// Writes device tensors (F32 as "F32", I32 as "I32") and optional metadata to <paramref name="path"/>, atomically:
    /// the file is written to a temporary file in the same folder, flushed to disk, then moved over <paramref name="path"/>.
    /// On any failure the temporary file is deleted and an existing file at <paramref name="path"/> is left unchanged.
    /// </summary>
    /// <exception cref="ArgumentException">A name is empty, repeated or <c>__metadata__</c>.</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    public static void Write(string path, IEnumerable<(string Name, Tensor T)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        RequireLittleEndian();
        var list = new List<(string Name, Tensor T)>();
        foreach (var (name, t) in tensors)
        {
            ArgumentNullException.ThrowIfNull(t, name);
            CheckName(name, list.Select(e => e.Name));
            Check.Alive(t, name);
            list.Add((name, t));
        }
        var items = list.Select(e => new Item(e.Name, e.T.DType == DType.F32 ? SafeDType.F32 : SafeDType.I32,
            e.T.Shape.Select(s => (long)s).ToArray(), 4L * e.T.Length, s => CopyTensor(e.T, s))).ToList();
        WriteItems(path, items, metadata);
    }

    /// <summary>Writes host tensors and their metadata to <paramref name="path"/>, atomically (see <see cref="Write(string, IEnumerable{ValueTuple{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>).</summary>
    public static void Write(string path, SafeTensorFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var items = file.Entries.Select(e => new Item(e.Name, e.DType, e.Shape, e.Bytes.LongLength, s => s.Write(e.Bytes))).ToList();
        WriteItems(path, items, file.Metadata);
    }

    /// <summary>Writes tensors whose bytes their callbacks stream, with optional metadata, to <paramref name="path"/>, atomically (see
    /// <see cref="Write(string, IEnumerable{ValueTuple{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>).</summary>
    /// <exception cref="ArgumentException">A name is empty, repeated or <c>__metadata__</c>, or a dimension is negative.</exception>
    /// <exception cref="InvalidOperationException">A callback wrote another number of bytes than its shape says.</exception>
    public static void Write(string path, IEnumerable<SafeTensorSource> sources, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(sources);
        RequireLittleEndian();
        var items = new List<Item>();
        foreach (var src in sources)
        {
            ArgumentNullException.ThrowIfNull(src);
            CheckName(src.Name, items.Select(i => i.Name));
            Check.That(src.Shape.All(x => x >= 0), nameof(sources), "[" + string.Join(", ", src.Shape) + "]", "non-negative dimensions");
            items.Add(new Item(src.Name, src.DType, (long[])src.Shape.Clone(), Numel(src.Shape) * SizeOf(src.DType), src.WriteData));
        }
        WriteItems(path, items, metadata);
    }

    /// <summary>A source that writes device tensor <paramref name="t"/> (F32 as "F32", I32 as "I32"), for
    /// <see cref="Write(string, IEnumerable{SafeTensorSource}, IReadOnlyDictionary{string, string}?)"/>.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public static SafeTensorSource Source(string name, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        Check.Alive(t, name);
        return new SafeTensorSource(name, t.DType == DType.F32 ? SafeDType.F32 : SafeDType.I32, t.Shape.Select(s => (long)s).ToArray(), s => CopyTensor(t, s));
    }

    /// <summary>
    /// Opens a safetensors file and validates its header: the header length, the JSON, every entry's dtype, shape and
    /// offsets, and that the offsets tile the data buffer exactly. Tensor data is read on request.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is damaged or hostile; the message says what is wrong.</exception>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    public static SafeTensorReader Read(string path) => new(path);

    /// <summary>Converts float64 values to float32, refusing finite values outside the float32 range.</summary>
    /// <exception cref="OverflowException">A finite value exceeds ±<see cref="float.MaxValue"/>; the message names <paramref name="what"/> and the index.</exception>
    public static float[] ToFloats(double[] values, string what = "values")
    {
        ArgumentNullException.ThrowIfNull(values);
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            double v = values[i];
            if (double.IsFinite(v) && Math.Abs(v) > float.MaxValue)
                throw new OverflowException($"{what}[{i}] = {v}: expected a value within the float32 range ±{float.MaxValue}.");
            result[i] = (float)v;
        }
        return result;
    }

    /// <summary>Converts int64 values to int32, refusing values outside the int32 range.</summary>
    /// <exception cref="OverflowException">A value is outside [int.MinValue, int.MaxValue]; the message names <paramref name="what"/> and the index.</exception>
    public static int[] ToInts(long[] values, string what = "values")
    {
        ArgumentNullException.ThrowIfNull(values);
        var result = new int[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            long v = values[i];
            if (v < int.MinValue || v > int.MaxValue)
                throw new OverflowException($"{what}[{i}] = {v}: expected a value within the int32 range [{int.MinValue}, {int.MaxValue}].");
            result[i] = (int)v;
        }
        return result;
    }

    internal static long Numel(long[] shape)
    {
        long n = 1;
        foreach (long s in shape) n = checked(n * s);
        return n;
    }

    internal static string DTypeName(SafeDType d) => d.ToString();

    internal static bool TryParseDType(string s, out SafeDType d)
    {
        switch (s)
        {
            case "F32": d = SafeDType.F32; return true;
            case "F64": d = SafeDType.F64; return true;
            case "I32": d = SafeDType.I32; return true;
            case "I64": d = SafeDType.I64; return true;
            default: d = default; return false;
        }
    }

    internal static void CheckName(string name, IEnumerable<string> taken)
    {
        Check.That(!string.IsNullOrEmpty(name) && name != MetadataKey, nameof(name), name, $"a non-empty tensor name other than '{MetadataKey}'");
        Check.That(!taken.Contains(name), nameof(name), name, "a name not already used in this file");
    }

    internal static void RequireLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; this big-endian host is not supported.");
    }

    sealed record Item(string Name, SafeDType DType, long[] Shape, long Bytes, Action<Stream> WriteData);

    static void WriteItems(string path, List<Item> items, IReadOnlyDictionary<string, string>? metadata)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        byte[] header = BuildHeader(items, metadata);
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        string temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Span<byte> length = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                foreach (var item in items)
                {
                    long before = stream.Position;
                    item.WriteData(stream);
                    if (stream.Position - before != item.Bytes)
                        throw new InvalidOperationException($"Tensor '{item.Name}' wrote {stream.Position - before} bytes: expected {item.Bytes}.");
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    static byte[] BuildHeader(List<Item> items, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (k, v) in metadata)
                {
                    ArgumentNullException.ThrowIfNull(v, k);
                    json.WriteString(k, v);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var item in items)
            {
                json.WriteStartObject(item.Name);
                json.WriteString("dtype", DTypeName(item.DType));
                json.WriteStartArray("shape");
                foreach (long s in item.Shape) json.WriteNumberValue(s);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + item.Bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += item.Bytes;
            }
            json.WriteEndObject();
        }
        // Pad with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
        int padded = (int)((buffer.Length + 7) / 8 * 8);
        while (buffer.Length < padded) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    static void CopyTensor(Tensor t, Stream stream)
    {
        int n = t.Length;
        if (n == 0) return;
        int chunk = Math.Min(n, CopyChunk);
        if (t.DType == DType.F32)
        {
            var host = new float[chunk];
            for (int off = 0; off < n; off += chunk)
            {
                int m = Math.Min(chunk, n - off);
                t.View.SubView(off, m).CopyToCPU(host.AsSpan(0, m)); // the span overload pins the array; ref host[0] would not
                stream.Write(MemoryMarshal.AsBytes(host.AsSpan(0, m)));
            }
        }
        else
        {
            var host = new int[chunk];
            for (int off = 0; off < n; off += chunk)
            {
                int m = Math.Min(chunk, n - off);
                t.IntView.SubView(off, m).CopyToCPU(host.AsSpan(0, m));
                stream.Write(MemoryMarshal.AsBytes(host.AsSpan(0, m)));
            }
        }
    }
}
