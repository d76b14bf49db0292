// `peer layer` end to end: files in the safetensors format in, files out, compared with the double-precision
// reference of the spec's equations; and its one-line errors.
using Peer.IO;
using Peer.Nn;
using Peer.Training;
using static Peer.Tests.PeerMath;

namespace Peer.Tests.Training;

public sealed class LayerCommandTests
{
    const int T = 6, Dm = 4, H = 2, Dq = 4, N = 4, K = 3, Hq = H * Dq;
    string dir = "";

    [SetUp]
    public void MakeDir() => dir = Directory.CreateTempSubdirectory("peer-layer-").FullName;

    [TearDown]
    public void RemoveDir() => Directory.Delete(dir, true);

    static Dictionary<string, (float[] Data, int[] Shape)> Params() => new()
    {
        ["query.weight"] = (GradCheck.Rand(Hq * Dm, 1), [Hq, Dm]),
        ["query.bias"] = (GradCheck.Rand(Hq, 2), [Hq]),
        ["query_norm.weight"] = (GradCheck.Rand(Hq, 3).Select(v => 1 + 0.3f * v).ToArray(), [Hq]),
        ["query_norm.bias"] = (GradCheck.Rand(Hq, 4, 0.2f), [Hq]),
        ["query_norm.running_mean"] = (GradCheck.Rand(Hq, 5, 0.3f), [Hq]),
        ["query_norm.running_var"] = (GradCheck.Rand(Hq, 6).Select(v => 1 + 0.5f * v).ToArray(), [Hq]),
        ["keys.sub1"] = (GradCheck.Rand(N * Dq / 2, 7), [N, Dq / 2]),
        ["keys.sub2"] = (GradCheck.Rand(N * Dq / 2, 8), [N, Dq / 2]),
        ["experts.down"] = (GradCheck.Rand(N * N * Dm, 9), [N * N, Dm]),
        ["experts.up"] = (GradCheck.Rand(N * N * Dm, 10), [N * N, Dm]),
    };

    (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PeerCli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    string WriteWeights(Dictionary<string, (float[] Data, int[] Shape)> p)
    {
        var f = new SafeTensorFile();
        foreach (var (name, (data, shape)) in p) f.Add(name, data, shape.Select(s => (long)s).ToArray());
        string path = Path.Combine(dir, "w.safetensors");
        SafeTensors.Write(path, f);
        return path;
    }

    [TestCase(false)]
    [TestCase(true)]
    public void PeerLayerFilesMatchReference(bool eval)
    {
        var p = Params();
        var x = GradCheck.Rand(T * Dm, 11);
        var gy = GradCheck.Rand(T * Dm, 12);
        string w = WriteWeights(p);
        var input = new SafeTensorFile();
        input.Add("x", x.Select(v => (double)v).ToArray(), T, Dm); // F64 input is accepted and converted
        input.Add("grad_y", gy, T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);

        var args = new List<string> { "layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", K.ToString(), "--device", "cpu" };
        if (eval) args.Add("--eval");
        var (code, _, err) = Run(args.ToArray());
        Assert.That(code, Is.EqualTo(0), err);

        var rp = new PeerRefParams();
        foreach (var (name, (data, _)) in p) rp[name] = PeerMath.D(data);
        var (y, idx, g) = Layer(rp, PeerMath.D(x), T, Dm, H, Dq, N, K, PeerQueryNorm.BatchNorm, !eval, PeerActivation.Gelu, PeerRouter.Softmax);
        using var r = SafeTensors.Read(outPath);
        Assert.That(r.GetInfo("y").Shape, Is.EqualTo(new long[] { T, Dm }));
        Assert.That(r.GetFloats("y"), Is.EqualTo(y).Within(1e-5));
        Assert.That(r.GetInfo("indices").Shape, Is.EqualTo(new long[] { T, H, K }));
        Assert.That(r.GetInts("indices"), Is.EqualTo(idx));
        Assert.That(r.GetFloats("weights"), Is.EqualTo(g).Within(1e-5));
        double Loss(double[] xx) => Dot(Layer(rp, xx, T, Dm, H, Dq, N, K, PeerQueryNorm.BatchNorm, !eval, PeerActivation.Gelu, PeerRouter.Softmax).Y, PeerMath.D(gy));
        Assert.That(r.GetFloats("grad.x"), Is.EqualTo(NumGrad(Loss, PeerMath.D(x))).Within(2e-4));
        foreach (var name in p.Keys.Where(n => !n.Contains("running")))
            Assert.That(r.GetInfo("grad." + name).Shape, Is.EqualTo(p[name].Shape.Select(s => (long)s).ToArray()), name);
    }

    [Test]
    public void DenseFfwRunsThroughTheSameCommand()
    {
        const int hidden = 5;
        var p = new Dictionary<string, (float[] Data, int[] Shape)>
        {
            ["fc1.weight"] = (GradCheck.Rand(hidden * Dm, 1), [hidden, Dm]),
            ["fc1.bias"] = (GradCheck.Rand(hidden, 2), [hidden]),
            ["fc2.weight"] = (GradCheck.Rand(Dm * hidden, 3), [Dm, hidden]),
            ["fc2.bias"] = (GradCheck.Rand(Dm, 4), [Dm]),
        };
        string w = WriteWeights(p);
        var x = GradCheck.Rand(T * Dm, 5);
        var input = new SafeTensorFile();
        input.Add("x", x, T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);
        var (code, _, err) = Run("layer", "--layer", "ffw", "--weights", w, "--input", inPath, "--output", outPath);
        Assert.That(code, Is.EqualTo(0), err);
        using var r = SafeTensors.Read(outPath);
        var y = r.GetFloats("y");
        for (int t = 0; t < T; t++)
            for (int o = 0; o < Dm; o++)
            {
                double acc = p["fc2.bias"].Data[o];
                for (int j = 0; j < hidden; j++)
                {
                    double z = p["fc1.bias"].Data[j];
                    for (int c = 0; c < Dm; c++) z += p["fc1.weight"].Data[j * Dm + c] * x[t * Dm + c];
                    acc += p["fc2.weight"].Data[o * hidden + j] * PeerMath.Gelu(z);
                }
                Assert.That(y[t * Dm + o], Is.EqualTo(acc).Within(1e-5));
            }
        Assert.That(r.Contains("grad.x"), Is.False, "no grad_y, no gradients");
    }

    [Test]
    public void BadInputsGiveOneLineErrorsAndWriteNothing()
    {
        string w = WriteWeights(Params());
        var input = new SafeTensorFile();
        input.Add("z", new float[T * Dm], T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);

        var (code, _, err) = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", "2");
        Assert.That(code, Is.EqualTo(PeerCli.ErrorExit));
        Assert.That(err, Does.Contain("no tensor named 'x'"));

        (code, _, err) = Run("layer", "--weights", w, "--input", inPath, "--output", outPath);
        Assert.That(code, Is.EqualTo(PeerCli.ErrorExit));
        Assert.That(err, Does.Contain("--top-k: required"));

        (code, _, err) = Run("layer", "--layer", "mlp", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", "2");
        Assert.That(code, Is.EqualTo(PeerCli.ErrorExit));
        Assert.That(err, Does.Contain("--layer").And.Contain("mlp"));

        File.WriteAllBytes(w, [1, 2, 3]);
        (code, _, err) = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", "2");
        Assert.That(code, Is.EqualTo(PeerCli.ErrorExit));
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(File.Exists(outPath), Is.False);
    }

    static IEnumerable<TestCaseData> NonFinite()
    {
        yield return new TestCaseData("x", 5, float.NaN).SetArgDisplayNames("NaN in x");
        yield return new TestCaseData("grad_y", 0, float.PositiveInfinity).SetArgDisplayNames("Inf in grad_y");
        yield return new TestCaseData("experts.up", 3, float.NegativeInfinity).SetArgDisplayNames("-Inf in a weight");
        yield return new TestCaseData("query_norm.running_var", 1, float.NaN).SetArgDisplayNames("NaN in a buffer");
    }

    [TestCaseSource(nameof(NonFinite))]
    public void NonFiniteInputsAndWeightsAreRefusedNamingTheTensor(string tensor, int index, float value)
    {
        var p = Params();
        if (p.ContainsKey(tensor)) p[tensor].Data[index] = value;
        string w = WriteWeights(p);
        var x = GradCheck.Rand(T * Dm, 11);
        var gy = GradCheck.Rand(T * Dm, 12);
        if (tensor == "x") x[index] = value;
        if (tensor == "grad_y") gy[index] = value;
        var input = new SafeTensorFile();
        input.Add("x", x, T, Dm);
        input.Add("grad_y", gy, T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);
        var r = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", K.ToString(), "--device", "cpu");
        CliHarness.AssertOneLineError(r, $"'{tensor}'");
        Assert.That(r.Err, Does.Contain(float.IsNaN(value) ? "NaN" : "infinity"));
        Assert.That(File.Exists(outPath), Is.False);
    }

    [Test]
    public void F64OutsideTheFloat32RangeIsRefused()
    {
        string w = WriteWeights(Params());
        var x = new double[T * Dm];
        x[7] = 1e300;
        var input = new SafeTensorFile();
        input.Add("x", x, T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);
        var r = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", K.ToString(), "--device", "cpu");
        CliHarness.AssertOneLineError(r, "'x'");
        Assert.That(r.Err, Does.Contain("float32"));
        Assert.That(File.Exists(outPath), Is.False);
    }

    [Test]
    public void AMissingOrUnknownWeightIsNamedForPeople()
    {
        var p = Params();
        p.Remove("keys.sub2");
        p["keys.sub3"] = (new float[4], [4]);
        string w = WriteWeights(p);
        var input = new SafeTensorFile();
        input.Add("x", GradCheck.Rand(T * Dm, 11), T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(inPath, input);
        var r = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", K.ToString(), "--device", "cpu");
        CliHarness.AssertOneLineError(r, "keys.sub3");
        p = Params();
        p["experts.up"] = (new float[N * N * (Dm + 1)], [N * N, Dm + 1]);
        w = WriteWeights(p);
        r = Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", K.ToString(), "--device", "cpu");
        CliHarness.AssertOneLineError(r, "experts.up");
    }

    [Test]
    public void AnEmptyInputATooLargeTopKAndAFolderAsOutputAreNamed()
    {
        string w = WriteWeights(Params());
        var input = new SafeTensorFile();
        input.Add("x", new float[0], 0, Dm);
        string empty = Path.Combine(dir, "x0.safetensors"), outPath = Path.Combine(dir, "out.safetensors");
        SafeTensors.Write(empty, input);
        CliHarness.AssertOneLineError(Run("layer", "--weights", w, "--input", empty, "--output", outPath, "--top-k", "2", "--device", "cpu"), "--input: x has shape [0, 4]");
        input = new SafeTensorFile();
        input.Add("x", GradCheck.Rand(T * Dm, 11), T, Dm);
        string inPath = Path.Combine(dir, "x.safetensors");
        SafeTensors.Write(inPath, input);
        CliHarness.AssertOneLineError(Run("layer", "--weights", w, "--input", inPath, "--output", outPath, "--top-k", "99", "--device", "cpu"), "--top-k = 99");
        CliHarness.AssertOneLineError(Run("layer", "--weights", w, "--input", inPath, "--output", dir, "--top-k", "2", "--device", "cpu"), "--output: cannot write");
        // A folder where a file is expected is called a folder, not a file that does not exist.
        CliHarness.AssertOneLineError(Run("layer", "--weights", dir, "--input", inPath, "--output", outPath, "--top-k", "2", "--device", "cpu"), "--weights: '" + dir + "' is a folder");
        CliHarness.AssertOneLineError(Run("layer", "--weights", w, "--input", dir, "--output", outPath, "--top-k", "2", "--device", "cpu"), "--input: '" + dir + "' is a folder");
    }
}
