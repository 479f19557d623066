"""Two models the zoo does not have, for bench/bench_outside_zoo.py: a ResNet-style CNN
(residual basic blocks, BatchNorm, strided 3x3 and 1x1 shortcut convolutions) and a small
Vision Transformer (4x4 patches, class token, pre-norm attention blocks). Both classify
Fashion-MNIST (Debian's dataset-fashion-mnist) and are trained here, briefly and seeded, by

    nice -n 10 python bench/bench_outside_zoo_nets.py [--epochs 2]

which writes bench/outside_zoo/{resnet,vit}.safetensors and training.json. Automatic mode
builds them as a user's model: `--module bench_outside_zoo_nets:resnet` (bench/ on PYTHONPATH).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent / "outside_zoo"
SEED = 20261204


class Block(nn.Module):
    """He et al.'s basic block: two 3x3 convolutions, a 1x1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, patch: int = 4, dim: int = 64, depth: int = 4, heads: int = 4, hidden: int = 128,
                 classes: int = 10, side: int = 28):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (side // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        # t.shape[0], not len(t): an ONNX trace keeps the batch size dynamic
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def resnet() -> nn.Module:
    """The factory `--module bench_outside_zoo_nets:resnet` names."""
    return ResNet()


def vit() -> nn.Module:
    """The factory `--module bench_outside_zoo_nets:vit` names."""
    return ViT()


FACTORIES = {"resnet": resnet, "vit": vit}


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def train(name: str, epochs: int, batch: int = 128) -> dict:
    """Seeded AdamW with a one-cycle schedule, horizontal flips; one thread, deterministic."""
    from safetensors.torch import save_file

    from zoocodec.eval.data import fashion_mnist

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    (x, y), (xt, yt) = fashion_mnist("train"), fashion_mnist("test")
    net = FACTORIES[name]()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    steps = math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps)
    start, per_epoch = time.perf_counter(), []
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        flips = torch.rand(len(x), generator=gen) < 0.5
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = torch.where(flips[idx].view(-1, 1, 1, 1), x[idx].flip(3), x[idx])
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), y[idx]).backward()
            opt.step()
            sched.step()
        per_epoch.append({"epoch": epoch, "test_top1": accuracy(net, xt, yt),
                          "seconds": round(time.perf_counter() - start, 1)})
        print(name, per_epoch[-1], flush=True)
    HERE.mkdir(exist_ok=True)
    tmp = HERE / f".{name}.safetensors.tmp"
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(tmp),
              metadata={"epochs": str(epochs), "test_top1": f"{per_epoch[-1]['test_top1']:.4f}"})
    tmp.replace(HERE / f"{name}.safetensors")
    return {"params": sum(p.numel() for p in net.parameters()), "epochs": epochs, "batch": batch, "seed": SEED,
            "optimizer": "AdamW lr 3e-3 one-cycle, weight decay 0.05", "per_epoch": per_epoch,
            "test_top1": per_epoch[-1]["test_top1"], "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(FACTORIES))
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    log = HERE / "training.json"
    done = json.loads(log.read_text()) if log.exists() else {}
    for name in a.models:
        done[name] = train(name, a.epochs)
        log.write_text(json.dumps(done, indent=1) + "\n")


if __name__ == "__main__":
    main()
