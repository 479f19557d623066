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

4. The presets (`balanced`, `small`: dq:coder=ctx at a bits-per-weight target) as the CLI runs
   them, with and without `--decode-on gpu` (there dq:coder=ans): the size is the target, so the
   cost shows in the model's SQNR.

    python bench/bench_decode_on.py [--models minilm,mnist-cnn,fmnist-cnn] [--auto mnist-cnn] [--loss 1%]
                                    [--dq minilm,mnist-cnn,fmnist-cnn] [--presets minilm,mnist-cnn,fmnist-cnn]
Writes bench/results/decode-on-gpu-DATE.json after each case of sections 1-3, and
decode-on-gpu-presets-DATE.json after each preset (a run of the presets alone leaves the day's
other file as it is).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_common import machine, save


def coder_cost(model: str, tmp: Path, method: str) -> list[dict]:
    """`method` (uniform: equal levels; dq: equal steps) at 4 and 6 bits under ans, the GPU-decodable
    coder, against the best host context coder."""
    from zoocodec.pipeline.core import compress

    rows = []
    for bits in (4, 6):
        sizes = {}
        for coder in ("ans", "ctx", "cabac"):
            start = time.perf_counter()
            rep = compress(model, tmp / f"{method}-{coder}.zc", f"{method}:bits={bits},coder={coder}")
            sizes[coder] = {"bits_per_weight": rep.bits_per_weight, "sqnr_db": rep.sqnr_db,
                            "seconds": time.perf_counter() - start}
        best = min(("ctx", "cabac"), key=lambda c: sizes[c]["bits_per_weight"])
        cost = sizes["ans"]["bits_per_weight"] / sizes[best]["bits_per_weight"]
        rows.append({"model": model, "spec": f"{method}:bits={bits}", "coders": sizes, "best_host_coder": best,
                     "gpu_size_vs_best": cost})
        print(f"{model} {method}:bits={bits}: " + ", ".join(
            f"{c} {v['bits_per_weight']:.3f} bits/weight ({v['sqnr_db']:.2f} dB)" for c, v in sizes.items())
            + f": GPU-decodable {cost:.3f}x the best", flush=True)
    return rows


def preset_cost(model: str, tmp: Path) -> list[dict]:
    import contextlib
    import io
    import json
    import sys

    from zoocodec.cli import main

    rows = []
    for preset in ("balanced", "small"):
        row = {"model": model, "preset": preset}
        for where in ("any", "gpu"):
            out, start = io.StringIO(), time.perf_counter()
            argv, sys.argv = sys.argv, ["zoocodec", "compress", model, "-o", str(tmp / f"{preset}-{where}.zc"),
                                        "--preset", preset, "--decode-on", where, "--json"]
            try:
                with contextlib.redirect_stdout(out):
                    main()
            except SystemExit as e:
                if e.code:
                    raise
            finally:
                sys.argv = argv
            d = json.loads(out.getvalue())
            row[where] = {"bits_per_weight": d["bits_per_weight"], "sqnr_db": d["sqnr_db"],
                          "seconds": time.perf_counter() - start}
        row["gpu_sqnr_minus_any_db"] = row["gpu"]["sqnr_db"] - row["any"]["sqnr_db"]
        rows.append(row)
        print(f"{model} --preset {preset}: " + ", ".join(
            f"decode on {w} {row[w]['bits_per_weight']:.3f} bits/weight, {row[w]['sqnr_db']:.2f} dB"
            for w in ("any", "gpu")), flush=True)
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
    ap.add_argument("--presets", default="minilm,mnist-cnn,fmnist-cnn", help="the presets, decode on any vs gpu")
    args = ap.parse_args()
    from zoocodec.tuning.auto import parse_loss

    result = {"machine": machine(), "coders_at_equal_levels": [], "automatic_mode": [], "dq_at_equal_steps": [],
              "presets": []}
    with tempfile.TemporaryDirectory() as tmp:
        for m in filter(None, args.presets.split(",")):
            result["presets"] += preset_cost(m, Path(tmp))
            save("decode-on-gpu-presets", result)
        for m in filter(None, args.dq.split(",")):
            result["dq_at_equal_steps"] += coder_cost(m, Path(tmp), "dq")
            save("decode-on-gpu", result)
        for m in filter(None, args.models.split(",")):
            result["coders_at_equal_levels"] += coder_cost(m, Path(tmp), "uniform")
            save("decode-on-gpu", result)
        for m in filter(None, args.auto.split(",")):
            result["automatic_mode"].append(auto_cost(m, parse_loss(args.loss), Path(tmp)))
            print(f"wrote {save('decode-on-gpu', result)}")


if __name__ == "__main__":
    main()
