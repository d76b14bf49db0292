// Every JSON file the program reads (a --config file, config.json, a checkpoint's state.json and checkpoint.json, a
// sweep's result.json) is checked as a whole against the record it becomes before anything is deserialized: each
// value's kind and range, null only where the record allows it (its nullable annotation), unknown and repeated
// keys. Problems are reported with the value's dotted path in the file's own snake_case keys (model.peer.heads,
// model.blocks[0]) and in words, never as .NET type names, so one line tells the user what to fix.
using System.Reflection;
using System.Text.Json;

namespace Peer.Training;

static class StrictJson
{
    const int MaxReported = 3;
    static readonly NullabilityInfoContext Nullability = new();

    /// <summary>Checks <paramref name="json"/> against <typeparamref name="T"/> and deserializes it; <paramref name="fail"/> builds the exception from a one-line problem.</summary>
    public static T Read<T>(string json, Func<string, Exception> fail) where T : class
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 32 });
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long line ? $" at line {line + 1}, column {e.BytePositionInLine + 1}" : "";
            throw fail($"not valid JSON{where}: {e.Message.Split(" Path:")[0].Split(" LineNumber:")[0].TrimEnd('.')}");
        }
        using (doc)
        {
            var problems = new List<string>();
            Check(doc.RootElement, typeof(T), nullable: false, null, "", problems);
            if (problems.Count > 0)
                throw fail(string.Join("; ", problems.Take(MaxReported)) + (problems.Count > MaxReported ? $" (and {problems.Count - MaxReported} more)" : ""));
            try
            {
                return doc.RootElement.Deserialize<T>(ModelConfig.Json)!;
            }
            catch (JsonException e)
            {
                // Not expected after the check above; kept one line and free of type names all the same.
                throw fail($"cannot be read ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]})");
            }
        }
    }

    static string Name(string path) => path.Length == 0 ? "the file" : path;

    static void Check(JsonElement e, Type type, bool nullable, NullabilityInfo? info, string path, List<string> problems)
    {
        var underlying = Nullable.GetUnderlyingType(type);
        if (underlying != null)
        {
            type = underlying;
            nullable = true;
        }
        if (e.ValueKind == JsonValueKind.Null)
        {
            if (!nullable) problems.Add($"{Name(path)} is null: expected {Expected(type)}");
            return;
        }
        string raw = e.GetRawText();
        if (raw.Length > 40) raw = raw[..37] + "...";
        string Bad() => $"{Name(path)} = {raw}: expected {Expected(type)}";
        if (type == typeof(string))
        {
            if (e.ValueKind != JsonValueKind.String) problems.Add(Bad());
        }
        else if (type == typeof(bool))
        {
            if (e.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) problems.Add(Bad());
        }
        else if (type == typeof(int))
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out _)) problems.Add(Bad());
        }
        else if (type == typeof(long))
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out _)) problems.Add(Bad());
        }
        else if (type == typeof(ulong))
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetUInt64(out _)) problems.Add(Bad());
        }
        else if (type == typeof(float) || type == typeof(double))
        {
            double max = type == typeof(float) ? float.MaxValue : double.MaxValue;
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v) || !double.IsFinite(v) || Math.Abs(v) > max) problems.Add(Bad());
            else if (type == typeof(float) && v != 0 && (float)v == 0)
                problems.Add($"{Name(path)} = {raw}: rounds to 0 in float32; expected 0 or a magnitude of at least {float.Epsilon:G3}");
        }
        else if (type.IsArray)
        {
            if (e.ValueKind != JsonValueKind.Array) { problems.Add(Bad()); return; }
            var element = type.GetElementType()!;
            bool elementNullable = info?.ElementType?.ReadState == NullabilityState.Nullable;
            int i = 0;
            foreach (var item in e.EnumerateArray()) Check(item, element, elementNullable, info?.ElementType, $"{path}[{i++}]", problems);
        }
        else if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>))
        {
            if (e.ValueKind != JsonValueKind.Object) { problems.Add(Bad()); return; }
            var valueType = type.GetGenericArguments()[1];
            var valueInfo = info?.GenericTypeArguments.Length == 2 ? info.GenericTypeArguments[1] : null;
            var seen = new HashSet<string>();
            foreach (var p in e.EnumerateObject())
            {
                string sub = Join(path, p.Name);
                if (!seen.Add(p.Name)) problems.Add($"{sub} appears twice");
                else Check(p.Value, valueType, valueInfo?.ReadState == NullabilityState.Nullable, valueInfo, sub, problems);
            }
        }
        else if (type.IsClass)
            CheckObject(e, type, path, problems, Bad);
        else problems.Add($"{Name(path)} cannot be read");
    }

    static void CheckObject(JsonElement e, Type type, string path, List<string> problems, Func<string> bad)
    {
        if (e.ValueKind != JsonValueKind.Object) { problems.Add(bad()); return; }
        var properties = Settings(type);
        var seen = new HashSet<string>();
        foreach (var p in e.EnumerateObject())
        {
            string sub = Join(path, p.Name);
            if (!seen.Add(p.Name)) { problems.Add($"{sub} appears twice"); continue; }
            if (!properties.TryGetValue(p.Name, out var property))
            {
                problems.Add($"{sub} is not a known setting (unknown key); {(path.Length == 0 ? "the file" : path)} takes {string.Join(", ", properties.Keys)}");
                continue;
            }
            var info = Nullability.Create(property);
            Check(p.Value, property.PropertyType, info.ReadState == NullabilityState.Nullable, info, sub, problems);
        }
    }

    // The keys a record is written with: its public properties, snake_case (read-only ones are written as derived values).
    static Dictionary<string, PropertyInfo> Settings(Type type) => type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.GetIndexParameters().Length == 0)
        .ToDictionary(p => ModelConfig.Json.PropertyNamingPolicy!.ConvertName(p.Name));

    static string Join(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    static string Expected(Type type) =>
        type == typeof(string) ? "a string"
        : type == typeof(bool) ? "true or false"
        : type == typeof(int) ? $"a whole number from {int.MinValue} to {int.MaxValue}"
        : type == typeof(long) ? "a whole number of at most 19 digits"
        : type == typeof(ulong) ? $"a whole number from 0 to {ulong.MaxValue}"
        : type == typeof(float) ? $"a number within ±{float.MaxValue:G3} (float32)"
        : type == typeof(double) ? "a finite number"
        : type.IsArray ? $"a list of {Plural(type.GetElementType()!)}"
        : "an object";

    static string Plural(Type t) => t == typeof(string) ? "strings" : t == typeof(int) || t == typeof(long) ? "whole numbers" : "values";
}
