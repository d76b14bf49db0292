// Reading side of the safetensors format. The constructor parses and validates the whole header against the
// file's length (so a hostile header cannot make us allocate or seek past the end); tensor data is read
// on request, one tensor at a time, into an array of exactly the size the validated header states.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using ILGPU.Runtime;
using System.Text.Json;

namespace Peer.IO;

/// <summary>An open, validated safetensors file. Dispose it to close the file.</summary>
public sealed class SafeTensorReader : IDisposable
{
    readonly FileStream stream;
    readonly long dataStart;
    readonly Dictionary<string, SafeTensorInfo> infos = new();
    readonly List<string> names = new();
    readonly Dictionary<string, string> metadata = new();

    /// <summary>The file's path.</summary>
    public string Path { get; }
    /// <summary>Tensor names in header order.</summary>
    public IReadOnlyList<string> Names => names;
    /// <summary>The <c>__metadata__</c> strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata => metadata;
    /// <summary>Byte length of the data buffer that follows the header.</summary>
    public long DataBytes { get; }

    internal SafeTensorReader(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            long fileBytes = stream.Length;
            if (fileBytes < 8) throw Bad($"the file has {fileBytes} bytes: too short for the 8-byte header length");
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            ulong headerBytes = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerBytes > SafeTensors.MaxHeaderBytes)
                throw Bad($"header length {headerBytes} exceeds the limit of {SafeTensors.MaxHeaderBytes} bytes");
            if ((long)headerBytes > fileBytes - 8)
                throw Bad($"header length {headerBytes} runs past the end of the file ({fileBytes} bytes, {fileBytes - 8} after the length)");
            if (headerBytes < 2) throw Bad($"header length {headerBytes} is too short for a JSON object");
            var header = new byte[headerBytes];
            stream.ReadExactly(header);
            dataStart = 8 + (long)headerBytes;
            DataBytes = fileBytes - dataStart;
            ParseHeader(header);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">No tensor of that name.</exception>
    public SafeTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (infos.TryGetValue(name, out var info)) return info;
        string known = string.Join(", ", names.Take(8).Select(n => $"'{n}'")) + (names.Count > 8 ? $", ... ({names.Count} in all)" : "");
        throw new ArgumentException($"name = '{name}': expected a tensor of {Path} (it holds {(names.Count == 0 ? "none" : known)}).", nameof(name));
    }

    /// <summary>Whether the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => infos.ContainsKey(name);

    /// <summary>The data of an F32 tensor.</summary>
    /// <exception cref="ArgumentException">Unknown name, or the tensor is not F32.</exception>
    public float[] GetFloats(string name) => ReadArray<float>(name, SafeDType.F32);
    /// <summary>The data of an F64 tensor.</summary>
    /// <exception cref="ArgumentException">Unknown name, or the tensor is not F64.</exception>
    public double[] GetDoubles(string name) => ReadArray<double>(name, SafeDType.F64);
    /// <summary>The data of an I32 tensor.</summary>
    /// <exception cref="ArgumentException">Unknown name, or the tensor is not I32.</exception>
    public int[] GetInts(string name) => ReadArray<int>(name, SafeDType.I32);
    /// <summary>The data of an I64 tensor.</summary>
    /// <exception cref="ArgumentException">Unknown name, or the tensor is not I64.</exception>
    public long[] GetLongs(string name) => ReadArray<long>(name, SafeDType.I64);

    /// <summary>Columns <c>[colStart, colStart + colCount)</c> of an F32 tensor of rank 2 <c>[rows, cols]</c>, as <c>[rows, colCount]</c>
    /// row-major, read a block of rows at a time (so the whole tensor is never in memory).</summary>
    /// <exception cref="ArgumentException">Unknown name, not F32 of rank 2, or columns outside the tensor.</exception>
    public float[] GetFloatColumns(string name, int colStart, int colCount)
    {
        var info = GetInfo(name);
        Check.That(info.DType == SafeDType.F32 && info.Shape.Length == 2, nameof(name), name, $"an F32 tensor of rank 2 (it is {info.DType} [{string.Join(", ", info.Shape)}])");
        long rows = info.Shape[0], cols = info.Shape[1];
        Check.That(colStart >= 0 && colCount >= 0 && colStart + colCount <= cols, nameof(colStart), $"{colStart} + {colCount}", $"columns inside [0, {cols})");
        Check.That(rows * colCount <= Array.MaxLength, nameof(name), name, $"at most {Array.MaxLength} elements for a host array");
        SafeTensors.RequireLittleEndian();
        var result = new float[rows * colCount];
        int block = (int)Math.Max(1, Math.Min(rows, (1 << 22) / Math.Max(1, cols)));
        var buffer = new float[block * cols];
        for (long r = 0; r < rows; r += block)
        {
            int n = (int)Math.Min(block, rows - r);
            stream.Position = dataStart + info.Begin + r * cols * 4;
            stream.ReadExactly(MemoryMarshal.AsBytes(buffer.AsSpan(0, (int)(n * cols))));
            for (int i = 0; i < n; i++) Array.Copy(buffer, i * cols + colStart, result, (r + i) * colCount, colCount);
        }
        return result;
    }

    /// <summary>
    /// Copies a tensor to <paramref name="device"/>: F32 as an F32 tensor, I32 as an I32 tensor. With <paramref name="convert"/>,
    /// F64 becomes F32 and I64 becomes I32 through <see cref="SafeTensors.ToFloats"/> / <see cref="SafeTensors.ToInts"/> (range-checked).
    /// A scalar (shape <c>[]</c>) becomes a tensor of shape <c>[]</c> with one element.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown name; an F64/I64 tensor without <paramref name="convert"/>; dimensions past the int32 range.</exception>
    /// <exception cref="OverflowException">A converted value does not fit the target type.</exception>
    public Tensor ToTensor(Device device, string name, bool convert = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        var info = GetInfo(name);
        Check.That(convert || info.DType is SafeDType.F32 or SafeDType.I32, nameof(name), name,
            $"an F32 or I32 tensor (it is {info.DType}; pass convert: true to narrow F64 to F32 or I64 to I32)");
        Check.That(info.Shape.All(s => s <= int.MaxValue) && info.ElementCount <= int.MaxValue, nameof(name), name,
            $"a tensor of at most {int.MaxValue} elements (its shape is [{string.Join(", ", info.Shape)}])");
        int[] shape = info.Shape.Select(s => (int)s).ToArray();
        if (info.DType is SafeDType.F32 or SafeDType.F64)
        {
            float[] data = info.DType == SafeDType.F32 ? GetFloats(name) : SafeTensors.ToFloats(GetDoubles(name), name);
            var t = Tensor.Empty(device, DType.F32, shape);
            if (data.Length > 0) t.View.SubView(0, data.Length).CopyFromCPU(data);
            return t;
        }
        int[] ints = info.DType == SafeDType.I32 ? GetInts(name) : SafeTensors.ToInts(GetLongs(name), name);
        var ti = Tensor.Empty(device, DType.I32, shape);
        if (ints.Length > 0) ti.IntView.SubView(0, ints.Length).CopyFromCPU(ints);
        return ti;
    }

    /// <inheritdoc />
    public void Dispose() => stream.Dispose();

    T[] ReadArray<T>(string name, SafeDType dtype) where T : unmanaged
    {
        var info = GetInfo(name);
        Check.That(info.DType == dtype, nameof(name), name, $"a {dtype} tensor (it is {info.DType})");
        SafeTensors.RequireLittleEndian();
        long count = info.ElementCount;
        Check.That(count <= Array.MaxLength, nameof(name), name, $"at most {Array.MaxLength} elements for a host array (it has {count})");
        var result = new T[count];
        stream.Position = dataStart + info.Begin;
        const int chunk = 1 << 24;
        for (int off = 0; off < result.Length; off += chunk)
            stream.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan(off, Math.Min(chunk, result.Length - off))));
        return result;
    }

    InvalidDataException Bad(string what) => new($"safetensors file '{Path}': {what}.");

    void ParseHeader(byte[] header)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw Bad("the header is not valid UTF-8 JSON (invalid UTF-8 bytes)");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Bad($"the header is not valid UTF-8 JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw Bad($"the header is a JSON {doc.RootElement.ValueKind}: expected an object");
            var seen = new HashSet<string>();
            var entries = new List<SafeTensorInfo>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw Bad($"the name '{prop.Name}' appears twice in the header");
                if (prop.Name == SafeTensors.MetadataKey) ParseMetadata(prop.Value);
                else entries.Add(ParseEntry(prop.Name, prop.Value));
            }
            CheckTiling(entries);
            foreach (var e in entries)
            {
                infos[e.Name] = e;
                names.Add(e.Name);
            }
        }
    }

    void ParseMetadata(JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Bad($"'{SafeTensors.MetadataKey}' is a JSON {value.ValueKind}: expected an object of strings");
        foreach (var p in value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw Bad($"metadata '{p.Name}' is a JSON {p.Value.ValueKind}: expected a string");
            if (!metadata.TryAdd(p.Name, p.Value.GetString()!))
                throw Bad($"metadata key '{p.Name}' appears twice");
        }
    }

    SafeTensorInfo ParseEntry(string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Bad($"tensor '{name}' is a JSON {value.ValueKind}: expected an object with dtype, shape and data_offsets");
        if (!value.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw Bad($"tensor '{name}' has no string field 'dtype'");
        if (!SafeTensors.TryParseDType(dt.GetString()!, out var dtype))
            throw Bad($"tensor '{name}' has dtype '{dt.GetString()}': expected one of F32, F64, I32, I64");
        long[] shape = ReadLongs(name, value, "shape", -1);
        long[] offsets = ReadLongs(name, value, "data_offsets", 2);
        long begin = offsets[0], end = offsets[1];
        if (begin > end) throw Bad($"tensor '{name}' has data_offsets [{begin}, {end}]: begin after end");
        if (end > DataBytes)
            throw Bad($"tensor '{name}' has data_offsets [{begin}, {end}] past the end of the data buffer ({DataBytes} bytes; the file is truncated or the offsets are wrong)");
        long bytes;
        try
        {
            bytes = checked(SafeTensors.Numel(shape) * SafeTensors.SizeOf(dtype));
        }
        catch (OverflowException)
        {
            throw Bad($"tensor '{name}' has shape [{string.Join(", ", shape)}] whose byte size overflows a 64-bit integer");
        }
        if (bytes != end - begin)
            throw Bad($"tensor '{name}' is {dtype} of shape [{string.Join(", ", shape)}] ({bytes} bytes) but data_offsets [{begin}, {end}] span {end - begin} bytes");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    long[] ReadLongs(string name, JsonElement entry, string field, int count)
    {
        if (!entry.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
            throw Bad($"tensor '{name}' has no array field '{field}'");
        int n = array.GetArrayLength();
        if (count >= 0 && n != count) throw Bad($"tensor '{name}' has {n} values in '{field}': expected {count}");
        if (n > 64) throw Bad($"tensor '{name}' has {n} values in '{field}': expected at most 64 dimensions");
        var result = new long[n];
        int i = 0;
        foreach (var v in array.EnumerateArray())
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x) || x < 0)
                throw Bad($"tensor '{name}' has {field}[{i}] = {v.GetRawText()}: expected a non-negative integer below 2^63");
            result[i++] = x;
        }
        return result;
    }

    // The offsets must tile [0, DataBytes) exactly: no gap, no overlap, nothing left over (as the reference reader).
    void CheckTiling(List<SafeTensorInfo> entries)
    {
        long expected = 0;
        foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (e.Begin < expected) throw Bad($"tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}] overlapping the previous tensor's data (which ends at {expected})");
            if (e.Begin > expected) throw Bad($"tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}]: bytes [{expected}, {e.Begin}) belong to no tensor");
            expected = e.End;
        }
        if (expected != DataBytes)
            throw Bad($"the tensors cover {expected} data bytes but the file holds {DataBytes}: {DataBytes - expected} trailing bytes belong to no tensor");
    }
}
