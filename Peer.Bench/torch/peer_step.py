"""One PEER layer training step in PyTorch, written the way public implementations write it, as the bench's
yardstick for Peer's fused kernels (docs/peer-spec.md is the layer's contract; Peer.Bench/README.md shows
how the bench runs this script).

The layer: query = BatchNorm(W x + b) split into h heads of dq, each head's halves scored against two
sub-key tables shared by all heads, top-k of each half, top-k of the k*k candidate sums, softmax over the
kept scores, then the expert rows gathered into [T, h, k, d] tensors and combined with einsum:
y = sum over heads and kept experts of g * gelu(down . x) * up.

Two designs, chosen by the optimizer:
  adamw       the tables are dense nn.Embedding and nn.Parameter: every step builds dense [N, d] gradients
              and torch.optim.AdamW updates every row of every table.
  sparseadam  experts and sub-keys are nn.Embedding(sparse=True); the sub-key scores that are kept are
              recomputed from the gathered sub-key rows so that their gradients are sparse too;
              torch.optim.SparseAdam steps those tables, torch.optim.AdamW the rest.

  python3 peer_step.py time --experts 16384 --optimizer adamw          # JSON lines: per step, per thread count
  python3 peer_step.py check --weights W --input X --output Y --top-k K # one forward (and backward) from files
"""
import argparse
import math
import re
import sys
import time

sys.dont_write_bytecode = True  # the scripts live in the source tree
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import worker  # noqa: E402


class PeerLayer(nn.Module):
    """x [T, d] -> y [T, d]. State names follow Peer's interop names through interop_tensors()."""

    def __init__(self, dim, experts, heads, top_k, query_dim, sparse):
        super().__init__()
        n = math.isqrt(experts)
        if n * n != experts:
            raise SystemExit(f"--experts = {experts}: expected a perfect square n*n")
        if query_dim % 2 != 0:
            raise SystemExit(f"--query-dim = {query_dim}: expected an even number")
        if not 1 <= top_k <= n:
            raise SystemExit(f"--top-k = {top_k}: expected 1..sqrt(experts) = {n}")
        self.n, self.heads, self.top_k, self.half, self.sparse = n, heads, top_k, query_dim // 2, sparse
        hq = heads * query_dim
        self.query = nn.Linear(dim, hq)
        self.query_norm = nn.BatchNorm1d(hq)

        def table(rows, cols, std):
            return nn.Embedding(rows, cols, sparse=sparse, _weight=torch.empty(rows, cols).normal_(0.0, std))

        self.keys = nn.ModuleDict({"sub1": table(n, self.half, self.half ** -0.5), "sub2": table(n, self.half, self.half ** -0.5)})
        self.experts = nn.ModuleDict({"down": table(experts, dim, dim ** -0.5), "up": table(experts, dim, dim ** -0.5)})

    def retrieve(self, x):
        """Expert ids [T, h, k] and router weights [T, h, k], each head's in descending score order."""
        t = x.shape[0]
        q = self.query_norm(self.query(x)).view(t, self.heads, 2, self.half)
        qa, qb = q[:, :, 0], q[:, :, 1]  # [T, h, dq/2]
        k1, k2, k = self.keys["sub1"], self.keys["sub2"], self.top_k
        if self.sparse:
            with torch.no_grad():
                i1 = (qa @ k1.weight.t()).topk(k, dim=-1).indices  # [T, h, k]
                i2 = (qb @ k2.weight.t()).topk(k, dim=-1).indices
            s1 = torch.einsum("thc,thkc->thk", qa, k1(i1))
            s2 = torch.einsum("thc,thkc->thk", qb, k2(i2))
        else:
            s1, i1 = (qa @ k1.weight.t()).topk(k, dim=-1)  # scores of all n sub-keys: dense gradient
            s2, i2 = (qb @ k2.weight.t()).topk(k, dim=-1)
        candidates = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # [T, h, k*k]
        ids = (i1.unsqueeze(-1) * self.n + i2.unsqueeze(-2)).flatten(-2)
        scores, pos = candidates.topk(k, dim=-1)
        return ids.gather(-1, pos), scores.softmax(dim=-1)

    def forward(self, x):
        ids, g = self.retrieve(x)
        down = self.experts["down"](ids)  # [T, h, k, d]
        up = self.experts["up"](ids)
        a = F.gelu(torch.einsum("td,thkd->thk", x, down)) * g
        return torch.einsum("thk,thkd->td", a, up)

    def sparse_parameters(self):
        return [m.weight for m in (*self.keys.values(), *self.experts.values())]


_TABLE = re.compile(r"^(.*)(keys\.sub[12]|experts\.(down|up))\.weight$")


def interop_name(name):
    """PyTorch's state name -> Peer's interop name (keys.sub1.weight -> keys.sub1); None for num_batches_tracked."""
    if name.endswith("num_batches_tracked"):
        return None
    m = _TABLE.match(name)
    return m.group(1) + m.group(2) if m else name


def interop_tensors(module, params_only=False):
    """{interop name: tensor} of a module's parameters (and buffers unless params_only)."""
    items = list(module.named_parameters()) + ([] if params_only else list(module.named_buffers()))
    return {interop_name(n): t for n, t in items if interop_name(n) is not None}


def load_interop(module, weights):
    """Copies Peer-named weights into the module; every parameter and buffer must be given, nothing else."""
    own = interop_tensors(module)
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or extra:
        raise SystemExit(f"weights: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, t in own.items():
            if tuple(weights[name].shape) != tuple(t.shape):
                raise SystemExit(f"weights: '{name}' has shape {list(weights[name].shape)}; expected {list(t.shape)}")
            t.copy_(weights[name].to(t.dtype))


def optimizers(model, kind, lr=1e-3, weight_decay=0.01):
    """adamw: one AdamW over everything; sparseadam: SparseAdam over the sparse tables, AdamW over the rest."""
    if kind == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)]
    sparse = model.sparse_parameters()
    ids = {id(p) for p in sparse}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [torch.optim.SparseAdam(sparse, lr=lr), torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay)]


def time_main(args):
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = PeerLayer(args.dim, args.experts, args.heads, args.top_k, args.query_dim, sparse=args.optimizer == "sparseadam")
    opts = optimizers(model, args.optimizer)
    model.train()
    init_ms = (time.perf_counter() - t0) * 1e3
    gen = torch.Generator().manual_seed(args.seed + 1)

    def step():
        x = torch.randn(args.tokens, args.dim, generator=gen)
        gy = torch.randn(args.tokens, args.dim, generator=gen)

        def run_optimizers():
            for o in opts:
                o.step()

        r = worker.timed_step(lambda: model(x), lambda y: y.backward(gy), run_optimizers)
        for o in opts:
            o.zero_grad(set_to_none=True)
        return r

    params = sum(p.numel() for p in model.parameters())
    worker.run(args, step, {"script": "peer_step", "params": params, "tokens": args.tokens, "init_ms": init_ms,
                            "config": {k: getattr(args, k) for k in ("dim", "experts", "heads", "top_k", "query_dim", "tokens", "optimizer")}})


def check_main(args):
    w = worker.read_safetensors(args.weights)
    inp = worker.read_safetensors(args.input)
    hq, dim = w["query.weight"].shape
    n, half = w["keys.sub1"].shape
    model = PeerLayer(dim, w["experts.down"].shape[0], hq // (2 * half), args.top_k, 2 * half, sparse=args.design == "sparse")
    load_interop(model, w)
    model.train(not args.eval)
    x = inp["x"].float().requires_grad_(True)
    ids, g = model.retrieve(x)
    y = model(x)
    out = {"y": y, "indices": ids.to(torch.int32), "weights": g}
    if "grad_y" in inp:
        y.backward(inp["grad_y"].float())
        out["grad.x"] = x.grad
        for name, p in interop_tensors(model, params_only=True).items():
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            out["grad." + name] = grad.to_dense() if grad.is_sparse else grad
    worker.write_safetensors(args.output, out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time training steps (JSON lines on stdout)")
    t.add_argument("--dim", type=int, default=256)
    t.add_argument("--experts", type=int, default=128 * 128)
    t.add_argument("--heads", type=int, default=8)
    t.add_argument("--top-k", type=int, default=16)
    t.add_argument("--query-dim", type=int, default=256)
    t.add_argument("--tokens", type=int, default=1024)
    t.add_argument("--optimizer", choices=["adamw", "sparseadam"], default="adamw")
    worker.add_common_args(t)
    c = sub.add_parser("check", help="one forward (and backward when the input has grad_y) from safetensors files")
    c.add_argument("--weights", required=True, help="the layer's parameters and buffers under Peer's interop names")
    c.add_argument("--input", required=True, help="x [T, d] and optionally grad_y [T, d]")
    c.add_argument("--output", required=True, help="y, indices, weights, and grad.x, grad.<name> with grad_y")
    c.add_argument("--top-k", type=int, required=True)
    c.add_argument("--design", choices=["dense", "sparse"], default="dense")
    c.add_argument("--eval", action="store_true", help="BatchNorm running statistics instead of batch statistics")
    args = p.parse_args()
    (time_main if args.command == "time" else check_main)(args)


if __name__ == "__main__":
    main()
