"""Train the zoo's `fmnist-cnn` (zoocodec.eval.nets.FashionNet) on Debian's dataset-fashion-mnist.

Seeded and deterministic on the CPU (one thread, deterministic algorithms): the same
command gives the same bytes. Writes zoocodec/data/fmnist-cnn/epoch-NN.safetensors after
every epoch (a real checkpoint sequence), model.safetensors (the last one) and
training.json (test accuracy per epoch, settings, time).

    nice -n 10 python scripts/train_fmnist.py [--epochs 4] [--out zoocodec/data/fmnist-cnn]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from zoocodec.eval.data import fashion_mnist
from zoocodec.eval.nets import FashionNet
from zoocodec.fsutil import publish

SEED = 20240601


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def save(net: torch.nn.Module, path: Path, meta: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    publish(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "zoocodec/data/fmnist-cnn")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    x_train, y_train = fashion_mnist("train")
    x_test, y_test = fashion_mnist("test")
    net = FashionNet()
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(x_train) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    args.out.mkdir(parents=True, exist_ok=True)
    log = {"seed": SEED, "epochs": args.epochs, "batch": args.batch, "max_lr": args.lr,
           "params": sum(p.numel() for p in net.parameters()), "torch": torch.__version__,
           "machine": platform.machine(), "per_epoch": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(x_train), generator=gen)
        flips = torch.rand(len(x_train), generator=gen) < 0.5  # horizontal flip: clothes are mirror-symmetric
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            xb = x_train[idx]
            xb = torch.where(flips[idx].view(-1, 1, 1, 1), xb.flip(3), xb)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), y_train[idx]).backward()
            opt.step()
            sched.step()
        acc = accuracy(net, x_test, y_test)
        elapsed = time.perf_counter() - start
        log["per_epoch"].append({"epoch": epoch, "test_top1": acc, "seconds": round(elapsed, 1)})
        save(net, args.out / f"epoch-{epoch:02d}.safetensors", {"epoch": str(epoch), "test_top1": f"{acc:.4f}"})
        print(f"epoch {epoch}: test top-1 {acc:.4f} ({elapsed:.0f} s)", flush=True)
    save(net, args.out / "model.safetensors", {"epoch": str(args.epochs), "test_top1": f"{acc:.4f}"})
    log["test_top1"] = acc
    log["seconds"] = round(time.perf_counter() - start, 1)
    tmp = args.out / ".training.json.tmp"
    tmp.write_text(json.dumps(log, indent=2) + "\n")
    publish(tmp, args.out / "training.json")


if __name__ == "__main__":
    main()
