"""One language-model training step in PyTorch: the byte-level decoder-only transformer that Peer.Training
builds (Peer.Training/Model/LanguageModel.cs), as the bench's yardstick for Peer's whole training step.

Token and learned position embeddings; pre-norm blocks of causal multi-head attention (one qkv projection,
softmax(q k^T / sqrt(Dh)) with the future masked, an output projection) and a feed-forward layer per block:
a dense GELU FFW (fc1, fc2) or the PEER layer of peer_step.py (gathered rows + einsum); a final LayerNorm;
logits through the token embedding (tied head, Peer's default) or a separate head; mean cross-entropy.
A step: forward and loss, backward, global gradient-norm clipping, torch.optim.AdamW over every parameter.
State names are Peer's (tok_emb.weight, blocks.0.attn.qkv.weight, blocks.1.ffw.experts.down, ...).

  python3 lm_step.py time --dim 64 --layers 3 --blocks ffw,peer,ffw      # JSON lines, as peer_step.py
  python3 lm_step.py check --weights W --input X --output Y [shape options] # loss and gradients from files
"""
import argparse
import math
import sys
import time

sys.dont_write_bytecode = True  # the scripts live in the source tree
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import worker  # noqa: E402
from peer_step import PeerLayer, interop_tensors, load_interop  # noqa: E402


class Attention(nn.Module):
    def __init__(self, dim, heads, layers):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        with torch.no_grad():  # as Peer: the output projection scaled by 1/sqrt(2 * layers) (GPT-2), zero bias
            self.out.weight.mul_(1 / math.sqrt(2 * layers))
            self.out.bias.zero_()

    def forward(self, x):  # [B, T, d] -> [B, T, d]
        b, t, d = x.shape
        dh = d // self.heads
        qkv = self.qkv(x).view(b, t, 3 * self.heads, dh).transpose(1, 2)  # [B, 3H, T, Dh]
        q, k, v = qkv.split(self.heads, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(dh))
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, d))


class DenseFfw(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, a, kind):
        super().__init__()
        self.norm1 = nn.LayerNorm(a.dim)
        self.attn = Attention(a.dim, a.heads, a.layers)
        self.norm2 = nn.LayerNorm(a.dim)
        self.ffw = DenseFfw(a.dim, a.hidden or 4 * a.dim) if kind == "ffw" else \
            PeerLayer(a.dim, a.peer_experts, a.peer_heads, a.peer_top_k, a.peer_query_dim, sparse=False)

    def forward(self, x):  # [B, T, d]; the feed-forward layer sees [B*T, d] rows (PEER's BatchNorm: over all of them)
        x = x + self.attn(self.norm1(x))
        b, t, d = x.shape
        return x + self.ffw(self.norm2(x).reshape(b * t, d)).view(b, t, d)


class LanguageModel(nn.Module):
    def __init__(self, a, kinds):
        super().__init__()
        self.tok_emb = nn.Embedding(a.vocab, a.dim, _weight=torch.empty(a.vocab, a.dim).normal_(0.0, 0.02))
        self.pos_emb = nn.Embedding(a.context, a.dim, _weight=torch.empty(a.context, a.dim).normal_(0.0, 0.02))
        self.blocks = nn.ModuleList(Block(a, k) for k in kinds)
        self.norm = nn.LayerNorm(a.dim)
        self.head = nn.Linear(a.dim, a.vocab, bias=False) if a.untied else None

    def loss(self, windows):  # windows [B, T + 1]: inputs the first T tokens of each, targets the last T
        tokens, targets = windows[:, :-1], windows[:, 1:]
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(t))
        for block in self.blocks:
            x = block(x)
        logits = self.norm(x) @ (self.head.weight if self.head is not None else self.tok_emb.weight).t()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def block_kinds(a):
    """Peer's default: PEER in the middle block (layers // 2), dense elsewhere; 'dense' for dense everywhere."""
    if a.blocks == "dense":
        return ["ffw"] * a.layers
    if a.blocks:
        kinds = a.blocks.split(",")
        if len(kinds) != a.layers or any(k not in ("ffw", "peer") for k in kinds):
            raise SystemExit(f"--blocks = '{a.blocks}': expected {a.layers} kinds, each ffw or peer")
        return kinds
    return ["peer" if i == a.layers // 2 else "ffw" for i in range(a.layers)]


def build(a):
    if a.dim % a.heads != 0:
        raise SystemExit(f"--heads = {a.heads} does not divide --dim = {a.dim}")
    torch.manual_seed(a.seed)
    model = LanguageModel(a, block_kinds(a))
    params = sum(p.numel() for p in model.parameters())
    if a.expect_params and params != a.expect_params:
        raise SystemExit(f"parameter count {params} differs from the expected {a.expect_params} (Peer's model): the shapes do not agree")
    return model, params


def time_main(a):
    t0 = time.perf_counter()
    model, params = build(a)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    init_ms = (time.perf_counter() - t0) * 1e3
    gen = torch.Generator().manual_seed(a.seed + 1)

    def step():
        windows = torch.randint(0, a.vocab, (a.batch, a.context + 1), generator=gen)

        def optimizer():
            if a.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()

        r = worker.timed_step(lambda: model.loss(windows), lambda loss: loss.backward(), optimizer)
        opt.zero_grad(set_to_none=True)
        return r

    worker.run(a, step, {"script": "lm_step", "params": params, "tokens": a.batch * a.context, "init_ms": init_ms,
                         "blocks": block_kinds(a),
                         "config": {k: getattr(a, k) for k in ("vocab", "dim", "layers", "heads", "context", "batch", "hidden", "untied")}})


def check_main(a):
    model, _ = build(a)
    load_interop(model, worker.read_safetensors(a.weights))
    model.train(not a.eval)
    windows = worker.read_safetensors(a.input)["windows"].long()
    loss = model.loss(windows)
    loss.backward()
    out = {"loss": loss.detach().reshape(1)}
    for name, p in interop_tensors(model, params_only=True).items():
        out["grad." + name] = p.grad if p.grad is not None else torch.zeros_like(p)
    worker.write_safetensors(a.output, out)


def shape_args(p):
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--hidden", type=int, default=0, help="dense FFW hidden width (0: 4 * dim)")
    p.add_argument("--blocks", default="", help="kinds per block, e.g. ffw,peer,ffw; 'dense' for ffw everywhere; default PEER in the middle")
    p.add_argument("--peer-experts", type=int, default=64 * 64)
    p.add_argument("--peer-heads", type=int, default=4)
    p.add_argument("--peer-top-k", type=int, default=8)
    p.add_argument("--peer-query-dim", type=int, default=32)
    p.add_argument("--untied", action="store_true", help="a separate output head instead of the token embedding")
    p.add_argument("--expect-params", type=int, default=0, help="fail unless the model has this many parameters")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time training steps (JSON lines on stdout)")
    shape_args(t)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: off)")
    worker.add_common_args(t)
    c = sub.add_parser("check", help="loss and gradients of one batch from safetensors files")
    shape_args(c)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--weights", required=True, help="the model's parameters and buffers under Peer's names")
    c.add_argument("--input", required=True, help="windows: integer [B, T + 1]")
    c.add_argument("--output", required=True, help="loss [1] and grad.<name> for every parameter")
    c.add_argument("--eval", action="store_true", help="BatchNorm running statistics instead of batch statistics")
    a = p.parse_args()
    (time_main if a.command == "time" else check_main)(a)


if __name__ == "__main__":
    main()
