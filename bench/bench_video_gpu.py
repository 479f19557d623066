"""NVDEC vs software decode of weight video, on a GPU machine: which profiles NVDEC takes,
whether it returns exactly the software decoder's symbols, and how fast (to GPU memory).

    python bench/bench_video_gpu.py [--symbols FILE.npz] [--out bench/results]

The symbols are real minilm tensors quantized per channel (8/10/12 bits); without --symbols
they are made from the installed minilm. Also records whether this GPU has NVENC.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from zoocodec.codecs import nvdec, video


def load_symbols(path: str | None) -> dict[str, np.ndarray]:
    if path:
        return dict(np.load(path))
    from zoocodec.kernels import uniform as K
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.core import load

    out = {}
    for t in load("minilm").tensors():
        if t.name in ("embeddings.word_embeddings.weight", "encoder.layer.0.intermediate.dense.weight"):
            w = t.float64()
            for bits in (8,) if t.name.startswith("embeddings") else (8, 10, 12):
                out[f"{t.name}|{bits}"] = K.quantize(w, parse_spec(f"uniform:bits={bits}").steps_for(w), np)
    return out


def timed(fn, repeat: int = 3):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def probe(name: str, symbols: np.ndarray, opts: video.Options) -> dict:
    """Encode in software; decode in software and with NVDEC; compare and time both."""
    t_enc, (data, (expect,)) = timed(lambda: video.encode_members([symbols], opts), repeat=1)
    h = video.Header.unpack(data)
    row = {"tensor": name, "weights": int(symbols.size), **h.describe(), "lossless": h.lossless,
           "crf": opts.crf, "bits_per_weight": 8 * len(data) / symbols.size,
           "encode_s_software": t_enc}
    t_sw, sw = timed(lambda: video.decode_member(data, 0, hw="cpu"))
    row["decode_s_software"] = t_sw
    row["software_matches_encoder"] = bool(np.array_equal(sw, expect))
    packets = [p for p, _ in h.streams[0]]
    try:
        import cupy

        def gpu():
            frames = nvdec.decode_packets(packets, h)
            cupy.cuda.runtime.deviceSynchronize()
            return frames
        nvdec._DECODERS.clear()  # the first call pays for creating the decoder (then reused)
        row["decode_s_nvdec_first_call"], frames = timed(gpu, repeat=1)
        t_hw, frames = timed(gpu)
        gpu_symbols = h.layout.from_frames(frames, xp=cupy).astype(cupy.int64) + h.lo
        row["decode_s_nvdec"] = t_hw
        row["nvdec_matches_software"] = bool(np.array_equal(cupy.asnumpy(gpu_symbols), sw))
        row["nvdec_speedup"] = t_sw / t_hw
        if nvdec.can_decode(h):  # the whole path: bitstream -> int64 symbols in GPU memory
            row["decode_s_nvdec_to_symbols"], _ = timed(lambda: nvdec.decode_gpu(data, 0, verify=False))
    except Exception as e:  # no GPU, or a profile NVDEC refuses
        row["nvdec_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    for key in ("decode_s_software", "decode_s_nvdec", "decode_s_nvdec_to_symbols"):
        if key in row:
            row[key.replace("decode_s", "decode_mweights_per_s")] = symbols.size / row[key] / 1e6
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="skip the 11.7M-weight embedding table")
    args = ap.parse_args()
    symbols = load_symbols(args.symbols)
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        gpu = "none (no nvidia-smi)"
    result = {"device": gpu, "platform": platform.platform(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "nvdec_available": nvdec.nvdec_available(), "nvenc_available": nvdec.nvenc_available(),
              "nvenc_reason": nvdec.nvenc_reason(), "rows": []}
    import av

    result["pyav"] = av.__version__
    if result["nvdec_available"]:
        import PyNvVideoCodec

        result["pynvvideocodec"] = PyNvVideoCodec.__version__
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    mid = "encoder.layer.0.intermediate.dense.weight"
    cases = []
    for codec in ("hevc", "h264"):
        for pix in ("yuv420p", "gray"):
            for crf in (None, 20):
                for bits in (8, 10, 12):
                    if bits > max(video.CODECS[codec].depths):
                        continue
                    cases.append((f"{mid}|{bits}", video.Options(codec=codec, crf=crf, pix=pix, hw="cpu")))
    big = "embeddings.word_embeddings.weight|8"
    cases += (
        []
        if args.quick
        else [(big, video.Options(codec=c, crf=crf, hw="cpu")) for c in ("hevc", "h264") for crf in (None, 20)]
    )
    for name, opts in cases:
        row = probe(name, symbols[name].astype(np.int64), opts)
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
    # random access to one member of a checkpoint-like sequence, decoded by NVDEC into GPU memory
    base = symbols[f"{mid}|8"].astype(np.int64)
    rng = np.random.default_rng(0)
    seq = [base]
    for _ in range(5):  # each member moves 10% of the weights by one step
        step = rng.integers(-1, 2, base.shape) * (rng.random(base.shape) < 0.1)
        seq.append(np.clip(seq[-1] + step, -127, 127))
    data, _ = video.encode_members(seq, video.Options(codec="hevc", hw="cpu", keyint=3))
    h = video.Header.unpack(data)
    seq_row = {"sequence_members": len(seq), "keyint": 3}
    if nvdec.can_decode(h):
        u = nvdec.decode_gpu(data, member=4)
        seq_row["nvdec_member_4_exact"] = bool(np.array_equal(u.get(), seq[4].reshape(-1)))
    seq_row["software_member_4_exact"] = bool(
        np.array_equal(video.decode_member(data, 4, hw="cpu"), seq[4].reshape(-1))
    )
    result["sequence"] = seq_row
    print(json.dumps(seq_row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_gpu.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
