"""Where a zoocodec file's bits go against NNCodec's, tensor by tensor and by layer kind.

The head-to-head compares whole files; this says which layers make up the difference. It reads
the per-tensor payloads of a .zc file (`zoocodec.inspect`) and runs NNCodec (its own venv, as
the head-to-head does) at one qp with `nncodec_runner.py --sizes`, which records each tensor's
DeepCABAC payload. Both are grouped by layer kind (name and shape: stem, depthwise, pointwise
expand / project / other, head 1x1, classifier, 1-D); what is left of each file is its header.
Sizes only: quality is the head-to-head's business (pick the qp whose KL matches the file's).

    python bench/bench_h2h_bits.py FILE.zc --model effnet-lite0 --qp -36 --out bench/results/X.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import zoocodec
from bench_common import machine
from bench_h2h_run import RUNNER, Subject, nncodec_python

KINDS = ("stem", "depthwise", "pointwise expand", "pointwise project", "pointwise", "head 1x1", "conv",
         "classifier", "1-D")


def kind(name: str, shape: list[int]) -> str:
    """A tensor's layer kind from its shape, with EfficientNet-style names for the 1x1 convolutions."""
    if len(shape) < 2:
        return "1-D"
    if len(shape) == 2:
        return "classifier"
    if "stem" in name.lower():
        return "stem"
    if shape[1] == 1 and any(k > 1 for k in shape[2:]):
        return "depthwise"
    if all(k == 1 for k in shape[2:]):
        low = name.lower()
        return next((k for tag, k in (("expand", "pointwise expand"), ("project", "pointwise project"),
                                      ("head", "head 1x1")) if tag in low), "pointwise")
    return "conv"


def nncodec_sizes(subject: Subject, qp: int) -> tuple[int, dict[str, int]]:
    """NNCodec's whole bitstream and each tensor's payload at `qp`, on the head-to-head's float tensors."""
    from safetensors.numpy import save_file

    python = nncodec_python()
    if python is None:
        raise SystemExit("no NNCodec environment: run bench/peers/setup_nncodec.sh or set NNCODEC_PYTHON")
    with tempfile.TemporaryDirectory(prefix="h2h-bits-") as d:
        src = Path(d) / "in.safetensors"
        save_file({n: t.float().numpy() for n, t in subject.floats.items()}, str(src))
        done = subprocess.run([str(python), str(RUNNER), str(src), d, "--qp", str(qp), "--sizes"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"NNCodec runner failed: {done.stderr.strip()[-2000:]}")
        line = json.loads(done.stdout.splitlines()[-1])
    return line["bytes"], line["tensor_bytes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, help="the zoocodec .zc file")
    p.add_argument("--model", default="effnet-lite0", help="the zoo model the file holds")
    p.add_argument("--qp", type=int, required=True, help="NNCodec's qp to compare with")
    p.add_argument("--out", type=Path, required=True, help="JSON to write (a markdown table is printed)")
    a = p.parse_args()
    subject = Subject.load(a.model)
    info = zoocodec.inspect(a.file)
    ours = {t["name"]: t for t in info["tensors"]}
    missing = set(subject.float_names) - set(ours)
    if missing:
        raise SystemExit(f"{a.file} lacks {len(missing)} of {a.model}'s float tensors, e.g. {sorted(missing)[:3]}")
    nn_total, theirs = nncodec_sizes(subject, a.qp)
    units = {n for key in theirs for n in key.split("+")}
    if set(subject.float_names) - units:
        raise SystemExit(f"NNCodec's payloads lack {sorted(set(subject.float_names) - units)[:3]}")
    if any("+" in key for key in theirs):
        raise SystemExit("NNCodec coded several tensors in one unit: per-tensor sizes are not separable")

    tensors = []
    for n in subject.float_names:
        shape = list(subject.tensors[n].shape)
        tensors.append({"name": n, "shape": shape, "kind": kind(n, shape), "weights": subject.tensors[n].numel(),
                        "zoocodec_bytes": ours[n]["bytes"], "zoocodec_method": ours[n]["method"],
                        "nncodec_bytes": theirs[n]})
    zc_total = info["file_bytes"]
    params = subject.params
    rows = []
    for k in KINDS:
        ts = [t for t in tensors if t["kind"] == k]
        if not ts:
            continue
        w, zb, nb = (sum(t[f] for t in ts) for f in ("weights", "zoocodec_bytes", "nncodec_bytes"))
        rows.append({"kind": k, "tensors": len(ts), "weights": w, "zoocodec_bytes": zb, "nncodec_bytes": nb})
    rows.append({"kind": "header / unit headers", "tensors": 0, "weights": 0,
                 "zoocodec_bytes": zc_total - sum(t["zoocodec_bytes"] for t in tensors),
                 "nncodec_bytes": nn_total - sum(theirs.values())})
    for r in rows:
        r["zoocodec_bits_per_weight"] = 8 * r["zoocodec_bytes"] / r["weights"] if r["weights"] else None
        r["nncodec_bits_per_weight"] = 8 * r["nncodec_bytes"] / r["weights"] if r["weights"] else None
        r["nncodec_over_zoocodec"] = r["nncodec_bytes"] / r["zoocodec_bytes"] if r["zoocodec_bytes"] else None
        r["bytes_saved"] = r["nncodec_bytes"] - r["zoocodec_bytes"]
        r["share_of_saving"] = r["bytes_saved"] / (nn_total - zc_total)
    out = {"machine": machine(), "model": a.model, "file": a.file.name, "params": params, "qp": a.qp,
           "zoocodec_bytes": zc_total, "nncodec_bytes": nn_total,
           "zoocodec_bits_per_weight": 8 * zc_total / params, "nncodec_bits_per_weight": 8 * nn_total / params,
           "kinds": rows, "tensors": tensors}
    a.out.write_text(json.dumps(out, indent=2))

    print(f"{a.model}: {a.file.name} {8 * zc_total / params:.3f} bits/weight, NNCodec qp {a.qp} "
          f"{8 * nn_total / params:.3f} ({nn_total / zc_total:.3f}x)\n")
    print("| layer kind | tensors | weights | zoocodec bits/weight | NNCodec bits/weight | NNCodec / zoocodec "
          "| zoocodec KiB | NNCodec KiB | share of NNCodec's extra bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        bpw = (f"{r['zoocodec_bits_per_weight']:.3f} | {r['nncodec_bits_per_weight']:.3f}" if r["weights"]
               else "- | -")
        times = f"{r['nncodec_over_zoocodec']:.3f}x" if r["nncodec_over_zoocodec"] else "-"
        kib = f"{r['zoocodec_bytes'] / 1024:.1f} | {r['nncodec_bytes'] / 1024:.1f}"
        print(f"| {r['kind']} | {r['tensors']} | {r['weights']:,} | {bpw} | {times} | {kib} "
              f"| {100 * r['share_of_saving']:.1f}% |")


if __name__ == "__main__":
    main()
