"""Peak memory of compress and decompress on a model with one large tensor, as a multiple of
that tensor's size in its own dtype, next to safetensors loading and saving the same file.

    python bench/bench_memory.py [--mib 1024] [--dtypes float32,bfloat16] [--specs uniform:bits=8,...]

Each measurement runs in a fresh Python process: it imports everything, runs the same step
once on a tiny model (so lazily imported modules and thread pools exist), resets the kernel's
peak-memory mark (/proc/self/clear_refs), records its resident set (VmRSS) and runs the step
on the large model; the peak (VmHWM: anonymous and file-backed pages, mmaps included) minus
that baseline, divided by the tensor's bytes, is the multiple. The peer steps are
`safetensors.torch.load_file` with every byte read (the peer of compress, which reads the
model), and `load_file` + `save_file` to a new file (the peer of decompress, which writes one).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ("uniform:bits=8", "uniform:step=0.001", "dq:bits=8", "kmeans:k=16", "lossless")

CHILD = r"""
import json, sys, time
import torch
from safetensors.torch import load_file, save_file
import zoocodec
from zoocodec.pipeline import core

step, src, dst, spec, warm_src, warm_dst = sys.argv[1:7]

def run(src, dst):
    if step == "compress":
        core.compress(src, dst, spec)
    elif step == "decompress":
        core.decompress(src, dst)
    elif step == "st-read":
        for v in load_file(src).values():  # every byte read (load_file maps the file lazily)
            v.reshape(-1).view(torch.uint8).max()
    elif step == "st-load-save":
        save_file(load_file(src), dst)

def status_kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

run(warm_src, warm_dst)
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current resident set
    f.write("5")
base = status_kib("VmRSS:")
t = time.perf_counter()
run(src, dst)
seconds = time.perf_counter() - t
print(json.dumps({"base_kib": base, "peak_kib": status_kib("VmHWM:"), "seconds": seconds}))
"""


def make_model(path: Path, numel: int, dtype: str, seed: int = 0) -> int:
    """A safetensors file with one large 2-D tensor (4096 columns, Laplacian-like weights) and
    a small bias; returns the large tensor's bytes."""
    import torch
    from safetensors.torch import save_file

    cols = 4096 if numel >= 4096 * 4 else 64
    rows = max(numel // cols, 1)
    g = torch.Generator().manual_seed(seed)
    w = torch.empty(rows, cols, dtype=torch.float32)
    for i in range(0, rows, 4096):  # in blocks: the generator's own peak stays small
        block = w[i : i + 4096]
        block.exponential_(generator=g)
        block.mul_(torch.randint(0, 2, block.shape, generator=g, dtype=torch.float32) * 2 - 1).mul_(0.02)
    w = w.to(getattr(torch, dtype))
    save_file({"big.weight": w, "big.bias": torch.zeros(rows, dtype=w.dtype)}, str(path))
    return w.nbytes


TREE = ROOT  # the checkout whose zoocodec is measured (--tree)


def measure(step: str, src: Path, dst: Path, warm_src: Path, warm_dst: Path, spec: str = "") -> dict:
    """Run one step in a fresh process: {"base_kib", "peak_kib", "seconds"}."""
    env = {**os.environ, "PYTHONPATH": str(TREE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", CHILD, step, str(src), str(dst), spec, str(warm_src), str(warm_dst)],
                         capture_output=True, text=True, env=env, check=False, cwd=TREE)  # (-c puts the cwd first)
    if out.returncode:
        raise RuntimeError(f"{step} {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth(m: dict, nbytes: int) -> float:
    """Peak resident memory above the baseline, in units of the tensor's bytes."""
    return (m["peak_kib"] - m["base_kib"]) * 1024 / nbytes


def run(mib: int, dtypes: list[str], specs: list[str], folder: Path) -> list[dict]:
    rows = []
    for dtype in dtypes:
        width = 4 if dtype == "float32" else 2
        model, small = folder / f"big-{dtype}.safetensors", folder / f"small-{dtype}.safetensors"
        nbytes = make_model(model, (mib << 20) // width, dtype)
        make_model(small, 1 << 16, dtype)
        peers = {}
        for step in ("st-read", "st-load-save"):
            m = measure(step, model, folder / "peer.safetensors", small, folder / "peer-small.safetensors")
            peers[step] = growth(m, nbytes)
            rows.append({"dtype": dtype, "tensor_bytes": nbytes, "step": step, "spec": None,
                         "peak_multiple": peers[step], "seconds": m["seconds"], **m})
            print(f"{dtype} {step:>12}: {peers[step]:.2f}x the tensor, {m['seconds']:.1f} s", flush=True)
        for spec in specs:
            zc, zc_small = folder / "out.zc", folder / "out-small.zc"
            for step, src, dst, wsrc, wdst in (("compress", model, zc, small, zc_small),
                                               ("decompress", zc, folder / "out.safetensors", zc_small,
                                                folder / "out-small.safetensors")):
                m = measure(step, src, dst, wsrc, wdst, spec)
                mult = growth(m, nbytes)
                peer = "st-read" if step == "compress" else "st-load-save"
                rows.append({"dtype": dtype, "tensor_bytes": nbytes, "step": step, "spec": spec,
                             "peak_multiple": mult, "peer": peer, "ratio_to_peer": mult / peers[peer],
                             "seconds": m["seconds"], **m})
                print(f"{dtype} {step:>12} {spec:<20}: {mult:.2f}x the tensor ({mult / peers[peer]:.2f}x {peer}), "
                      f"{m['seconds']:.1f} s", flush=True)
            for p in (zc, folder / "out.safetensors"):
                p.unlink(missing_ok=True)
        model.unlink()
    return rows


def main() -> None:
    from bench_common import machine, save

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="size of the large tensor in MiB")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--specs", default=",".join(SPECS), help="method specs, separated by ';' or ','")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--name", default="memory")
    ap.add_argument("--tree", default=None, help="measure the zoocodec of this checkout (e.g. an older commit)")
    args = ap.parse_args()
    global TREE
    TREE = Path(args.tree).resolve() if args.tree else ROOT
    specs = [s for s in args.specs.replace(";", ",").split(",") if s]
    specs = _rejoin(specs)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = run(args.mib, args.dtypes.split(","), specs, Path(tmp))
    commit = subprocess.run(
        ["git", "-C", str(TREE), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    path = save(args.name, {"machine": machine(("numpy", "torch", "safetensors")), "mib": args.mib, "commit": commit,
                            "unit": "peak resident memory above the process's baseline / the large tensor's "
                                    "bytes in its own dtype", "rows": rows})
    print(path)


def _rejoin(parts: list[str]) -> list[str]:
    """'uniform:bits=8,coder=ctx' split on commas back into specs: a part without ':' that is
    key=value belongs to the spec before it."""
    out: list[str] = []
    for p in parts:
        if out and "=" in p and ":" not in p:
            out[-1] += "," + p
        else:
            out.append(p)
    return out


if __name__ == "__main__":
    main()
