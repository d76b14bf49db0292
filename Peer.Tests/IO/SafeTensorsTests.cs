using System.Buffers.Binary;
using System.Text;
using Peer.IO;

namespace Peer.Tests.IO;

public sealed class SafeTensorsTests
{
    string dir = "";

    [SetUp]
    public void MakeFolder()
    {
        dir = Path.Combine(Path.GetTempPath(), "peer-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
    }

    [TearDown]
    public void RemoveFolder() => Directory.Delete(dir, recursive: true);

    static Device D => Devices.Cpu;

    // 8-byte little-endian length, the header text, then the data: the format built by hand.
    static byte[] FileBytes(string json, byte[] data, ulong? headerLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var result = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(result, headerLength ?? (ulong)header.Length);
        header.CopyTo(result, 8);
        data.CopyTo(result, 8 + header.Length);
        return result;
    }

    static byte[] Floats(params float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();

    string Put(byte[] bytes)
    {
        string p = Path.Combine(dir, Guid.NewGuid().ToString("N") + ".safetensors");
        File.WriteAllBytes(p, bytes);
        return p;
    }

    [Test]
    public void DeviceTensorsRoundTripWithMetadata()
    {
        using var s = Scope.Begin();
        var a = Tensor.FromArray(D, GradCheck.Rand(12, 5), 3, 4);
        var b = Tensor.FromArray(D, new[] { 7, -1, int.MaxValue, int.MinValue, 0 }, 5);
        var scalar = Tensor.Empty(D, DType.F32);
        Peer.Ops.Fill(scalar, 2.5f);
        var empty = Tensor.Zeros(D, 0, 3);
        string path = Path.Combine(dir, "m.safetensors");
        SafeTensors.Write(path, [("a", a), ("b.idx", b), ("s", scalar), ("e", empty)], new Dictionary<string, string> { ["format"] = "peer", ["step"] = "12" });

        using var r = SafeTensors.Read(path);
        Assert.That(r.Names, Is.EqualTo(new[] { "a", "b.idx", "s", "e" }));
        Assert.That(r.Metadata["format"], Is.EqualTo("peer"));
        Assert.That(r.Metadata["step"], Is.EqualTo("12"));
        Assert.That(r.GetInfo("a").Shape, Is.EqualTo(new long[] { 3, 4 }));
        Assert.That(r.GetFloats("a"), Is.EqualTo(a.ToArray()));
        Assert.That(r.GetInts("b.idx"), Is.EqualTo(b.ToIntArray()));
        var ta = r.ToTensor(D, "a");
        Assert.That(ta.Shape, Is.EqualTo(new[] { 3, 4 }));
        Assert.That(ta.ToArray(), Is.EqualTo(a.ToArray()));
        var ts = r.ToTensor(D, "s");
        Assert.That(ts.Shape, Is.Empty);
        Assert.That(ts.Item(), Is.EqualTo(2.5f));
        var te = r.ToTensor(D, "e");
        Assert.That(te.Shape, Is.EqualTo(new[] { 0, 3 }));
        Assert.That(r.ToTensor(D, "b.idx").DType, Is.EqualTo(DType.I32));
        Assert.That((8 + new FileInfo(path).Length - r.DataBytes) % 8, Is.Zero, "data buffer starts 8-byte aligned");
    }

    [Test]
    public void HostFileRoundTripsEveryDTypeAndConverts()
    {
        var f = new SafeTensorFile();
        f.Add("f32", new[] { 1f, -2f, float.Epsilon }, 3);
        f.Add("f64", new[] { 1.0, 1e300, -0.5 }, 3, 1);
        f.Add("i32", new[] { 1, 2 });
        f.Add("i64", new[] { 5L, -(1L << 40), 3 });
        f.Add("i64small", new[] { 5L, -7L });
        f.Add("f64small", new[] { 0.25, -3.0 });
        f.Metadata["k"] = "v";
        string path = Path.Combine(dir, "h.safetensors");
        SafeTensors.Write(path, f);

        using var r = SafeTensors.Read(path);
        Assert.That(r.GetFloats("f32"), Is.EqualTo(new[] { 1f, -2f, float.Epsilon }));
        Assert.That(r.GetDoubles("f64"), Is.EqualTo(new[] { 1.0, 1e300, -0.5 }));
        Assert.That(r.GetInfo("f64").Shape, Is.EqualTo(new long[] { 3, 1 }));
        Assert.That(r.GetInts("i32"), Is.EqualTo(new[] { 1, 2 }));
        Assert.That(r.GetLongs("i64"), Is.EqualTo(new[] { 5L, -(1L << 40), 3 }));
        Assert.That(r.Metadata["k"], Is.EqualTo("v"));

        using var s = Scope.Begin();
        Assert.That(r.ToTensor(D, "i64small", convert: true).ToIntArray(), Is.EqualTo(new[] { 5, -7 }));
        Assert.That(r.ToTensor(D, "f64small", convert: true).ToArray(), Is.EqualTo(new[] { 0.25f, -3f }));
        var narrow = Assert.Throws<ArgumentException>(() => r.ToTensor(D, "f64"))!;
        Assert.That(narrow.Message, Does.Contain("F64").And.Contain("convert"));
        var big = Assert.Throws<OverflowException>(() => r.ToTensor(D, "f64", convert: true))!;
        Assert.That(big.Message, Does.Contain("f64[1] = 1E+300"));
        var wide = Assert.Throws<OverflowException>(() => r.ToTensor(D, "i64", convert: true))!;
        Assert.That(wide.Message, Does.Contain("i64[1] = -1099511627776"));
        var kind = Assert.Throws<ArgumentException>(() => r.GetFloats("i32"))!;
        Assert.That(kind.Message, Does.Contain("'i32'").And.Contain("F32 tensor (it is I32)"));
        var missing = Assert.Throws<ArgumentException>(() => r.GetInfo("nope"))!;
        Assert.That(missing.Message, Does.Contain("'nope'").And.Contain("'f32'"));
    }

    [Test]
    public void HandBuiltFileIsRead()
    {
        // Two tensors, declared out of data order, metadata last, header padded with spaces.
        string json = "{\"b\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[8,16]},"
                    + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"format\":\"pt\"}}    ";
        var data = Floats(1.5f, -3f).Concat(BitConverter.GetBytes(-42L)).ToArray();
        using var r = SafeTensors.Read(Put(FileBytes(json, data)));
        Assert.That(r.Names, Is.EquivalentTo(new[] { "a", "b" }));
        Assert.That(r.GetFloats("a"), Is.EqualTo(new[] { 1.5f, -3f }));
        Assert.That(r.GetLongs("b"), Is.EqualTo(new[] { -42L }));
        Assert.That(r.GetInfo("b"), Is.EqualTo(new SafeTensorInfo("b", SafeDType.I64, [1, 1], 8, 16)).Using<SafeTensorInfo>((x, y) =>
            x.Name == y.Name && x.DType == y.DType && x.Shape.SequenceEqual(y.Shape) && x.Begin == y.Begin && x.End == y.End));
        Assert.That(r.Metadata["format"], Is.EqualTo("pt"));
    }

    [Test]
    public void WriterProducesTheExactFormat()
    {
        var f = new SafeTensorFile();
        f.Add("w", new[] { 1f, 2f }, 1, 2);
        f.Add("i", new[] { 3 });
        f.Metadata["m"] = "x";
        string path = Path.Combine(dir, "exact.safetensors");
        SafeTensors.Write(path, f);
        string json = "{\"__metadata__\":{\"m\":\"x\"},\"w\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
                    + "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
        json += new string(' ', (8 - json.Length % 8) % 8);
        var expected = FileBytes(json, Floats(1f, 2f).Concat(BitConverter.GetBytes(3)).ToArray());
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(expected));
    }

    const string A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    // Each hostile or damaged file, with a phrase its error must contain.
    static IEnumerable<TestCaseData> Hostile()
    {
        byte[] eight = Floats(1f, 2f);
        TestCaseData Case(string name, byte[] bytes, string phrase) => new TestCaseData(bytes, phrase).SetName("Refuses_" + name);
        yield return Case("TooShort", [1, 2, 3], "too short for the 8-byte header length");
        yield return Case("HeaderPastEnd", FileBytes("{" + A + "}", eight, 1000), "runs past the end of the file");
        yield return Case("HeaderAbsurd", FileBytes("{" + A + "}", eight, ulong.MaxValue - 3), "exceeds the limit");
        yield return Case("InvalidJson", FileBytes("{\"a\":{\"dtype\":", eight), "not valid UTF-8 JSON");
        yield return Case("InvalidUtf8", FileBytes("{\"a\xff\":1}", eight).Select(b => b == 0xC3 ? (byte)0xFF : b).ToArray(), "not valid UTF-8 JSON");
        yield return Case("RootNotObject", FileBytes("[1,2]", eight), "expected an object");
        yield return Case("MissingDtype", FileBytes("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight), "no string field 'dtype'");
        yield return Case("MissingShape", FileBytes("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight), "no array field 'shape'");
        yield return Case("MissingOffsets", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight), "no array field 'data_offsets'");
        yield return Case("UnknownDtype", FileBytes("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", eight), "dtype 'BF16'");
        yield return Case("NegativeDim", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", eight), "shape[0] = -2");
        yield return Case("FractionalDim", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", eight), "shape[0] = 2.5");
        yield return Case("OffsetHuge", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", eight), "data_offsets[1]");
        yield return Case("OffsetsOneValue", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", eight), "expected 2");
        yield return Case("OffsetsReversed", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", eight), "begin after end");
        yield return Case("OffsetsPastData", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight), "past the end of the data buffer");
        yield return Case("Truncated", FileBytes("{" + A + "}", eight)[..^3], "past the end of the data buffer");
        yield return Case("ShapeDisagrees", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", eight), "(12 bytes) but data_offsets [0, 8] span 8 bytes");
        yield return Case("F64SizeDisagrees", FileBytes("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight), "span 8 bytes");
        yield return Case("ShapeOverflows", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", eight), "overflows");
        yield return Case("Overlap", FileBytes("{" + A + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight), "overlapping");
        yield return Case("Gap", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight), "belong to no tensor");
        yield return Case("TrailingBytes", FileBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", eight), "4 trailing bytes");
        yield return Case("DuplicateName", FileBytes("{" + A + "," + A + "}", eight), "appears twice");
        yield return Case("MetadataNotStrings", FileBytes("{\"__metadata__\":{\"k\":3}," + A + "}", eight), "metadata 'k'");
        yield return Case("EntryNotObject", FileBytes("{\"a\":[1]}", eight), "expected an object with dtype");
    }

    [TestCaseSource(nameof(Hostile))]
    public void HostileFileIsRefused(byte[] bytes, string phrase)
    {
        string path = Put(bytes);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(phrase).And.Contain(path));
    }

    [Test]
    public void FailedWriteLeavesOldFileIntact()
    {
        using var s = Scope.Begin();
        string path = Path.Combine(dir, "ckpt.safetensors");
        var a = Tensor.FromArray(D, new[] { 1f, 2f, 3f }, 3);
        SafeTensors.Write(path, [("a", a)]);
        var before = File.ReadAllBytes(path);

        IEnumerable<(string, Tensor)> Broken()
        {
            yield return ("a", a);
            throw new IOException("disk went away");
        }
        Assert.Throws<IOException>(() => SafeTensors.Write(path, Broken()));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));

        var gone = Tensor.FromArray(D, new[] { 4f }, 1);
        gone.Dispose();
        Assert.Throws<ObjectDisposedException>(() => SafeTensors.Write(path, [("a", a), ("g", gone)]));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { path }), "no temporary file left behind");
    }

    [Test]
    public void BadNamesAndShapesAreRefusedOnWrite()
    {
        using var s = Scope.Begin();
        var a = Tensor.Zeros(D, 2);
        var dup = Assert.Throws<ArgumentException>(() => SafeTensors.Write(Path.Combine(dir, "x"), [("a", a), ("a", a)]))!;
        Assert.That(dup.Message, Does.Contain("name = 'a'").And.Contain("not already used"));
        var meta = Assert.Throws<ArgumentException>(() => SafeTensors.Write(Path.Combine(dir, "x"), [("__metadata__", a)]))!;
        Assert.That(meta.Message, Does.Contain("'__metadata__'"));
        var f = new SafeTensorFile();
        var size = Assert.Throws<ArgumentException>(() => f.Add("w", SafeDType.F64, [2, 2], new byte[16]))!;
        Assert.That(size.Message, Does.Contain("16 bytes").And.Contain("32 bytes"));
        Assert.That(Directory.GetFiles(dir), Is.Empty);
    }

    [Test]
    public void NonFiniteValuesAreFoundAtEveryPositionOfAVectorBlock()
    {
        // Longer than a few vector blocks, so both the vector loop and the scalar tail are exercised at every offset.
        var values = new float[67];
        Assert.That(SafeTensors.FirstNonFinite(values), Is.EqualTo(-1));
        Assert.That(SafeTensors.FirstNonFinite([float.MaxValue, -float.MaxValue, float.Epsilon]), Is.EqualTo(-1));
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = bad;
                Assert.That(SafeTensors.FirstNonFinite(values), Is.EqualTo(i), $"{bad} at {i}");
                values[i] = 0;
            }
        Assert.That(SafeTensors.Describe(float.NaN), Is.EqualTo("NaN"));
        Assert.That(SafeTensors.Describe(float.NegativeInfinity), Is.EqualTo("-infinity"));
    }

    [Test]
    public void AWriteThatRequiresFiniteValuesRefusesNaNAndLeavesTheOldFile()
    {
        using var s = Scope.Begin();
        string path = Path.Combine(dir, "ckpt.safetensors");
        var good = Tensor.FromArray(D, new[] { 1f, 2f, 3f }, 3);
        SafeTensors.Write(path, [("a", good)], requireFinite: true);
        var before = File.ReadAllBytes(path);
        var bad = Tensor.FromArray(D, new[] { 1f, float.PositiveInfinity, 3f }, 3);
        var e = Assert.Throws<NonFiniteTensorException>(() => SafeTensors.Write(path, [("a", good), ("b", bad)], requireFinite: true))!;
        Assert.That((e.Tensor, e.Index, e.Value), Is.EqualTo(("b", 1L, "infinity")));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { path }), "no temporary file left behind");
        SafeTensors.Write(path, [("b", bad)]); // without the requirement the values are written as they are
        using var r = SafeTensors.Read(path);
        Assert.That(r.GetFloats("b")[1], Is.EqualTo(float.PositiveInfinity));
    }

    [Test]
    public void AFailedWriteNamesTheTargetNotItsTemporaryFile()
    {
        using var s = Scope.Begin();
        string missing = Path.Combine(dir, "no-such-folder", "x.safetensors");
        Assert.That(() => SafeTensors.Write(missing, [("a", Tensor.Zeros(D, 2))]),
            Throws.InstanceOf<IOException>().With.Message.Contains(missing).And.Message.Not.Contain(".tmp"));
    }

    [Test]
    public void WritesAreRightWhileTheGarbageCollectorMovesObjects()
    {
        // ILGPU takes a `ref` to host memory as already pinned; the writer once passed `ref host[0]` of a fresh array, and a
        // collection during the copy moved the array: the file got its zeros, and the copy wrote over whatever the collector
        // had put at the old address (test hosts died later, elsewhere). A span is pinned by ILGPU. With the ref, three runs
        // of this test on the shared 2-core machine failed at writes 996 and 887 and once killed the test host; with the span
        // it passes. A pass is no proof, a failure always is.
        using var s = Scope.Begin();
        var values = Enumerable.Range(1, 2048).Select(i => (float)i).ToArray();
        var t = Tensor.FromArray(D, values, values.Length);
        string path = Path.Combine(dir, "moving.safetensors");
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(0, GCCollectionMode.Forced, blocking: true, compacting: true);
                Thread.Sleep(1);
            }
        });
        collector.Start();
        int wrong = 0;
        try
        {
            for (int i = 1; i <= 1500 && wrong == 0; i++)
            {
                SafeTensors.Write(path, [("a", t)]);
                using var r = SafeTensors.Read(path);
                if (!r.GetFloats("a").AsSpan().SequenceEqual(values)) wrong = i;
            }
        }
        finally
        {
            stop.Cancel();
            collector.Join();
        }
        Assert.That(wrong, Is.Zero, "the write whose file differs from the tensor");
    }
}
