"""One image-classifier training step in PyTorch: the vision presets' model (Peer.Training/Model/VisionModel.cs), as
the vision suite's yardstick for Peer's VisionTrainer.Step().

A k x k convolutional stem of C channels (stride 1, zero padding) and GELU; a p x p patch embedding of its C features
(a strided convolution: one token per patch) plus learned position embeddings; pre-norm blocks of non-causal
multi-head self-attention (nn.MultiheadAttention) and a feed-forward layer (dense GELU FFW, or the PEER layer of
peer_step.py: gathered rows + einsum); a final LayerNorm, mean pooling over the tokens, a linear head; mean
cross-entropy. A step: half of the batch's images mirrored left to right (--flip), forward and loss, backward, global
gradient-norm clipping, torch.optim.AdamW over every parameter (dense AdamW also for PEER's tables).

  python3 vit_step.py time --batch 128 --stem 16 --hidden 144 --flip --threads 1,2   # JSON lines, as lm_step.py
"""
import argparse
import gzip
import os
import sys
import time

sys.dont_write_bytecode = True  # the scripts live in the source tree
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import worker  # noqa: E402
from peer_step import PeerLayer  # noqa: E402


class Block(nn.Module):
    def __init__(self, a, kind):
        super().__init__()
        self.norm1 = nn.LayerNorm(a.dim)
        self.attn = nn.MultiheadAttention(a.dim, a.heads, batch_first=True)
        self.norm2 = nn.LayerNorm(a.dim)
        self.ffw = nn.Sequential(nn.Linear(a.dim, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.dim)) if kind == "ffw" else \
            PeerLayer(a.dim, a.peer_experts, a.peer_heads, a.peer_top_k, a.peer_query_dim, sparse=False)

    def forward(self, x):  # [B, P, d]; the feed-forward layer sees [B*P, d] rows (PEER's BatchNorm: over all of them)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        b, t, d = x.shape
        return x + self.ffw(self.norm2(x).reshape(b * t, d)).view(b, t, d)


class VisionModel(nn.Module):
    def __init__(self, a, kind):
        super().__init__()
        self.size = a.image
        channels = 1
        self.stem = None
        if a.stem > 0:
            self.stem = nn.Conv2d(1, a.stem, a.stem_kernel, padding=a.stem_kernel // 2)
            channels = a.stem
        self.patch_embed = nn.Conv2d(channels, a.dim, a.patch, stride=a.patch)
        tokens = (a.image // a.patch) ** 2
        self.pos_emb = nn.Parameter(torch.empty(1, tokens, a.dim).normal_(0.0, 0.02))
        self.blocks = nn.ModuleList(Block(a, kind) for _ in range(a.layers))
        self.norm = nn.LayerNorm(a.dim)
        self.head = nn.Linear(a.dim, a.classes)

    def forward(self, images):  # [B, H*W] normalised pixels -> logits [B, classes]
        x = images.view(-1, 1, self.size, self.size)
        if self.stem is not None:
            x = F.gelu(self.stem(x))
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_emb  # [B, P, d]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def load_images(folder, size):
    """Fashion-MNIST's training images and labels (IDX, gzipped or not), normalised by their mean and deviation."""
    def read(name, offset):
        for path in (os.path.join(folder, name + ".gz"), os.path.join(folder, name)):
            if os.path.exists(path):
                opener = gzip.open if path.endswith(".gz") else open
                with opener(path, "rb") as f:
                    return torch.frombuffer(bytearray(f.read()[offset:]), dtype=torch.uint8)
        raise SystemExit(f"--data = '{folder}': no {name}.gz or {name} there")
    pixels = read("train-images-idx3-ubyte", 16).float().div_(255).view(-1, size * size)
    labels = read("train-labels-idx1-ubyte", 8).long()
    if pixels.shape[0] != labels.shape[0]:
        raise SystemExit(f"--data = '{folder}': {pixels.shape[0]} images but {labels.shape[0]} labels (or images not {size}x{size})")
    return (pixels - pixels.mean()) / pixels.std(), labels


def build(a):
    if a.image % a.patch != 0:
        raise SystemExit(f"--patch = {a.patch} does not divide --image = {a.image}")
    if a.dim % a.heads != 0:
        raise SystemExit(f"--heads = {a.heads} does not divide --dim = {a.dim}")
    if a.stem > 0 and a.stem_kernel % 2 != 1:
        raise SystemExit(f"--stem-kernel = {a.stem_kernel}: expected an odd side")
    if a.blocks not in ("ffw", "peer"):
        raise SystemExit(f"--blocks = '{a.blocks}': expected ffw or peer")
    torch.manual_seed(a.seed)
    model = VisionModel(a, a.blocks)
    return model, sum(p.numel() for p in model.parameters())


def time_main(a):
    t0 = time.perf_counter()
    model, params = build(a)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    gen = torch.Generator().manual_seed(a.seed + 1)
    if a.data:
        images, labels = load_images(a.data, a.image)
    else:
        images = torch.randn(4096, a.image * a.image, generator=gen)
        labels = torch.randint(0, a.classes, (4096,), generator=gen)
    init_ms = (time.perf_counter() - t0) * 1e3

    def step():
        ids = torch.randint(0, images.shape[0], (a.batch,), generator=gen)
        flip = torch.rand(a.batch, generator=gen) < 0.5 if a.flip else None

        def forward():  # the batch's gathering and flips count as forward work, as they do in Peer's step
            x, y = images[ids], labels[ids]
            batch = x
            if flip is not None:  # mirrored left to right: the last axis of each image's [H, W]
                v = x.view(a.batch, a.image, a.image)
                batch = torch.where(flip.view(-1, 1, 1), v.flip(-1), v).reshape(a.batch, -1)
            return F.cross_entropy(model(batch), y)

        def optimizer():
            if a.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()

        r = worker.timed_step(forward, lambda loss: loss.backward(), optimizer)
        opt.zero_grad(set_to_none=True)
        return r

    tokens = (a.image // a.patch) ** 2
    worker.run(a, step, {"script": "vit_step", "params": params, "tokens": a.batch * tokens, "images": a.batch, "init_ms": init_ms,
                         "data": a.data or "random",
                         "config": {k: getattr(a, k) for k in ("image", "patch", "stem", "stem_kernel", "dim", "layers", "heads", "hidden",
                                                              "blocks", "classes", "batch", "flip")}})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time training steps (JSON lines on stdout)")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--image", type=int, default=28, help="image side in pixels (square, grey-scale)")
    t.add_argument("--patch", type=int, default=7)
    t.add_argument("--stem", type=int, default=16, help="stem channels (0: no stem)")
    t.add_argument("--stem-kernel", type=int, default=3)
    t.add_argument("--dim", type=int, default=64)
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--hidden", type=int, default=144, help="dense FFW hidden width")
    t.add_argument("--blocks", default="ffw", help="feed-forward kind of every block: ffw or peer")
    t.add_argument("--peer-experts", type=int, default=64 * 64)
    t.add_argument("--peer-heads", type=int, default=4)
    t.add_argument("--peer-top-k", type=int, default=4)
    t.add_argument("--peer-query-dim", type=int, default=32)
    t.add_argument("--classes", type=int, default=10)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: off)")
    t.add_argument("--flip", action="store_true", help="mirror half of each batch left to right")
    t.add_argument("--data", default="", help="folder of Fashion-MNIST's IDX files (default: random images)")
    worker.add_common_args(t)
    a = p.parse_args()
    time_main(a)


if __name__ == "__main__":
    main()
