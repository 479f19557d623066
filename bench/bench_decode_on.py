"""The size cost of `--decode-on gpu` (only methods and coders with a GPU decoder), on the CPU.

1. Coders at equal levels: the same uniform symbols (per-channel min-max, 4 and 6 bits) coded
   by `ans` (the GPU decoder reads it) and by `ctx` and `cabac` (host only): bits per weight of
   the whole file, so the difference is the coder's alone.
2. Automatic mode at a loss budget, as a user runs it: `auto_compress(..., decode_on="any")`
   (context coders priced) against `decode_on="gpu"` (ans only), with the file's bits per
   weight, the coder chosen, the held-back loss and its 95% bound, and the seconds.
3. dq (the presets' method) at equal steps (per-channel min-max, 4 and 6 bits) under `ans`
   (GPU-decodable since the Trellis kind) against `ctx` and `cabac`: the trellis chooses its
   levels under each coder's own rate model, so the levels differ too; bits per weight and
   the model's SQNR of each.

    python bench/bench_decode_on.py [--models minilm,mnist-cnn,fmnist-cnn] [--auto mnist-cnn] [--loss 1%]
                                    [--dq minilm,mnist-cnn,fmnist-cnn]
Writes bench/results/decode-on-gpu-DATE.json (after each case).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_common import machine, save


def coder_cost(model: str, tmp: Path) -> list[dict]:
    from zoocodec.pipeline.core import compress

    rows = []
    for bits in (4, 6):
        sizes = {}
        for coder in ("ans", "ctx", "cabac"):
            start = time.perf_counter()
            rep = compress(model, tmp / f"{coder}.zc", f"uniform:bits={bits},coder={coder}")
            sizes[coder] = {"bits_per_weight": rep.bits_per_weight, "seconds": time.perf_counter() - start}
        best = min(("ctx", "cabac"), key=lambda c: sizes[c]["bits_per_weight"])
        cost = sizes["ans"]["bits_per_weight"] / sizes[best]["bits_per_weight"]
        rows.append({"model": model, "spec": f"uniform:bits={bits}", "coders": sizes, "best_host_coder": best,
                     "gpu_size_vs_best": cost})
        print(f"{model} uniform:bits={bits}: ans {sizes['ans']['bits_per_weight']:.3f}, ctx "
              f"{sizes['ctx']['bits_per_weight']:.3f}, cabac {sizes['cabac']['bits_per_weight']:.3f} bits/weight: "
              f"GPU-decodable {cost:.3f}x the best", flush=True)
    return rows


def dq_cost(model: str, tmp: Path) -> list[dict]:
    from zoocodec.pipeline.core import compress

    rows = []
    for bits in (4, 6):
        sizes = {}
        for coder in ("ans", "ctx", "cabac"):
            start = time.perf_counter()
            rep = compress(model, tmp / f"dq-{coder}.zc", f"dq:bits={bits},coder={coder}")
            sizes[coder] = {"bits_per_weight": rep.bits_per_weight, "sqnr_db": rep.sqnr_db,
                            "seconds": time.perf_counter() - start}
        best = min(("ctx", "cabac"), key=lambda c: sizes[c]["bits_per_weight"])
        cost = sizes["ans"]["bits_per_weight"] / sizes[best]["bits_per_weight"]
        rows.append({"model": model, "spec": f"dq:bits={bits}", "coders": sizes, "best_host_coder": best,
                     "gpu_size_vs_best": cost})
        print(f"{model} dq:bits={bits}: " + ", ".join(
            f"{c} {v['bits_per_weight']:.3f} bits/weight ({v['sqnr_db']:.2f} dB)" for c, v in sizes.items())
            + f": GPU-decodable {cost:.3f}x the best", flush=True)
    return rows


def auto_cost(model: str, loss: float, tmp: Path) -> dict:
    from zoocodec.tuning.auto import auto_compress

    row = {"model": model, "target_loss": loss}
    for where in ("any", "gpu"):
        start = time.perf_counter()
        r = auto_compress(model, tmp / f"auto-{where}.zc", loss, decode_on=where)
        row[where] = {"bits_per_weight": r.report.bits_per_weight, "method": r.method, "loss": r.loss,
                      "loss_high": r.loss_high, "within": r.within, "seconds": time.perf_counter() - start}
        print(f"{model} at {100 * loss:g}%, decode on {where}: {r.report.bits_per_weight:.3f} bits/weight, "
              f"{r.method}, loss {100 * r.loss:.3f}% (bound {100 * r.loss_high:.3f}%)", flush=True)
    row["gpu_size_vs_any"] = row["gpu"]["bits_per_weight"] / row["any"]["bits_per_weight"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,mnist-cnn,fmnist-cnn", help="coders at equal levels")
    ap.add_argument("--auto", default="mnist-cnn", help="automatic mode, both ways ('' for none)")
    ap.add_argument("--loss", default="1%")
    ap.add_argument("--dq", default="minilm,mnist-cnn,fmnist-cnn", help="dq under each coder, equal steps")
    args = ap.parse_args()
    from zoocodec.tuning.auto import parse_loss

    result = {"machine": machine(), "coders_at_equal_levels": [], "automatic_mode": [], "dq_at_equal_steps": []}
    with tempfile.TemporaryDirectory() as tmp:
        for m in filter(None, args.dq.split(",")):
            result["dq_at_equal_steps"] += dq_cost(m, Path(tmp))
            save("decode-on-gpu", result)
        for m in filter(None, args.models.split(",")):
            result["coders_at_equal_levels"] += coder_cost(m, Path(tmp))
            save("decode-on-gpu", result)
        for m in filter(None, args.auto.split(",")):
            result["automatic_mode"].append(auto_cost(m, parse_loss(args.loss), Path(tmp)))
            print(f"wrote {save('decode-on-gpu', result)}")


if __name__ == "__main__":
    main()
