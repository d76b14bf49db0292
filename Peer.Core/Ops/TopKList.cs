// The one sorted-insertion top-k of Peer: a list of at most k (score, id) pairs kept best first, best meaning the larger
// score and, on equal scores, the smaller id. Product-key retrieval (its portable selection kernel and its CPU body) and
// top-k MoE routing insert through it. The list's storage is a type argument, so that a kernel keeps it in local-memory
// views and a CPU body in stack memory while both make the same comparisons in the same order.
using ILGPU;

namespace Peer;

/// <summary>Storage of a top-k list: pair m is (<c>Score(m)</c>, <c>Id(m)</c>).</summary>
internal interface ITopKList
{
    float Score(int m);
    int Id(int m);
    void Set(int m, float score, int id);
}

/// <summary>A top-k list in two views (in a kernel, local memory of <c>k</c> elements each).</summary>
internal readonly struct ViewTopKList(ArrayView<float> scores, ArrayView<int> ids) : ITopKList
{
    readonly ArrayView<float> scores = scores;
    readonly ArrayView<int> ids = ids;

    public float Score(int m) => scores[m];
    public int Id(int m) => ids[m];
    public void Set(int m, float score, int id)
    {
        scores[m] = score;
        ids[m] = id;
    }
}

internal static class TopKList
{
    /// <summary>Whether (s, i) ranks before (s2, i2): a larger score, or an equal one with a smaller id.</summary>
    public static bool Better(float s, int i, float s2, int i2) => s > s2 || (s == s2 && i < i2);

    /// <summary>
    /// Inserts (s, i) into <paramref name="list"/>, whose first <paramref name="count"/> pairs (at most k) are sorted by
    /// <see cref="Better"/>; returns the new count, which grows up to k. A pair that ranks after all k kept ones is dropped.
    /// </summary>
    public static int Insert<TList>(TList list, int count, int k, float s, int i) where TList : struct, ITopKList
    {
        if (count == k && !Better(s, i, list.Score(k - 1), list.Id(k - 1))) return count;
        int pos = count < k ? count : k - 1;
        while (pos > 0 && Better(s, i, list.Score(pos - 1), list.Id(pos - 1)))
        {
            list.Set(pos, list.Score(pos - 1), list.Id(pos - 1));
            pos--;
        }
        list.Set(pos, s, i);
        return count < k ? count + 1 : count;
    }
}
