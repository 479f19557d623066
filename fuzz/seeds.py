"""Write a few valid inputs per fuzz target into tests/fuzz_corpus/TARGET/ (seeds: the
fuzzer starts from real streams, not from nothing). Layouts: fuzz/targets.cpp."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from zoocodec.codecs import ans, native

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_corpus"


def save(target: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def main() -> None:
    g = np.random.default_rng(0)
    for n, nsym, chunk in ((0, 3, 4), (5, 1, 4), (300, 7, 64), (5000, 200, 4096), (9000, 600, 5000)):
        s = g.integers(0, nsym, n).astype(np.uint8 if nsym <= 256 else np.uint16)
        save("rans", native.rans_encode(s, nsym, chunk=chunk))
    for k, n in ((3, 100), (20, 5000)):
        f = g.integers(0, 256, k).astype(np.int64)
        f[:2] = (10, 3)
        s = g.choice(np.flatnonzero(f), n, p=f[f > 0] / f[f > 0].sum()).astype(np.uint8)
        body = native.rans_encode_freqs(s, f, chunk=1000)
        save("rans_body", bytes([k - 2]) + bytes(f.astype(np.uint8)) + struct.pack("<H", n) + body)
    for width, n in ((2, 700), (4, 5000)):
        w = g.laplace(0, 0.05, n).astype(np.float16 if width == 2 else np.float32)
        planes = native.engine().float_split(w.view(np.uint16 if width == 2 else np.uint32), 1)
        head, parts = width == 4, b""
        for k, p in enumerate(planes):
            body = native.rans_encode(p, 256) if k == 0 else p.tobytes()
            head |= (k == 0) << (k + 1)
            parts += struct.pack("<H", len(body)) + body
        save("floatplanes", bytes([head]) + struct.pack("<H", n) + parts)
    eng = native.engine()
    for rows, cols, trellis in ((8, 40, 0), (30, 50, 1)):
        levels = np.rint(g.laplace(0, 1.5, (rows, cols))).astype(np.int32)
        save("cabac", struct.pack("<H", rows * cols) + eng.cabac_encode(levels, trellis, 256, 1))
    for kind, k, rows, n in ((0, 0, 1, 300), (1, 0, 3, 6000), (2, 16, 2, 5000)):
        s = g.integers(0, k or 40, n) - (0 if k else 20)
        save("fused", bytes([kind, k, rows]) + struct.pack("<H", n) + ans.encode(s))
    # float planes the AVX2 decoder takes: 8-lane substreams of 4096 under 12-bit tables, grouped
    for width, n in ((2, 20000), (4, 13000)):
        w = np.random.default_rng(width).laplace(0, 0.05, n).astype(np.float16 if width == 2 else np.float32)
        planes = native.engine().float_split(w.view(np.uint16 if width == 2 else np.uint32), 1)
        body = native.rans_encode(planes[0], 256, chunk=4096, max_bits=12)
        parts = struct.pack("<H", len(body)) + body
        parts += b"".join(struct.pack("<H", p.size) + p.tobytes() for p in planes[1:])
        save("floatplanes", bytes([(width == 4) | 2]) + struct.pack("<H", n) + parts)


if __name__ == "__main__":
    main()
