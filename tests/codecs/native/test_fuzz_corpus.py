"""The fuzzers' corpus (tests/fuzz_corpus, from fuzz/run.sh) replayed through the Python
entry points of each native decoder: every input decodes or raises ContainerError.
A short libFuzzer pass per decoder runs in the slow tier where clang is installed."""
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from zoocodec.codecs import native
from zoocodec.errors import ContainerError
from zoocodec.kernels import rdoq
from zoocodec.methods import uniform
from zoocodec.methods.arrays import from_float64

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "fuzz_corpus"
TARGETS = ("rans", "rans_body", "floatplanes", "cabac", "fused", "planes", "huffman", "checked", "ctx", "cabacjob",
           "dqwalk", "groups", "side")
KINDS = ("float32", "float16", "bfloat16")  # plan.h Kind


def svarints(data: bytes) -> np.ndarray:
    """fuzz/targets.cpp's svarints: zigzag varints to the end, a cut-off last one dropped, bits past 64 ignored."""
    out, v, shift = [], 0, 0
    for b in data:
        if shift < 64:
            v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            v &= (1 << 64) - 1
            out.append((v >> 1) ^ -(v & 1))
            v, shift = 0, 0
    return np.array(out, dtype=np.int64)


def dq_walk(k: np.ndarray) -> np.ndarray:
    """kernels/rdoq.py's walk of each row through NEXT_STATE, a column at a time in NumPy (int64 wrapping)."""
    state, out, table = np.zeros(k.shape[0], np.int64), np.empty(k.shape), np.asarray(rdoq.NEXT_STATE)
    for j in range(k.shape[1]):
        kj = k[:, j]
        out[:, j] = np.where(state < 2, 2 * kj, 2 * kj - np.sign(kj))
        state = table[state, kj & 1]
    return out


def finite_bits(bits: np.ndarray, kind: int) -> np.ndarray:
    if kind == 2:
        return (bits.view(np.uint16) & 0x7F80) != 0x7F80
    return np.isfinite(bits)


def replay(target: str, data: bytes) -> None:
    """The input layouts of fuzz/targets.cpp, through the Python API."""
    eng = native.engine()
    if target in ("rans", "huffman"):
        n, shift = 0, 0
        for b in data[:10]:  # the count the stream declares (a varint)
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if n > 1 << 22:
            return
        if target == "rans":
            native.rans_decode(data, n, threads=2)
            return
        try:
            eng.huff_decode(data, n, 2)
        except eng.CorruptStream:
            pass
    elif target == "rans_body":
        k = 2 + data[0] % 62 if data else 0
        if len(data) < 3 + k:
            return
        freqs = np.frombuffer(data[1 : 1 + k], dtype=np.uint8).astype(np.int64)
        n = struct.unpack_from("<H", data, 1 + k)[0]
        if np.count_nonzero(freqs) < 2:
            with pytest.raises(ContainerError):
                native.rans_decode_freqs(data[3 + k :], freqs, n, threads=2)
            return
        native.rans_decode_freqs(data[3 + k :], freqs, n, threads=2)
    elif target == "floatplanes":
        if len(data) < 3:
            return
        width, n, at, parts = 4 if data[0] & 1 else 2, struct.unpack_from("<H", data, 1)[0], 3, []
        for k in range(width):
            if len(data) - at < 2:
                return
            size = struct.unpack_from("<H", data, at)[0]
            at += 2
            if len(data) - at < size:
                return
            parts.append((data[0] >> (k + 1) & 1, data[at : at + size]))
            at += size
        try:
            eng.float_merge(n, width, parts, 2)
        except eng.CorruptStream:
            pass
    elif target == "fused":
        if len(data) < 5:
            return
        kind, k, rows, n = data[0] % 3, data[1], data[2] or 1, struct.unpack_from("<H", data, 3)[0]
        values = np.arange(rows * k) * 0.25 if k else 0.5 + np.arange(rows, dtype=np.float64)
        out = np.empty(n, dtype=np.float32 if kind == 0 else np.uint16)
        [(status, _)] = eng.decode_fused([(data[5:], n, values, -(-n // rows), k, kind, out)], 2)
        assert status in (0, 1, 2)
    elif target == "checked":
        if len(data) < 6:
            return
        chunk, wrong, payload = 64 << data[0] % 8, bool(data[0] & 8), data[6:]
        kind, k, rows, n = data[1] % 3, data[2], data[3] or 1, struct.unpack_from("<H", data, 4)[0]
        values = np.arange(rows * k) * 0.25 if k else 0.5 + np.arange(rows, dtype=np.float64)
        out = np.empty(n, dtype=np.float32 if kind == 0 else np.uint16)
        sums = [eng.xxh3(payload[at : at + chunk]) ^ (wrong and at == 0) for at in range(0, len(payload), chunk)]
        run = eng.Pass(2, False, False)
        run.submit([(payload, n, values, -(-n // rows), k, kind, out)],
                   [(payload, chunk, sums, 0 if data[0] & 16 else -1)])
        bad, [(status, _)] = run.wait()
        assert bad == (0 if wrong and payload else -1) and status in (0, 1, 2)
    elif target in ("ctx", "cabacjob"):
        if len(data) < 6:
            return
        kind, how, (cols, n) = data[0] % 3, data[1] % 4, struct.unpack_from("<HH", data, 2)
        cols = cols or 1
        if how and n % cols:
            return
        values, extra = np.array([0.5]), None
        if how == 1:
            groups = n // cols * -(-cols // 8)
            values = 0.5 + np.arange(groups, dtype=np.float64)
            extra = ("group", 8, cols, True, 0.25 * np.arange(groups))
            if data[1] & 4:  # (side values coded, the first step code past the exponents with bit 3)
                g = np.arange(groups, dtype=np.int64)
                codes = (g % 7 + 2) << 5 | g % 32
                if groups and data[1] & 8:
                    codes[0] = 1101 << 5
                extra = ("coded", 8, cols, codes, g % 16, 5, 4, uniform.MAX_EXPONENT)
        elif how > 1:
            extra = ("walk", cols, how - 1)
        out = np.empty(n, dtype=np.float32 if kind == 0 else np.uint16)
        coder = 1 if target == "ctx" else 2
        [(status, _)] = eng.decode_fused([(data[6:], n, values, n, 0, kind, out, coder, extra)], 2)
        assert status in (0, 1, 2)
        assert not (extra and extra[0] == "coded" and data[1] & 8 and n and status == 0)
    elif target == "planes":
        if len(data) < 3:
            return
        width, n = 2 if data[0] % 2 == 0 else 4, struct.unpack_from("<H", data, 1)[0]
        out = np.empty(n, dtype=np.uint16 if width == 2 else np.uint32)
        [(status, _)] = eng.decode_fused([(data[3:], n, width, out)], 2)
        assert status in (0, 1, 2)
    elif target == "dqwalk":
        if len(data) < 3:
            return
        by_column, cols, k = bool(data[0] & 1), struct.unpack_from("<H", data, 1)[0], svarints(data[3:])
        rows = k.size // cols if cols else k.size
        k = k[: rows * cols].reshape(rows, cols)
        out = np.empty(k.shape)
        eng.dq_walk(k, out, by_column, 2)
        assert np.array_equal(out, dq_walk(k.T).T if by_column else dq_walk(k))
    elif target == "groups":
        if len(data) < 8:
            return
        kind, one_step, with_zeros = data[0] % 3, bool(data[1] & 1), bool(data[1] & 2)
        group, cols, rows = struct.unpack_from("<HHH", data, 2)
        group, per_row = group or 1, -(-cols // (group or 1))
        nsteps, nzeros = 1 if one_step else rows * per_row, rows * per_row if with_zeros else 0
        if (len(data) - 8) // 8 < nsteps + nzeros:
            return
        side = np.frombuffer(data, "<f8", nsteps + nzeros, 8)
        symbols = svarints(data[8 + 8 * side.size :])
        if symbols.size < rows * cols:
            return
        m = symbols[: rows * cols].reshape(rows, cols)
        steps = side[:1] if one_step else side[:nsteps].reshape(rows, per_row)
        zeros = side[nsteps:].reshape(rows, per_row) if with_zeros else None
        out = np.empty((rows, cols), dtype=np.float32 if kind == 0 else np.uint16)
        ok = eng.group_dequantize(m, steps, zeros, group, kind, out.reshape(-1), 2)
        at = np.arange(cols) // group  # each column's group
        with np.errstate(all="ignore"):  # (values a file forged: overflows, NaNs)
            v = m.astype(np.float64) * (steps[0] if one_step else steps[:, at]) + (0 if zeros is None else zeros[:, at])
            want = from_float64(v, KINDS[kind])
        assert ok == bool(np.isfinite(v).all() and finite_bits(want, kind).all())
        assert not ok or out.view(want.dtype).tobytes() == want.tobytes()
    elif target == "side":
        if len(data) < 3:
            return
        mant, bits, v = 1 + data[0] % 52, 1 + data[1] % 16, svarints(data[3:])
        codes, centres = v[0 : v.size - 1 : 2], v[1::2]
        if data[2] & 1 and codes.size:  # the first pair 2^16 times first
            codes, centres = np.r_[np.full(1 << 16, codes[0]), codes], np.r_[np.full(1 << 16, centres[0]), centres]
        steps = uniform.side_step(codes, mant)
        if not 3 <= mant <= 32:
            return
        zeros = uniform.side_zero(centres, steps, bits, mant - 2)
        decoded_steps, decoded_zeros, ok = eng.side_values(codes, centres, mant, bits, uniform.MAX_EXPONENT, 2)
        assert decoded_steps.tobytes() == steps.tobytes() and decoded_zeros.tobytes() == zeros.tobytes()
        e = codes >> mant
        assert ok == bool((np.abs(e) <= uniform.MAX_EXPONENT).all() and (steps > 0).all() and np.isfinite(steps).all()
                          and np.isfinite(zeros).all())
    else:
        if len(data) < 2:
            return
        try:
            eng.cabac_decode(data[2:], struct.unpack_from("<H", data)[0], 2)
        except eng.CorruptStream:
            pass


def corpus(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir()) if (CORPUS / target).is_dir() else []


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_without_crash(target):
    files = corpus(target)
    assert files, f"no corpus for {target}: run fuzz/seeds.py and fuzz/run.sh"
    for path in files:
        try:
            replay(target, path.read_bytes())
        except ContainerError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_pass_finds_nothing(target, tmp_path):
    if not (shutil.which("clang++") or shutil.which("clang++-14")):
        pytest.skip("clang is not installed (see fuzz/run.sh)")
    work = tmp_path / "repo"  # fuzz/run.sh rewrites the corpus: run it on a copy
    shutil.copytree(ROOT / "fuzz", work / "fuzz")
    shutil.copytree(ROOT / "zoocodec" / "codecs" / "native", work / "zoocodec" / "codecs" / "native",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(CORPUS / target, work / "tests" / "fuzz_corpus" / target)
    run = subprocess.run(["bash", "fuzz/run.sh", "30", target], cwd=work, capture_output=True, text=True,
                         env={**os.environ}, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ERROR" not in run.stdout + run.stderr
