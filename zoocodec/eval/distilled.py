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
cache (zoocodec.eval.refcache), written whole. The photo task (effnet-lite0) calibrates on its 256 photo crops
and 32 of these (zoocodec.eval.tasks): at 17 fixed plans 0.6% smaller at equal KL than on the crops (of three
photos, then) alone; on the distilled images alone 2.1% larger (bench/results/h2h-levers-2026-12-05h-effnet-cal*.json).
"""
from __future__ import annotations

import time
from collections.abc import Callable

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
           log: list, tick: Callable[[int], None]) -> torch.Tensor:
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
            tick(len(log))
    return x.detach()


def images(net: torch.nn.Module, n: int, size: int = 224, seed: int = 0, steps: tuple[int, int] | None = None,
           progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, dict]:
    """`n` images (n x 3 x size x size, in the model's normalised input space) whose batch statistics match
    `net`'s BatchNorm running statistics, and what it cost (seconds, the loss at start and end); `steps`: Adam
    steps at half and full resolution (STEPS). `progress(done, total)` gets the Adam steps done over all
    batches: 0 first, then after each step (minutes on a CPU, so a caller's time-left estimate counts them; a
    full-resolution step takes 1.5-2x a half-resolution one, effnet-lite0 at 2 threads, so until the first
    full-resolution step such an estimate runs 1-2 minutes short of STEPS' 4 minutes or so)."""
    net = net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    steps = steps or STEPS
    total = -(-n // BATCH) * sum(steps)
    tick = (lambda done: progress(done, total)) if progress else (lambda _done: None)
    tick(0)
    t0 = time.perf_counter()
    out, log = [], []
    for start in range(0, n, BATCH):
        out.append(_batch(net, min(BATCH, n - start), size, gen, steps, log, tick))
    return torch.cat(out), {"seconds": time.perf_counter() - t0, "first_loss": log[0], "last_loss": log[-1]}


def _path(weights: dict[str, torch.Tensor], n: int, size: int = 224, seed: int = 0):
    """The zoo cache file of these images. Not keyed by the thread count (a sum's order): any run's images are as
    good, and a run at other threads reuses them."""
    from zoocodec.eval import refcache

    return refcache.path("distilled", f"{torch.__version__} {n} {size} {seed} {LR} {STEPS} {JITTER} {TV} {BATCH}",
                         weights)


def cached(net: torch.nn.Module, weights: dict[str, torch.Tensor], n: int, size: int = 224, seed: int = 0,
           progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """images(net, n, size, seed), stored in the zoo cache under a hash of `weights` and the settings
    (`progress` is called only where they are made)."""
    from zoocodec.eval import refcache

    path = _path(weights, n, size, seed)
    kept = refcache.read(path, ("images",))
    if kept is not None and kept[0].shape == (n, 3, size, size):
        return kept[0]
    x, _info = images(net, n, size, seed, progress=progress)
    refcache.write(path, {"images": x})
    return x


def for_zoo(model: str, n: int, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """cached() images of zoo model `model`'s original weights."""
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.eval.models import build

    weights = load_weights(model)
    return cached(build(model, weights).to(memory_format=torch.channels_last), weights, n, progress=progress)
