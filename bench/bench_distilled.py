"""Calibration images distilled from a model's BatchNorm statistics (zoocodec.eval.distilled): their time and
how well they match the statistics.

    nice -n 5 python bench/bench_distilled.py [--model effnet-lite0] [--images 32] [--tag T]

Makes the images (and stores them in the zoo cache), and writes bench/results/distilled-YYYY-MM-DD[-T].json:
the time, and the statistic loss of the images, of as many of the task's photo crops and of noise.
"""
from __future__ import annotations

import argparse
import resource

import torch

from bench_common import machine, save
from zoocodec.eval import data, refcache
from zoocodec.eval.distilled import BATCH, JITTER, LR, STEPS, TV, _bn_loss, _path, images
from zoocodec.eval.evaluate import load_weights
from zoocodec.eval.models import build


def main() -> None:
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
    refcache.write(_path(w, a.images), {"images": x})
    crops = data.photo_calibration()
    pick = torch.randperm(len(crops), generator=torch.Generator().manual_seed(1))[:a.images]
    with torch.no_grad():
        losses = {"distilled": float(_bn_loss(net, x)), "calibration crops": float(_bn_loss(net, crops[pick])),
                  "noise": float(_bn_loss(net, torch.randn(x.shape, generator=torch.Generator().manual_seed(1))))}
    print(info, losses, flush=True)
    save("distilled", {"machine": machine(), "what": __doc__.split("\n\n")[0].replace("\n", " "), "model": a.model,
                       "images": a.images, "steps": STEPS, "lr": LR, "jitter": JITTER, "tv": TV, "batch": BATCH, **info,
                       "statistic_loss": losses, "pixel_std": {"distilled": float(x.std()),
                                                               "calibration crops": float(crops.std())}}, a.tag)


if __name__ == "__main__":
    main()
