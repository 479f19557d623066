"""Run NNCodec on a model's float tensors; executed by the NNCodec venv's Python.

    .venv-nncodec/bin/python bench/peers/nncodec_runner.py IN.safetensors OUT_DIR --qp -38 -32 -26

For each qp it encodes every float tensor with NNCodec's defaults (dependent quantization
on, 1-D tensors at nonweight_qp -75), decodes the bitstream, writes the decoded tensors to
OUT_DIR/qp<qp>.safetensors and prints one JSON line: qp, bytes, encode_s, decode_s, path
(times: the fastest of --repeat runs, excluding Python start-up and imports).
With --levels it also writes OUT_DIR/qp<qp>-levels.npz: per tensor the integer levels
NNCodec's entropy coder received (its quantization indices, before the dependent
quantizer's state halves them) and its dq flag, for coding-alone comparisons.
With --sizes the JSON line also carries tensor_bytes: each tensor's entropy-coded payload
(its data unit's DeepCABAC stream; the rest of `bytes` is unit headers and model parameters).
This file imports nothing from zoocodec: it runs in NNCodec's own environment.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np


def import_nncodec():
    """`nncodec.nn` imports torchvision only for dataset helpers: lend it a stand-in module.

    torchvision does not import beside the pinned torch, and nothing NNCodec's codec path
    runs needs it. Any attribute of the stand-in is an inert placeholder class.
    """
    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__getattr__ = lambda attr: type(attr, (), {"__init__": lambda self, *a, **k: None})
        return m

    names = ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.models")
    saved = {n: sys.modules.get(n) for n in names}
    stand_ins = {n: module(n) for n in names}
    for n, m in stand_ins.items():
        sys.modules[n] = m
        parent, _, child = n.rpartition(".")
        if parent:
            setattr(stand_ins[parent], child, m)
    try:
        from nncodec.nn import decode, encode
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return encode, decode


def capture_levels() -> dict[str, np.ndarray]:
    """Record what NNCodec's per-tensor entropy coding step receives (a wrapper, no change)."""
    from nncodec.nnc_core.coder import baseline

    seen: dict[str, np.ndarray] = {}
    inner = getattr(baseline, "_zc_original_encode", baseline.encode)
    baseline._zc_original_encode = inner

    def encode(encoder, approx_data, approx_param_base, param, ndu, *rest):
        seen[param] = np.array(approx_data["parameters"][param], dtype=np.int32, copy=True)
        seen[param + ":dq"] = np.array(int(approx_data["dq_flag"][param]), dtype=np.int32)
        seen[param + ":scan"] = np.array(int(ndu.get("scan_order", 0)), dtype=np.int32)
        return inner(encoder, approx_data, approx_param_base, param, ndu, *rest)

    baseline.encode = encode
    return seen


def capture_sizes() -> dict[str, int]:
    """Record each data unit's DeepCABAC payload bytes under its tensors' names (a wrapper, no change).

    NNCodec makes one encoder per data unit and coded tensors pass through baseline.encode
    on their way in; an encoder that coded no tensor (a codebook trial) is not counted.
    """
    from nncodec.nnc_core import coder
    from nncodec.nnc_core.coder import baseline

    sizes: dict[str, int] = {}
    base = getattr(coder.deepCABAC, "_zc_original_encoder", coder.deepCABAC.Encoder)
    coder.deepCABAC._zc_original_encoder = base
    inner = getattr(baseline, "_zc_original_encode", baseline.encode)
    baseline._zc_original_encode = inner

    class Encoder(base):
        def __init__(self):
            super().__init__()
            self.params: list[str] = []

        def finish(self):
            out = super().finish()
            if self.params:  # a unit of several tensors is keyed by their names joined with "+"
                sizes["+".join(self.params)] = len(out.tobytes())
            return out

    def encode(encoder, approx_data, approx_param_base, param, *rest):
        if isinstance(encoder, Encoder):
            encoder.params.append(param)
        return inner(encoder, approx_data, approx_param_base, param, *rest)

    coder.deepCABAC.Encoder = Encoder
    baseline.encode = encode
    return sizes


def run(tensors: dict[str, np.ndarray], qp: int, workdir: str, repeat: int = 1) -> tuple[bytes, dict, float, float]:
    """Encode and decode `repeat` times (the CPU is shared: keep the fastest of each)."""
    encode, decode = import_nncodec()
    quiet = io.StringIO()
    enc_s = dec_s = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(quiet):
            bs = encode(tensors, args={"qp": qp, "use_dq": True, "results": workdir, "verbose": False})
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(quiet):
            rec = decode(bytearray(bs), args={"verbose": False})
        t2 = time.perf_counter()
        enc_s, dec_s = min(enc_s, t1 - t0), min(dec_s, t2 - t1)
    return bytes(bs), rec, enc_s, dec_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", nargs="?", help="safetensors file of float32 tensors")
    p.add_argument("out", nargs="?", help="folder for the decoded tensors")
    p.add_argument("--qp", type=int, nargs="+", default=[-32])
    p.add_argument("--repeat", type=int, default=1, help="time the fastest of N encodes and decodes")
    p.add_argument("--self-test", action="store_true", help="round-trip a random tensor and exit")
    p.add_argument("--levels", action="store_true", help="also save the levels NNCodec entropy-codes")
    p.add_argument("--sizes", action="store_true", help="also print each tensor's payload bytes")
    a = p.parse_args()
    import torch  # NNCodec's own dependency; pins its threads

    torch.set_num_threads(1)
    if a.self_test:
        w = np.random.default_rng(0).normal(0, 0.05, (64, 64)).astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            bs, rec, _, _ = run({"w": w, "b": w[0].copy()}, -32, d)
        err = float(np.abs(rec["w"] - w).max())
        assert rec["w"].shape == w.shape and err < 0.01, f"NNCodec self-test: max error {err}"
        print(json.dumps({"self_test": "ok", "bytes": len(bs), "max_err": err}))
        return
    if not a.input or not a.out:
        p.error("give IN.safetensors and OUT_DIR (or --self-test)")
    from safetensors.numpy import load_file, save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_file(a.input).items()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for qp in a.qp:
        seen = capture_levels() if a.levels else None
        sizes = capture_sizes() if a.sizes else None
        with tempfile.TemporaryDirectory() as d:
            bs, rec, enc_s, dec_s = run(tensors, qp, d, a.repeat)
        if seen is not None:
            np.savez(out / f"qp{qp}-levels.npz", **seen)
        missing = set(tensors) - set(rec)
        if missing:
            raise SystemExit(f"NNCodec qp {qp}: decoded model lacks {sorted(missing)[:3]}")
        path = out / f"qp{qp}.safetensors"
        save_file({k: np.ascontiguousarray(rec[k], dtype=np.float32).reshape(tensors[k].shape) for k in tensors},
                  str(path))
        line = {"qp": qp, "bytes": len(bs), "encode_s": enc_s, "decode_s": dec_s, "path": str(path)}
        print(json.dumps(line | ({"tensor_bytes": sizes} if sizes is not None else {})), flush=True)


if __name__ == "__main__":
    main()
