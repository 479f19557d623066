"""Write a few valid inputs per fuzz target into tests/fuzz_corpus/TARGET/ (seeds: the
fuzzer starts from real streams, not from nothing). Layouts: fuzz/targets.cpp."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from zoocodec.codecs import ans, context, floatplanes, native
from zoocodec.codecs.wire import put_svarint, put_uvarint
from zoocodec.methods import uniform

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_corpus"


def save(target: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def full_stream(s: np.ndarray, nsym: int, bits: int, chunk: int) -> bytes:
    """A full rANS stream (rans.h) under a table of exactly `bits` probability bits, where the
    encoder's own choice would be coarser; every symbol below nsym present."""
    counts = np.bincount(s, minlength=nsym).astype(np.int64)
    f = np.maximum(1, counts * (1 << bits) // counts.sum())
    f[np.argmax(f)] += (1 << bits) - f.sum()
    out = bytearray()
    for v in (s.size, nsym):
        put_uvarint(out, v)
    out.append(bits)
    for v in f:
        put_uvarint(out, int(v))
    return bytes(out) + native.rans_encode_freqs(s, f, chunk=chunk)


def svarints(values) -> bytes:
    out = bytearray()
    for v in values:
        put_svarint(out, int(v))
    return bytes(out)


# int64 levels a hostile file may hold: the limits, and those whose 2k (or 2k - sgn k) wraps
EXTREMES = (-(1 << 63), (1 << 63) - 1, 1 << 62, -(1 << 62), (1 << 62) + 1, -(1 << 62) - 1, -1, 1)


def ctx_symbols(g: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    """Levels the context coder gives contexts to: scaled rows, columns or both, or groups of 32 each
    holding its lowest (0) and highest (15) level."""
    if kind == "groups":
        q = g.integers(1, 15, (rows, cols))
        q[:, ::32], q[:, 5::32] = 0, 15
        return q
    scale = g.uniform(0.1, 3, (rows, 1)) if kind in ("rows", "both") else 1
    scale = scale * (g.uniform(0.1, 3, (1, cols)) if kind in ("cols", "both") else 1)
    return np.rint(g.laplace(0, 4, (rows, cols)) * scale).astype(np.int64)


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
        for c in (kind, 8 | 16 | kind + 5):  # (chunks of 64 << c % 8 bytes; one wrong, checked after the job)
            save("checked", bytes([c, kind, k, rows]) + struct.pack("<H", n) + ans.encode(s))
    # ctx payloads as plan.cpp's ctx jobs: each layout of contexts, the group ends (GGUF Q4_1's min-max
    # groups), an order-0 one, as values, group-wise steps and dq walks
    for how, (rows, cols, kind) in enumerate(((60, 200, "rows"), (40, 300, "both"), (100, 64, "groups"),
                                              (50, 120, "cols"), (3, 5, "rows"))):
        q = ctx_symbols(g, rows, cols, kind)
        save("ctx", bytes([how % 3, how % 4]) + struct.pack("<HH", cols, q.size) + context.encode(q))
        # the same levels as cabac jobs: values, group-wise steps, dq walks along rows and columns (the
        # stream's matrix the walk matrix), substreams of whole walks and of pieces of them
        walk = how % 4 - 1
        m = q.T if walk == 2 else q
        for sub in (256, 100000):
            stream = eng.cabac_encode(np.ascontiguousarray(m, dtype=np.int32), 1 if walk > 0 else 0, sub, 1)
            save("cabacjob", bytes([how % 3, how % 4]) + struct.pack("<HH", cols, q.size) + stream)
    # float planes the AVX2 decoder takes: 8-lane substreams of 4096 under 12-bit tables, grouped
    for width, n in ((2, 20000), (4, 13000)):
        w = np.random.default_rng(width).laplace(0, 0.05, n).astype(np.float16 if width == 2 else np.float32)
        planes = native.engine().float_split(w.view(np.uint16 if width == 2 else np.uint32), 1)
        body = native.rans_encode(planes[0], 256, chunk=4096, max_bits=12)
        parts = struct.pack("<H", len(body)) + body
        parts += b"".join(struct.pack("<H", p.size) + p.tobytes() for p in planes[1:])
        save("floatplanes", bytes([(width == 4) | 2]) + struct.pack("<H", n) + parts)
    # byte streams the shared AVX2 decoder (rans_avx2.cpp) takes in groups: 8-lane substreams of
    # 4096 skewed symbols, 8 of them (a whole group), under a packed table and an 8-byte 14-bit one
    for bits in (12, 14):
        s = np.minimum(np.random.default_rng(bits).geometric(0.8, 8 * 4096 + 700) - 1, 9).astype(np.uint8)
        stream = full_stream(s, 10, bits, 4096) if bits > 12 else native.rans_encode(s, 10, chunk=4096, max_bits=bits)
        save("rans", stream)
        frame = bytes([ans.ANS, 0, 0]) + stream  # mode rANS, lo 0, no raw low bits
        save("fused", bytes([bits % 3, 0, 3]) + struct.pack("<H", s.size) + frame)
    # float-plane frames as a tensor's payload (plan.cpp's planes jobs): fp16 and fp32, coded,
    # raw and zstd planes, substreams the vector decoder takes in groups
    for width, n, seed in ((2, 9000, 0), (4, 3000, 1), (4, 4 * 4096 + 100, 2)):
        w = np.random.default_rng(seed).laplace(0, 0.05, n).astype(np.float16 if width == 2 else np.float32)
        save("planes", bytes([width == 4]) + struct.pack("<H", n) + floatplanes.encode(w))
    # and one whose exponent plane is cut into 8-lane substreams of 4096 (the vector decoder's groups)
    w = np.random.default_rng(3).laplace(0, 0.05, 8 * 4096 + 100).astype(np.float16)
    planes = native.engine().float_split(w.view(np.uint16), 1)
    frame = bytearray()
    put_uvarint(frame, w.size)
    frame.append(2)
    for mode, body in ((floatplanes.ORDER0, native.rans_encode(planes[0], 256, chunk=4096, max_bits=12)),
                       (floatplanes.RAW, planes[1].tobytes())):
        frame.append(mode)
        put_uvarint(frame, len(body))
        frame += body
    save("planes", bytes([0]) + struct.pack("<H", w.size) + bytes(frame))
    # Huffman streams (native/huffman.h): exponent planes in substreams of 4096 (groups of 4 and a
    # shorter last one), a skewed alphabet whose codes are cut to the 12-bit limit, two symbols
    eng = native.engine()
    for n, seed in ((9 * 4096 + 300, 4), (700, 5)):
        w = np.random.default_rng(seed).laplace(0, 0.05, n).astype(np.float16)
        planes = eng.float_split(w.view(np.uint16), 1)
        body = eng.huff_encode(planes[0], eng.huff_lengths(eng.byte_histogram(planes[0])), 4096)
        save("huffman", body)
        frame = bytearray()
        put_uvarint(frame, n)
        frame.append(2)
        for mode, part in ((floatplanes.HUFFMAN, body), (floatplanes.RAW, planes[1].tobytes())):
            frame.append(mode)
            put_uvarint(frame, len(part))
            frame += part
        save("planes", bytes([0]) + struct.pack("<H", n) + bytes(frame))
    skewed = np.minimum(np.random.default_rng(6).geometric(0.5, 3000) - 1, 40).astype(np.uint8)
    save("huffman", eng.huff_encode(skewed, eng.huff_lengths(eng.byte_histogram(skewed)), 1000))
    two = (np.arange(50) % 3 == 0).astype(np.uint8)
    save("huffman", eng.huff_encode(two, eng.huff_lengths(eng.byte_histogram(two)), 7))

    per_tensor_seeds(np.random.default_rng(7))


def per_tensor_seeds(g: np.random.Generator) -> None:
    """Seeds of the per-tensor paths that take a file's values as they are: dq walks, group-wise
    dequantization and coded side values, each with the extremes a forged file could hold."""
    # dq levels by rows (several tasks of 8 rows) and by columns (two blocks of 1024), each with the extremes;
    # the extremes alone, and as a (levels, 0) matrix
    for by_column, (rows, cols) in ((0, (20, 30)), (1, (3, 1100)), (0, (4, 3))):
        k = np.rint(g.laplace(0, 2, rows * cols)).astype(np.int64)
        k[: len(EXTREMES)] = EXTREMES
        save("dqwalk", bytes([by_column]) + struct.pack("<H", cols) + svarints(k))
    save("dqwalk", bytes([1]) + struct.pack("<H", 2) + svarints(EXTREMES))
    save("dqwalk", bytes([0]) + struct.pack("<H", 0) + svarints(EXTREMES))
    # group-wise values as methods/uniform.py's decode: min-max groups of 32 with zero points (float32),
    # symmetric groups of 8 under one step (float16), groups whose values leave bfloat16; then forged
    # side values: non-finite, subnormal and huge steps and zero points, extreme symbols, no columns
    lo, hi = g.uniform(-1, -0.1, (3, 4)), g.uniform(0.1, 1, (3, 4))
    steps, zeros = (hi - lo) / 15, lo
    sym = g.integers(0, 16, 3 * 100)
    save("groups", bytes([0, 2]) + struct.pack("<HHH", 32, 100, 3) + steps.tobytes() + zeros.tobytes() + svarints(sym))
    save("groups", bytes([1, 1]) + struct.pack("<HHH", 8, 20, 2) + np.array([0.01]).tobytes() +
         svarints(g.integers(-7, 8, 40)))
    save("groups", bytes([2, 0]) + struct.pack("<HHH", 4, 8, 2) + np.array([1e37, 0.5, 2.0**-140, 3e38]).tobytes() +
         svarints([1, 2, 3, 4, 30, 31, 32, 33, 1, 1, 1, 1, 7, 7, 7, 7]))
    forged = np.array([np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, -0.0, 65504.0, 65520.0])
    # a NaN with every payload bit, which rounding to bfloat16 carries into +0 (dequantize_groups passed it)
    nan = np.frombuffer(b"\xff" * 8, np.float64)
    for kind in (0, 1, 2):
        save("groups", bytes([kind, 2]) + struct.pack("<HHH", 1, 4, 2) + forged.tobytes() + forged[::-1].tobytes() +
             svarints(EXTREMES))
        save("groups", bytes([kind, 3]) + struct.pack("<HHH", 1, 1, 1) + np.ones(1).tobytes() + nan.tobytes() +
             svarints([1]))
    save("groups", bytes([0, 0]) + struct.pack("<HHH", 0, 0, 5))  # rows of no columns (it divided by them)
    # coded side values (uniform:side=M): compress's codes and centres, then exponents at float64's
    # limits (subnormal, overflow, past MAX_EXPONENT and the clamp) and extreme codes, at mant 1..52
    lo, hi = g.uniform(-1, -0.01, 200), g.uniform(0.01, 1, 200)
    for mant, bits in ((10, 4), (3, 2), (32, 16)):
        _, _, codes, centres = uniform.coded_side(lo, hi, bits, mant)
        pairs = np.stack([codes, centres], 1).ravel()
        save("side", bytes([mant - 1, bits - 1, 0]) + svarints(pairs))
    for mant in (3, 10, 30, 1, 52):
        exponents = (-1075, -1074, -1023, -1022, 1023, 1024, 1100, 1101, -1100, -1101, 4096 + mant, -4097 - mant)
        codes = [(e << mant) + r for e in exponents for r in (0, (1 << mant) - 1) if abs(e) < 1 << (62 - mant)]
        codes += EXTREMES
        centres = [(0, 1 << 40, -(1 << 40), -1)[i % 4] for i in range(len(codes) - len(EXTREMES))] + [*EXTREMES[::-1]]
        pairs = [v for pair in zip(codes, centres, strict=True) for v in pair]
        save("side", bytes([mant - 1, mant % 16, 0]) + svarints(pairs))
    save("side", bytes([9, 3, 1]) + svarints([10 << 10, 5, 1101 << 10, 0]))  # a bad pair on the second task
    # group ends whose places are scattered: their side arrays are rANS frames of bytes, which the pass
    # decodes in parallel (plan.cpp's decode_ends), the last group of each row 8 places long; as values of
    # groups of 8 whose side values are given, or coded (uniform:side=M), one code past the exponents
    r = np.random.default_rng(11)
    rows, cols, group = 1500, 40, 16
    q = r.integers(1, 15, (rows, cols))
    for row in range(rows):
        for c0 in range(0, cols, group):
            n = min(group, cols - c0)
            lo, hi = r.choice(n, 2, replace=False)
            q[row, c0 + lo], q[row, c0 + hi] = 0, 15
    payload = struct.pack("<HH", cols, q.size) + context.encode_with(context.fit_ends(q, group), q)
    for kind, how in ((0, 1), (1, 1 | 4), (2, 1 | 4 | 8)):  # (groups of 8; their side values coded; one past range)
        save("ctx", bytes([kind, how]) + payload)


if __name__ == "__main__":
    main()
