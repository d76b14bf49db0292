// Writing tables split by columns between ranks into one checkpoint: the safetensors file holds each table whole, [N, d],
// under its usual name, so a checkpoint of a distributed run loads in one process and the other way round. Rank 0
// writes; for each split table, block of rows by block of rows, every rank sends its columns of the block to rank 0
// (an all-to-all whose only receiver is rank 0), which lays them side by side and writes the rows. No rank ever holds
// a whole table. The other ranks run the same sequence of blocks without a file; if rank 0's write fails part way,
// it runs the blocks left (Drain) so that no rank is left waiting.
using ILGPU.Runtime;
using Peer.Distributed;
using Peer.IO;

namespace Peer.Training;

/// <summary>The split tables of one checkpoint, in the order they are written, and how far their gathering went.</summary>
internal sealed class ShardGather(Communicator group, IReadOnlyList<(string Name, Tensor Slice, ColumnShard Shard)> tables)
{
    const int BlockElements = 1 << 20; // floats of a gathered block of rows on rank 0
    int nextTable, nextBlock;

    /// <summary>The tables in writing order.</summary>
    public IReadOnlyList<(string Name, Tensor Slice, ColumnShard Shard)> Tables => tables;

    /// <summary>Rank 0's source of table <paramref name="index"/> for the safetensors writer: its whole <c>[N, d]</c> bytes.</summary>
    public SafeTensorSource Source(int index)
    {
        var (name, slice, shard) = tables[index];
        return new SafeTensorSource(name, SafeDType.F32, [slice.Shape[0], shard.Dim], stream => Gather(index, stream));
    }

    /// <summary>Runs every block not gathered yet (on ranks other than 0, all of them), writing nothing.</summary>
    public void Drain()
    {
        while (nextTable < tables.Count) Gather(nextTable, null);
    }

    void Gather(int index, Stream? stream)
    {
        if (index != nextTable) throw new InvalidOperationException($"Table {tables[index].Name} gathered out of order: expected {tables[nextTable].Name}.");
        var (_, slice, shard) = tables[index];
        int rows = slice.Shape[0], d = shard.Dim, size = group.Size, w = shard.MyCount;
        int block = Math.Max(1, Math.Min(rows, BlockElements / Math.Max(1, d))), blocks = (rows + block - 1) / Math.Max(1, block);
        var send = new float[block * w];
        var gathered = group.Rank == 0 ? new float[block * d] : [];
        var whole = stream is null ? [] : new float[block * d];
        var sendCounts = new int[size];
        var recvCounts = new int[size];
        while (nextBlock < blocks)
        {
            int from = nextBlock * block, n = Math.Min(block, rows - from);
            if (n * w > 0) slice.View.SubView((long)from * w, n * w).CopyToCPU(ref send[0], n * w);
            sendCounts[0] = n * w;
            for (int s = 0; s < size; s++) recvCounts[s] = group.Rank == 0 ? n * shard.Count(s) : 0;
            group.AllToAllV<float>(send.AsSpan(0, n * w), sendCounts, gathered.AsSpan(0, group.Rank == 0 ? n * d : 0), recvCounts);
            nextBlock++; // counted before writing: a failed write must not repeat the collective
            if (stream is null) continue;
            // Rank r's block is [n, d_r] at offset n * Start(r): lay each row's pieces side by side.
            for (int s = 0; s < size; s++)
                for (int i = 0; i < n; i++)
                    Array.Copy(gathered, n * shard.Start(s) + i * shard.Count(s), whole, i * d + shard.Start(s), shard.Count(s));
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(whole.AsSpan(0, n * d)));
        }
        nextTable++;
        nextBlock = 0;
    }
}
