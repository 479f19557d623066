"""The shared AVX2 decoder of 8-lane byte substreams (native/rans_avx2.cpp) against the scalar
decoder it stands in for: a second process with ZOOCODEC_NO_AVX2 set decodes the same streams
(rANS bodies under packed and 8-byte tables, the fused dequantization, float planes, dq walks), damaged
copies included, to the same bytes and the same failures."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

from zoocodec.codecs import native

N = 3 * 65536 + 4100  # a short last substream: it leaves the group early


def symbols(n: int, seed: int) -> np.ndarray:
    return np.clip(np.rint(np.random.default_rng(seed).laplace(100, 9, n)), 0, 199).astype(np.uint8)


def exact_table(s: np.ndarray, bits: int) -> np.ndarray:
    """Frequencies summing to exactly 2^bits (the decoder's L), every symbol present at least once."""
    counts = np.bincount(s, minlength=200).astype(np.int64)
    f = np.where(counts > 0, np.maximum(1, counts * (1 << bits) // counts.sum()), 0)
    f[np.argmax(f)] += (1 << bits) - f.sum()
    return f


def test_bodies_under_every_precision_decode_to_their_symbols():
    """Probability bits 11-16 (packed table up to 12, 8-byte entries above), substreams of 4096 and
    65536 symbols with a short last one, 1 and 2 threads."""
    s = symbols(N, 0)
    for bits in (11, 12, 13, 14, 16):
        f = exact_table(s, bits)
        for chunk in (4096, 65536):
            body = native.rans_encode_freqs(s, f, chunk=chunk)
            for threads in (1, 2):
                assert np.array_equal(native.rans_decode_freqs(body, f, N, threads=threads), s), (bits, chunk)


SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import zoocodec
sys.path.insert(0, sys.argv[1])
from test_rans_avx2 import N, exact_table, symbols
from zoocodec.codecs import floatplanes, native
from zoocodec.errors import ContainerError

eng = native.engine()
out = []
def digest(fn):
    try:
        return hashlib.sha256(np.ascontiguousarray(fn()).view(np.uint8).tobytes()).hexdigest()[:20]
    except (ContainerError, eng.CorruptStream):  # (which reason: the substream that fails first)
        return "corrupt"

s = symbols(N, 0)
rng = np.random.default_rng(5)
for bits in (11, 12, 14, 16):
    f = exact_table(s, bits)
    body = native.rans_encode_freqs(s, f, chunk=4096)
    out.append(digest(lambda: native.rans_decode_freqs(body, f, N, threads=2)))
    for _ in range(40):  # damaged copies: flipped bits near the end or anywhere
        bad = bytearray(body)
        for at in rng.integers(len(body) // 2 if rng.random() < 0.5 else 0, len(body), rng.integers(1, 4)):
            bad[at] ^= 1 << int(rng.integers(8))
        out.append(digest(lambda: native.rans_decode_freqs(bytes(bad), f, N, threads=2)))
    # the exponent plane of floats under the same table: values written from the registers
    w = np.random.default_rng(bits).laplace(0, 0.03, N).astype(np.float32)
    for width, vals in ((4, w), (2, w.astype(np.float16))):
        pl = eng.float_split(vals.view(np.uint32 if width == 4 else np.uint16), 1)
        top = native.rans_encode(pl[0], 256, chunk=4096, max_bits=bits)
        parts = [(floatplanes.ORDER0, top)] + [(floatplanes.RAW, p) for p in pl[1:]]
        out.append(digest(lambda: eng.float_merge(N, width, parts, 2)))
# the fused decode: per-row and per-tensor steps into float32, float16 and bfloat16
g = np.random.default_rng(1)
w = (g.laplace(0, 0.02, (300, 2000)) * g.uniform(0.2, 3, (300, 1))).astype(np.float32)
import tempfile, pathlib, torch
with tempfile.TemporaryDirectory() as tmp:
    for spec in ("uniform:bits=8", "uniform:bits=8,per_tensor=true", "uniform:bits=5", "uniform:bits=12"):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            path = pathlib.Path(tmp) / "m.zc"
            zoocodec.compress({"w": torch.from_numpy(w).to(dtype)}, path, spec, min_size=10)
            with zoocodec.Archive(path) as a:
                out.append(digest(lambda: a.read_many(["w"])["w"]))
    # dq levels walked along rows and down columns (their values 8 at a time), byte and 16-bit levels
    g = np.random.default_rng(2)
    w = (g.laplace(0, 0.02, (400, 150)) * g.uniform(0.2, 3, (400, 1))).astype(np.float32)
    for spec in ("dq:bits=6,coder=ans", "dq:step=0.00002,coder=ans"):
        for m in (w, np.ascontiguousarray(w.T)):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                path = pathlib.Path(tmp) / "m.zc"
                zoocodec.compress({"w": torch.from_numpy(m).to(dtype)}, path, spec, min_size=10)
                with zoocodec.Archive(path) as a:
                    out.append(digest(lambda: a.read_many(["w"])["w"]))
print(json.dumps(out))
"""


def test_vector_and_scalar_decoders_agree_bit_for_bit():
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", SCRIPT, here], env={**env, **extra},
                                      capture_output=True, text=True, check=True).stdout)
            for extra in ({}, {"ZOOCODEC_NO_AVX2": "1"})]
    assert runs[0] == runs[1]
    corrupt = runs[0].count("corrupt")
    assert corrupt >= 100, runs[0]  # (damage is nearly always caught: the end states are checked)
    s = symbols(N, 0)
    assert runs[0][0] == hashlib.sha256(s.tobytes()).hexdigest()[:20]
