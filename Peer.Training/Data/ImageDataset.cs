// Labelled grey-scale images: Fashion-MNIST as Debian's dataset-fashion-mnist package installs it (four IDX files,
// gzipped, in /usr/share/datasets/fashion-mnist), or the same four files (gzipped or not) in any folder. The training
// images may give up their last ones as a validation split (interim evaluations and tuning); the test split is only
// scored at the end. Pixels become floats as (p / 255 - mean) / std with the training pixels' own mean and std.
namespace Peer.Training;

/// <summary>Images of one split: <c>Count</c> images of <c>Height x Width</c> bytes, row-major, and their labels.</summary>
/// <param name="Pixels">Count * Height * Width bytes.</param>
/// <param name="Labels">Count labels in [0, classes).</param>
/// <param name="Height">Rows per image.</param>
/// <param name="Width">Columns per image.</param>
public sealed record ImageSplit(byte[] Pixels, byte[] Labels, int Height, int Width)
{
    /// <summary>Number of images.</summary>
    public int Count => Labels.Length;
    /// <summary>Pixels per image.</summary>
    public int Size => Height * Width;

    /// <summary>Images <c>[from, from + count)</c>.</summary>
    public ImageSplit Range(int from, int count) =>
        new(Pixels[(from * Size)..((from + count) * Size)], Labels[from..(from + count)], Height, Width);
}

/// <summary>A labelled image dataset with training, validation and test splits.</summary>
public sealed class ImageDataset
{
    /// <summary>Where Debian's <c>dataset-fashion-mnist</c> package puts the files.</summary>
    public const string DebianFolder = "/usr/share/datasets/fashion-mnist";
    /// <summary>The package that installs them.</summary>
    public const string DebianPackage = "dataset-fashion-mnist";
    /// <summary>The Fashion-MNIST class names, by label.</summary>
    public static readonly string[] FashionClasses = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>The folder the files came from (full path).</summary>
    public required string Name { get; init; }
    /// <summary>Training images (without the validation images).</summary>
    public required ImageSplit Train { get; init; }
    /// <summary>Validation images (the last ones of the training file); may be empty.</summary>
    public required ImageSplit Validation { get; init; }
    /// <summary>Test images.</summary>
    public required ImageSplit Test { get; init; }
    /// <summary>Class names, by label.</summary>
    public required string[] Classes { get; init; }
    /// <summary>Mean of the training pixels scaled to [0, 1].</summary>
    public float Mean { get; init; }
    /// <summary>Standard deviation of the training pixels scaled to [0, 1].</summary>
    public float Std { get; init; }

    /// <summary>The four files' names (without .gz) in the order train images, train labels, test images, test labels.</summary>
    public static readonly string[] FileNames = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

    /// <summary>
    /// Loads Fashion-MNIST (or MNIST-shaped data) from <paramref name="folder"/> (null: <see cref="DebianFolder"/>), each file
    /// <c>NAME</c> or <c>NAME.gz</c>, holding back the last <paramref name="validation"/> training images as a validation split.
    /// </summary>
    /// <exception cref="DatasetException">A file is missing (the message names the Debian package), damaged, or the files disagree
    /// (image and label counts, image sizes, labels outside the classes).</exception>
    public static ImageDataset Load(string? folder, int validation)
    {
        string dir = Path.GetFullPath(string.IsNullOrWhiteSpace(folder) ? DebianFolder : folder);
        string Find(string name)
        {
            foreach (var candidate in new[] { name + ".gz", name })
                if (File.Exists(Path.Combine(dir, candidate))) return Path.Combine(dir, candidate);
            throw new DatasetException(dir == DebianFolder
                ? $"data: Fashion-MNIST is not installed ({Path.Combine(dir, name)}.gz is missing); install it with `apt-get install {DebianPackage}`, or pass --data DIR"
                : Directory.Exists(dir)
                    ? $"data: {dir} holds no {name}.gz or {name} (the Fashion-MNIST files as `apt-get install {DebianPackage}` installs them)"
                    : $"data: {dir} does not exist; pass the folder of the Fashion-MNIST files, or install them with `apt-get install {DebianPackage}` and leave --data out");
        }
        var paths = FileNames.Select(Find).ToArray();
        var train = Split(paths[0], paths[1]);
        var test = Split(paths[2], paths[3]);
        if (train.Height != test.Height || train.Width != test.Width)
            throw new DatasetException($"data: training images are {train.Height}x{train.Width} but test images {test.Height}x{test.Width} in {dir}");
        int classes = FashionClasses.Length;
        foreach (var (split, path) in new[] { (train, paths[1]), (test, paths[3]) })
        {
            int bad = Array.FindIndex(split.Labels, l => l >= classes);
            if (bad >= 0) throw new DatasetException($"data: {path} holds label {split.Labels[bad]} at {bad}; expected 0..{classes - 1}");
        }
        if (validation < 0 || validation >= train.Count)
            throw new DatasetException($"data: validation = {validation}: expected 0..{train.Count - 1} (the training file holds {train.Count:N0} images)");
        var (mean, std) = Moments(train.Pixels);
        return new ImageDataset
        {
            Name = dir,
            Train = train.Range(0, train.Count - validation),
            Validation = train.Range(train.Count - validation, validation),
            Test = test,
            Classes = FashionClasses,
            Mean = mean,
            Std = std,
        };
    }

    static ImageSplit Split(string imagesPath, string labelsPath)
    {
        var images = Idx.Read(imagesPath, 3);
        var labels = Idx.Read(labelsPath, 1);
        if (images.Dims[0] != labels.Dims[0])
            throw new DatasetException($"data: {imagesPath} holds {images.Dims[0]:N0} images but {labelsPath} {labels.Dims[0]:N0} labels");
        return new ImageSplit(images.Data, labels.Data, images.Dims[1], images.Dims[2]);
    }

    static (float Mean, float Std) Moments(byte[] pixels)
    {
        var counts = new long[256];
        foreach (byte p in pixels) counts[p]++;
        double n = pixels.Length, sum = 0, sq = 0;
        for (int v = 0; v < 256; v++)
        {
            double x = v / 255.0;
            sum += counts[v] * x;
            sq += counts[v] * x * x;
        }
        double mean = sum / n, variance = Math.Max(sq / n - mean * mean, 1e-12);
        return ((float)mean, (float)Math.Sqrt(variance));
    }

    /// <summary>A blank (0) pixel normalised, <c>-Mean / Std</c>: what augmentation fills the border with.</summary>
    public float Blank => (0f - Mean) / Std;

    /// <summary>The normalised pixels <c>(p / 255 - Mean) / Std</c> of images <paramref name="ids"/> of <paramref name="split"/>, row-major [n, H*W].</summary>
    public float[] Batch(ImageSplit split, ReadOnlySpan<int> ids)
    {
        int size = split.Size;
        var lut = new float[256];
        for (int v = 0; v < 256; v++) lut[v] = (v / 255f - Mean) / Std;
        var x = new float[ids.Length * size];
        for (int i = 0; i < ids.Length; i++)
        {
            var src = split.Pixels.AsSpan(ids[i] * size, size);
            var dst = x.AsSpan(i * size, size);
            for (int p = 0; p < size; p++) dst[p] = lut[src[p]];
        }
        return x;
    }

    /// <summary>FNV-1a over every image and label of the three splits, hex: the data's identity in a checkpoint.</summary>
    public string Hash()
    {
        ulong h = 14695981039346656037UL;
        foreach (var split in new[] { Train, Validation, Test })
            foreach (var part in new[] { split.Pixels, split.Labels })
                foreach (byte b in part) { h ^= b; h *= 1099511628211UL; }
        return h.ToString("x16");
    }
}
