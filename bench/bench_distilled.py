"""Calibration images distilled from a CNN's own BatchNorm statistics (ZeroQ, Cai et al. 2020).

Each BatchNorm layer stores the running mean and variance of its inputs over the data the model
was trained on. Random images whose batch statistics at every BatchNorm match those running
statistics look, layer by layer, like that data: ZeroQ's "distilled data". They never touch the
task's judged photos, so data-aware rounding can calibrate on them without over-fitting the few
offline photos that are not judged.

Adam on the pixels; loss = sum over BN layers of ||mean_batch - running_mean||_2 +
||std_batch - running_std||_2 (ZeroQ), with DeepInversion's random jitter and flips at every step
and a small total-variation prior. To stay cheap on a CPU the images are first optimised at half
resolution, then upsampled and refined at full size. Seeded; stored once per weights in the zoo
cache (zoocodec.eval.refcache), written whole. bench_h2h_levers.py and bench_h2h_damping.py calibrate on them
(`cal=distilled|mixed`); on effnet-lite0 they did not pay (2026-12-05h), so the package does not use them.

    nice -n 5 python bench/bench_distilled.py [--model effnet-lite0] [--images 32] [--tag T]

Makes the images (and stores them in the zoo cache), and writes bench/results/distilled-YYYY-MM-DD[-T].json:
the time, and the statistic loss of the images, of as many of the task's calibration crops and of noise.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

LR = 0.2
STEPS = (100, 20)  # Adam steps at half, then full resolution (at 2 CPU threads ~5 s and ~13 s per step of 32)
JITTER = 16  # pixels of random shift per step (at full resolution)
TV = 1e-4  # weight of the total-variation prior on the normalised pixels
BATCH = 32  # images optimised together: one batch's statistics are matched


def _bn_loss(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ZeroQ's statistic loss of one forward of `x`: sum over BN layers of the L2 distances of the batch's
    per-channel mean and std of the layer's input from its running ones."""
    terms: list[torch.Tensor] = []

    def hook(mod: torch.nn.BatchNorm2d, args: tuple, _out) -> None:
        y = args[0]
        mean = y.mean(dim=(0, 2, 3))
        std = (y.var(dim=(0, 2, 3), unbiased=False) + mod.eps).sqrt()
        terms.append(torch.linalg.vector_norm(mean - mod.running_mean)
                     + torch.linalg.vector_norm(std - (mod.running_var + mod.eps).sqrt()))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        net(x.contiguous(memory_format=torch.channels_last))
    finally:
        for h in handles:
            h.remove()
    return torch.stack(terms).sum()


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _batch(net: torch.nn.Module, n: int, size: int, gen: torch.Generator, steps: tuple[int, int],
           log: list) -> torch.Tensor:
    half = size // 2
    x = torch.randn(n, 3, half, half, generator=gen)
    for res, count in ((half, steps[0]), (size, steps[1])):
        if res != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
        x = x.detach().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=LR)
        shift = max(1, JITTER * res // size)
        for _ in range(count):
            dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
            flip = bool(torch.rand(1, generator=gen) < 0.5)
            xj = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = _bn_loss(net, xj.flip(-1) if flip else xj)
            total = loss + TV * _tv(x) * n
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            log.append(float(loss.detach()))
    return x.detach()


def images(net: torch.nn.Module, n: int, size: int = 224, seed: int = 0,
           steps: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict]:
    """`n` images (n x 3 x size x size, in the model's normalised input space) whose batch statistics match
    `net`'s BatchNorm running statistics, and what it cost (seconds, the loss at start and end); `steps`: Adam
    steps at half and full resolution (STEPS)."""
    net = net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    out, log = [], []
    for start in range(0, n, BATCH):
        out.append(_batch(net, min(BATCH, n - start), size, gen, steps or STEPS, log))
    return torch.cat(out), {"seconds": time.perf_counter() - t0, "first_loss": log[0], "last_loss": log[-1]}


def _path(weights: dict[str, torch.Tensor], n: int, size: int = 224, seed: int = 0):
    """The zoo cache file of these images. Not keyed by the thread count (a sum's order): any run's images are as
    good, and a run at other threads reuses them."""
    from zoocodec.eval import refcache

    return refcache.path("distilled", f"{torch.__version__} {n} {size} {seed} {LR} {STEPS} {JITTER} {TV} {BATCH}",
                         weights)


def cached(net: torch.nn.Module, weights: dict[str, torch.Tensor], n: int, size: int = 224,
           seed: int = 0) -> torch.Tensor:
    """images(net, n, size, seed), stored in the zoo cache under a hash of `weights` and the settings."""
    from zoocodec.eval import refcache

    path = _path(weights, n, size, seed)
    kept = refcache.read(path, ("images",))
    if kept is not None and kept[0].shape == (n, 3, size, size):
        return kept[0]
    x, _info = images(net, n, size, seed)
    refcache.write(path, {"images": x})
    return x


def main() -> None:
    from bench_common import machine, save
    from zoocodec.eval.evaluate import load_weights, tasks_of
    from zoocodec.eval.models import build

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="effnet-lite0")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--tag", default="", help="results file suffix")
    a = p.parse_args()
    torch.set_num_threads(2)
    w = load_weights(a.model)
    net = build(a.model, w).to(memory_format=torch.channels_last)
    start = resource.getrusage(resource.RUSAGE_SELF)
    x, info = images(net, a.images)
    end = resource.getrusage(resource.RUSAGE_SELF)
    info["cpu_seconds"] = end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime
    from zoocodec.eval import refcache

    refcache.write(_path(w, a.images), {"images": x})
    crops = torch.as_tensor(tasks_of(a.model)[0].calibration())
    pick = torch.randperm(len(crops), generator=torch.Generator().manual_seed(1))[:a.images]
    with torch.no_grad():
        losses = {"distilled": float(_bn_loss(net, x)), "calibration crops": float(_bn_loss(net, crops[pick])),
                  "noise": float(_bn_loss(net, torch.randn(x.shape, generator=torch.Generator().manual_seed(1))))}
    print(info, losses, flush=True)
    save("distilled", {"machine": machine(), "what": __doc__.split("\n\n")[0], "model": a.model, "images": a.images,
                       "steps": STEPS, "lr": LR, "jitter": JITTER, "tv": TV, "batch": BATCH, **info,
                       "statistic_loss": losses, "pixel_std": {"distilled": float(x.std()),
                                                               "calibration crops": float(crops.std())}}, a.tag)


if __name__ == "__main__":
    main()
