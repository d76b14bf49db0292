// Editing a trained model by switching PEER experts off (PeerLayer.DisableExperts: retrieval then takes the next best, so each
// layer stays exactly a PEER layer over the experts left): which experts, from a user's list or as a class's most specific
// experts measured on data the edit is not judged on, and the effect, per class, of the edit.
using Peer.Nn;

namespace Peer.Training;

/// <summary>Choosing and applying sets of disabled experts.</summary>
public static class ExpertEditing
{
    /// <summary>
    /// Parses <c>--disable-experts</c> values: <c>IDS</c> (comma-separated expert ids, for every PEER layer) or <c>LAYER:IDS</c>
    /// (one layer, by its dotted name). Repeated layers accumulate.
    /// </summary>
    /// <exception cref="ConfigException">A value that is not of that form, an unknown layer, or an id outside the layer's experts.</exception>
    public static Dictionary<string, SortedSet<int>> Parse(IEnumerable<string> specs, IReadOnlyList<(string Name, PeerLayer Layer)> layers)
    {
        var result = new Dictionary<string, SortedSet<int>>();
        foreach (var spec in specs)
        {
            int colon = spec.LastIndexOf(':');
            string? layer = colon >= 0 ? spec[..colon] : null;
            string ids = colon >= 0 ? spec[(colon + 1)..] : spec;
            var targets = layer is null ? layers : layers.Where(l => l.Name == layer).ToArray();
            if (layers.Count == 0) throw new ConfigException("disable-experts: the model has no PEER layer");
            if (targets.Count == 0)
                throw new ConfigException($"disable-experts: no PEER layer '{layer}'; the model's are {string.Join(", ", layers.Select(l => l.Name))}");
            var parsed = new List<int>();
            foreach (var part in ids.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (!int.TryParse(part, out int id))
                    throw new ConfigException($"disable-experts: '{spec}' is not IDS or LAYER:IDS (comma-separated expert numbers; '{part}' is not a number)");
                parsed.Add(id);
            }
            if (parsed.Count == 0) throw new ConfigException($"disable-experts: '{spec}' names no expert");
            foreach (var (name, l) in targets)
            {
                foreach (int id in parsed)
                    if (id < 0 || id >= l.Options.Experts)
                        throw new ConfigException($"disable-experts: expert {id} is outside layer {name}'s 0..{l.Options.Experts - 1}");
                if (!result.TryGetValue(name, out var set)) result[name] = set = new SortedSet<int>();
                set.UnionWith(parsed);
            }
        }
        return result;
    }

    /// <summary>Switches off <paramref name="disabled"/> (layer name to expert ids) in the named layers of <paramref name="layers"/>; the others keep every expert.</summary>
    /// <exception cref="ConfigException">A set the layer's retrieval cannot exclude exactly (too many in one row or column, or fewer than k left).</exception>
    public static void Apply(IEnumerable<(string Name, PeerLayer Layer)> layers, IReadOnlyDictionary<string, SortedSet<int>> disabled)
    {
        foreach (var (name, layer) in layers)
        {
            try
            {
                layer.DisableExperts(disabled.TryGetValue(name, out var set) ? set : []);
            }
            catch (ArgumentException e)
            {
                throw new ConfigException($"disable-experts: layer {name}: {PeerCli.OneLine(e.Message)}");
            }
        }
    }

    /// <summary>Parses a class given by label number or name (case-insensitive).</summary>
    /// <exception cref="ConfigException">Neither a label in range nor a class name.</exception>
    public static int ParseClass(string text, IReadOnlyList<string> classes)
    {
        if (int.TryParse(text, out int label) && label >= 0 && label < classes.Count) return label;
        for (int c = 0; c < classes.Count; c++)
            if (string.Equals(classes[c], text, StringComparison.OrdinalIgnoreCase)) return c;
        throw new ConfigException($"disable-class: '{text}' is not a class; expected 0..{classes.Count - 1} or one of {string.Join(", ", classes)}");
    }

    /// <summary>
    /// The <paramref name="perLayer"/> experts of each PEER layer most specific to class <paramref name="cls"/> (see
    /// <see cref="ClassExpertMatrix.MostSpecific"/>), measured on <paramref name="split"/> with the model as it is now.
    /// </summary>
    public static Dictionary<string, SortedSet<int>> ClassExperts(VisionTrainer trainer, ImageSplit split, int cls, int perLayer)
    {
        var layers = trainer.Model.PeerLayers().ToArray();
        using var trace = new RetrievalTrace(layers);
        trainer.Evaluate(split, trace);
        var labels = split.Labels.Select(l => (int)l).ToArray();
        return layers.ToDictionary(l => l.Name,
            l => new SortedSet<int>(ClassExpertMatrix.From(trace[l.Name], labels, trainer.Config.Model.Classes).MostSpecific(cls, perLayer)));
    }
}
