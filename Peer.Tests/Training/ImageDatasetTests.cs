// IDX files and the image dataset: files the tests write themselves (gzipped and plain) round-trip; every damaged header,
// size or pairing is refused with one line naming the file; a missing Debian folder names the package to install.
using System.IO.Compression;
using Peer.Training;

namespace Peer.Tests.Training;

[TestFixture]
public sealed class ImageDatasetTests
{
    string dir = "";

    [SetUp]
    public void MakeFolder() => dir = Directory.CreateTempSubdirectory("peer-idx-").FullName;

    [TearDown]
    public void RemoveFolder() => Directory.Delete(dir, true);

    /// <summary>Writes the four files of a tiny dataset: <paramref name="train"/> and <paramref name="test"/> images of
    /// <paramref name="size"/> x <paramref name="size"/> whose pixels encode (image, pixel), labels image % 10.</summary>
    public static void WriteDataset(string dir, int train, int test, int size = 4, bool gzip = true, Func<int, int, byte>? pixel = null, Func<int, byte>? label = null)
    {
        pixel ??= (i, p) => (byte)((i * 7 + p * 3) % 256);
        label ??= i => (byte)(i % 10);
        foreach (var (prefix, count) in new[] { ("train", train), ("t10k", test) })
        {
            var px = new byte[count * size * size];
            for (int i = 0; i < count; i++) for (int p = 0; p < size * size; p++) px[i * size * size + p] = pixel(i, p);
            var lb = Enumerable.Range(0, count).Select(label).ToArray();
            string ext = gzip ? ".gz" : "";
            Idx.Write(Path.Combine(dir, $"{prefix}-images-idx3-ubyte{ext}"), new IdxArray([count, size, size], px), gzip);
            Idx.Write(Path.Combine(dir, $"{prefix}-labels-idx1-ubyte{ext}"), new IdxArray([count], lb), gzip);
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void FilesRoundTripAndSplit(bool gzip)
    {
        WriteDataset(dir, 12, 5, gzip: gzip);
        var data = ImageDataset.Load(dir, validation: 2);
        Assert.That((data.Train.Count, data.Validation.Count, data.Test.Count), Is.EqualTo((10, 2, 5)));
        Assert.That((data.Train.Height, data.Train.Width), Is.EqualTo((4, 4)));
        Assert.That(data.Validation.Labels, Is.EqualTo(new byte[] { 0, 1 }), "the validation split is the training file's last images (10 and 11)");
        Assert.That(data.Validation.Pixels[0], Is.EqualTo((byte)(10 * 7 % 256)));
        Assert.That(data.Test.Pixels[16 + 1], Is.EqualTo((byte)((7 + 3) % 256)), "image 1, pixel 1");
        Assert.That(data.Name, Is.EqualTo(Path.GetFullPath(dir)));
    }

    [Test]
    public void NormalisationUsesTheTrainingPixelsMoments()
    {
        WriteDataset(dir, 4, 2, size: 2, pixel: (i, p) => (byte)(p % 2 == 0 ? 0 : 255));
        var data = ImageDataset.Load(dir, validation: 0);
        Assert.That(data.Mean, Is.EqualTo(0.5f).Within(1e-6));
        Assert.That(data.Std, Is.EqualTo(0.5f).Within(1e-6));
        Assert.That(data.Batch(data.Train, [1]), Is.EqualTo(new[] { -1f, 1f, -1f, 1f }).Within(1e-6));
    }

    [Test]
    public void AMissingDebianPackageIsNamed()
    {
        // The default folder is only used when it is absent here; a named folder without the files says what it lacks.
        var e = Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 0))!;
        Assert.That(e.Message, Does.Contain("train-images-idx3-ubyte").And.Contain("apt-get install dataset-fashion-mnist").And.Not.Contain("\n"));
        if (!File.Exists(Path.Combine(ImageDataset.DebianFolder, "train-images-idx3-ubyte.gz")))
            Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(null, 0))!.Message,
                Does.Contain("not installed").And.Contain("apt-get install dataset-fashion-mnist").And.Contain("--data"));
    }

    static byte[] Header(byte type, byte rank, params int[] dims)
    {
        var b = new List<byte> { 0, 0, type, rank };
        foreach (int d in dims) b.AddRange(new[] { (byte)(d >> 24), (byte)(d >> 16), (byte)(d >> 8), (byte)d });
        return b.ToArray();
    }

    [Test]
    public void BadHeadersAndSizesAreRefused()
    {
        static string Why(byte[] bytes, int rank) => Assert.Throws<DatasetException>(() => Idx.Parse(bytes, rank, "f"))!.Message;
        Assert.That(Why([1, 0, 8, 1, 0, 0, 0, 1, 5], 1), Does.Contain("not an IDX file"));
        Assert.That(Why([.. Header(0x0D, 1, 1), 0, 0, 0, 0], 1), Does.Contain("type 0x0d").And.Contain("0x08"));
        Assert.That(Why([.. Header(8, 3, 1, 2, 2), 1, 2, 3, 4], 1), Does.Contain("3 dimensions; expected 1"));
        Assert.That(Why([0, 0, 8, 3, 0, 0], 3), Does.Contain("truncated").And.Contain("header"));
        Assert.That(Why([.. Header(8, 3, 2, 2, 2), 1, 2, 3], 3), Does.Contain("3 data bytes").And.Contain("8").And.Contain("truncated"));
        Assert.That(Why([.. Header(8, 1, 2), 1, 2, 3], 1), Does.Contain("trailing"));
        Assert.That(Why([.. Header(8, 3, 0, 2, 2)], 3), Does.Contain("dimension 0 = 0"));
        Assert.That(Why([.. Header(8, 3, 1 << 20, 1 << 10, 1 << 10)], 3), Does.Contain("more than"));
        Assert.That(Idx.Parse([.. Header(8, 2, 1, 2), 7, 9], 2, "f").Data, Is.EqualTo(new byte[] { 7, 9 }));
    }

    [Test]
    public void DamagedOrMismatchedFilesAreRefusedNamingTheFile()
    {
        WriteDataset(dir, 6, 3);
        string labels = Path.Combine(dir, "train-labels-idx1-ubyte.gz");
        Idx.Write(labels, new IdxArray([5], new byte[5]), gzip: true);
        Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 0))!.Message, Does.Contain("6 images").And.Contain("5 labels"));

        Idx.Write(labels, new IdxArray([6], [0, 1, 2, 3, 4, 12]), gzip: true);
        Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 0))!.Message, Does.Contain("label 12").And.Contain(labels));

        Idx.Write(labels, new IdxArray([6], new byte[6]), gzip: true);
        File.WriteAllBytes(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), [0x1f, 0x8b, 1, 2, 3]);
        Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 0))!.Message, Does.Contain("gzip").And.Contain("t10k-images"));

        WriteDataset(dir, 6, 3);
        Idx.Write(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), new IdxArray([3, 5, 5], new byte[75]), gzip: true);
        Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 0))!.Message, Does.Contain("4x4").And.Contain("5x5"));

        WriteDataset(dir, 6, 3);
        Assert.That(Assert.Throws<DatasetException>(() => ImageDataset.Load(dir, 6))!.Message, Does.Contain("validation = 6"));
    }

    [Test]
    public void GzipIsRecognisedByItsMagicNotItsName()
    {
        // A gzipped file without .gz and a plain file: both read.
        var bytes = Idx.Encode(new IdxArray([2], [3, 4]));
        string plain = Path.Combine(dir, "a"), zipped = Path.Combine(dir, "b");
        File.WriteAllBytes(plain, bytes);
        using (var f = File.Create(zipped))
        using (var z = new GZipStream(f, CompressionLevel.Fastest)) z.Write(bytes);
        Assert.That(Idx.Read(plain, 1).Data, Is.EqualTo(new byte[] { 3, 4 }));
        Assert.That(Idx.Read(zipped, 1).Data, Is.EqualTo(new byte[] { 3, 4 }));
    }
}
