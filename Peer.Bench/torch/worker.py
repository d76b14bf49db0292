"""What peer_step.py and lm_step.py share: thread control, memory figures, the JSON-lines protocol, and a
small safetensors reader and writer (the format is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}}, then the raw data), so no package beyond torch is needed.

A script builds one configuration, prints a "ready" line, then either times warm-up and measured steps at
each requested thread count by itself, or (--serve) takes commands on stdin, one per line, so that the
bench can interleave its steps with Peer's: "step THREADS" runs one step and answers with one "step" line,
"quit" answers with a "done" line holding the process's peak resident memory.
"""
import ctypes
import json
import os
import resource
import statistics
import struct
import sys
import time

import torch

_blas = None


def _openblas():
    """OpenBLAS as loaded by torch, or None. torch.set_num_threads sets OpenMP's threads only; OpenBLAS keeps
    its own pool (one thread per core), so a one-thread run must set both to be one thread."""
    global _blas
    if _blas is None:
        _blas = False
        for name in ("libopenblas.so.0", "libopenblas.so"):
            try:
                lib = ctypes.CDLL(name)
                lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
                lib.openblas_get_num_threads.restype = ctypes.c_int
                _blas = lib
                break
            except (OSError, AttributeError):
                continue
    return _blas or None


def set_threads(n):
    """Sets torch's intra-op threads and, when torch uses OpenBLAS, OpenBLAS's; returns OpenBLAS's count (or None)."""
    torch.set_num_threads(n)
    blas = _openblas()
    if blas is None:
        return None
    blas.openblas_set_num_threads(n)
    return blas.openblas_get_num_threads()


def rss_now():
    """Resident memory of this process now, in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss():
    """Peak resident memory of this process so far, in bytes (getrusage: kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# Resident memory once torch is imported and before a script builds anything: the baseline that the
# bench subtracts from the peak to get the memory of the configuration itself.
RSS_AT_IMPORT = rss_now()


def emit(obj):
    print(json.dumps(obj), flush=True)


def ms(t0, t1):
    return (t1 - t0) * 1e3


def add_common_args(p):
    p.add_argument("--threads", default="1,2", help="thread counts to time, comma-separated (default 1,2)")
    p.add_argument("--steps", type=int, default=5, help="measured steps per thread count (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps before them (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--serve", action="store_true", help="take 'step THREADS' and 'quit' commands on stdin (the bench's mode)")


def thread_counts(text):
    counts = [int(v) for v in text.split(",") if v.strip()]
    if not counts or any(c < 1 for c in counts):
        raise SystemExit(f"--threads = '{text}': expected positive integers separated by commas")
    return counts


def run(args, step, ready):
    """Prints `ready` (plus memory and version fields), then runs the steps: served from stdin with --serve,
    else warm-up and measured steps per thread count with a summary line each. `step()` returns the phase
    times in milliseconds: forward, backward, optimizer."""
    ready = dict(ready, event="ready", torch=torch.__version__, rss_import_bytes=RSS_AT_IMPORT, rss_bytes=rss_now(), peak_rss_bytes=peak_rss())
    emit(ready)
    if args.serve:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "quit":
                break
            if cmd[0] != "step" or len(cmd) != 2 or not cmd[1].isdigit() or int(cmd[1]) < 1:
                emit({"event": "error", "message": f"unknown command '{line.strip()}': expected 'step THREADS' or 'quit'"})
                continue
            n = int(cmd[1])
            blas = set_threads(n)
            emit(dict(step(), event="step", threads=n, blas_threads=blas))
    else:
        for n in thread_counts(args.threads):
            blas = set_threads(n)
            totals = []
            for i in range(args.warmup + args.steps):
                r = step()
                measured = i >= args.warmup
                emit(dict(r, event="step", threads=n, blas_threads=blas, warmup=not measured))
                if measured:
                    totals.append(r["total_ms"])
            median = statistics.median(totals)
            emit({"event": "summary", "threads": n, "total_ms": median, "tokens_per_s": ready["tokens"] / median * 1e3})
    emit({"event": "done", "peak_rss_bytes": peak_rss(), "rss_import_bytes": RSS_AT_IMPORT, "rss_bytes": rss_now()})


def timed_step(forward, backward, optimizer):
    """Runs the three phases, each a callable taking the previous one's result, and returns their times."""
    t0 = time.perf_counter()
    out = forward()
    t1 = time.perf_counter()
    backward(out)
    t2 = time.perf_counter()
    optimizer()
    t3 = time.perf_counter()
    return {"forward_ms": ms(t0, t1), "backward_ms": ms(t1, t2), "optimizer_ms": ms(t2, t3), "total_ms": ms(t0, t3)}


# --- safetensors without the package -------------------------------------------------------------------------
_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path):
    """{name: tensor} of a safetensors file (F32, F64, I32, I64)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def _raw(t):
    try:
        return t.numpy().tobytes()
    except RuntimeError:  # torch built without NumPy: slower, and check files are small
        return bytes(t.reshape(-1).view(torch.uint8).tolist())


def write_safetensors(path, tensors):
    """Writes {name: tensor} (F32, F64, I32, I64), atomically (temporary file, then rename)."""
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = _raw(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)
