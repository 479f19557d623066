"""The GPU decoder's host half (frame parsing, slot tables, batching) and its algorithm, on the CPU.

`emulate` runs decode.cu's algorithm step for step in NumPy (eight lanes per substream, each
renormalising lane taking the word at its rank among the lanes that read in this step,
float64 dequantization rounded as the kernel rounds), over the same arrays run() uploads;
it must give the CPU decoder's bytes. The kernel itself runs only in tests/kernels/test_decode_gpu.py.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.support import check_ctx_damage, check_huffman_damage, gpu_job, host_memory
from zoocodec.codecs import native
from zoocodec.errors import ContainerError
from zoocodec.kernels import decode as G
from zoocodec.methods.arrays import from_float64
from zoocodec.pipeline.core import Archive, compress


def value(job: G.Job, elem: int, s: int) -> float:
    """decode.cu's put(): element `elem` of a job whose symbol plus lo is s, in float64 (a
    codebook index outside [0, k) raises ContainerError, where the kernel flags it)."""
    if job.k:
        if not 0 <= s < job.k:
            raise ContainerError("codebook index out of range")
        row = elem // job.row_length if job.rows > 1 else 0
        return float(job.steps[row * job.k + s])
    if job.group:
        row = elem // job.row_length
        g = row * job.groups + (elem - row * job.row_length) // job.group
        if job.side is not None:
            step, zero = side_values(job, g)
            return float(np.float64(s) * step + zero)
        v = np.float64(s) * job.steps[g if job.rows > 1 else 0]
        return float(v if job.zeros is None else v + job.zeros[g])
    row = elem // job.row_length if job.rows > 1 else 0
    return float(np.float64(s) * job.steps[row])


def side_values(job: G.Job, g: int) -> tuple[np.float64, np.float64]:
    """decode.cu's side_values(): group g's step and zero point from its code and centre, read as the
    kernel reads them out of the words values() uploads (Tensor.side's widths, Tensor.steps / zeros)."""
    record = np.array([job.record(0, 0, 0)], G.TENSOR)[0]
    side, words = int(record["side"]), job.values().view(np.uint8)
    mant, bits = side & 0xFF, side >> 8 & 0xFF
    code = int(words[8 * int(record["steps"]):].view(f"<i{side >> 16 & 0xFF}")[g])
    centre = int(words[8 * int(record["zeros"]):].view(f"<i{side >> 24}")[g])
    e = min(max((code >> mant) - mant, -4096), 4096)
    step = np.float64(math.ldexp(float((1 << mant) + (code & ((1 << mant) - 1))), e))
    frac = mant - 2
    zero = (np.float64(centre) - np.float64(((1 << bits) - 1) * (1 << (frac - 1)))) * step / np.float64(1 << frac)
    return step, zero


def emulate_packed(job: G.Job) -> np.ndarray:
    """decode.cu's packed kernel in NumPy: each element's little-endian bytes assembled into a
    uint64, lo added with wrap-around, then put()."""
    p, numel = job.stream, math.prod(job.shape)
    out = np.array([value(job, i, int(s)) for i, s in enumerate(packed_levels(p, numel))], np.float64)
    return from_float64(out, job.dtype).reshape(job.shape)


def packed_levels(p: G.Packed, numel: int) -> np.ndarray:
    """A packed frame's symbols as the kernels read them: `width` little-endian bytes plus lo, wrapping."""
    raw = np.frombuffer(p.raw, np.uint8).reshape(numel, p.width).astype(np.uint64)
    v = np.zeros(numel, np.uint64)
    for b in range(p.width):
        v |= raw[:, b] << np.uint64(8 * b)
    return (v + np.uint64(p.lo % (1 << 64))).view(np.int64)


def emulate_symbols(s: G.Stream, numel: int) -> np.ndarray:
    """decode.cu's rANS walk on one stream -> each element's symbol (without lo), as rans_index
    writes it; raises ContainerError where the kernel sets bad[s]."""
    out = np.zeros(numel, np.int64)
    if s.L == 0:
        return out
    slots, syms = G.slot_table(s.freq)
    mask, data, at = (1 << s.L) - 1, bytes(s.data), 0
    for i, length in enumerate(s.lengths):
        q, m, first = data[at:at + length], min(s.chunk, s.count - i * s.chunk), i * s.chunk
        at += length
        lanes = 8 if m >= 4096 else 1
        x = [int.from_bytes(q[4 * k:4 * k + 4], "little") for k in range(lanes)]
        if min(x) < 1 << 16:
            raise ContainerError("bad state")
        pos = 4 * lanes
        for j in range(0, m, lanes):
            need = []
            for k in range(min(lanes, m - j)):
                e = int(slots[x[k] & mask])
                out[first + j + k] = int(syms[x[k] & mask])
                x[k] = (e & 0xFFFF) * (x[k] >> s.L) + (e >> 16)
                if x[k] < 1 << 16:
                    need.append(k)
            for rank, k in enumerate(need):  # the ballot: words in lane order
                if pos + 2 * rank + 2 > length:
                    raise ContainerError("substream ends early")
                x[k] = (x[k] << 16) | int.from_bytes(q[pos + 2 * rank:pos + 2 * rank + 2], "little")
            pos += 2 * len(need)
        if pos != length or any(v != 1 << 16 for v in x):
            raise ContainerError("substream does not end in its initial state")
    return out


def emulate_index(s: G.Stream, numel: int) -> np.ndarray:
    """emit()'s index of each element: the coded symbol, with raw low bits (shift > 0) shifted
    in from `low` by low_bits()'s unaligned 8-byte read (the host pads `low` by 8 bytes)."""
    syms = emulate_symbols(s, numel)
    if not s.shift:
        return syms
    low = bytes(s.low) + bytes(8)
    out = np.empty(numel, np.uint64)
    for i, sym in enumerate(syms.tolist()):
        bit = i * s.shift
        v = int.from_bytes(low[bit >> 3:(bit >> 3) + 8], "little")
        out[i] = (sym << s.shift) | ((v >> (bit & 7)) & ((1 << s.shift) - 1))
    return out


def wrap(v: int) -> int:
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def placed(job):
    """_placed() in NumPy: a Contexts stream's coded contexts through emulate_symbols (rans_index),
    back to back, then place() with NumPy as its array module -> the job with its Packed levels."""
    c = job.stream
    if not isinstance(c, G.Contexts):
        return job
    coded = [emulate_symbols(s, s.count) for s in c.streams if s is not None and s.L]
    indices = np.concatenate(coded).astype(np.uint16) if coded else np.zeros(0, np.uint16)
    return dataclasses.replace(job, stream=G.Packed(c.count, c.low, 2, G.place(c, indices, np).tobytes()))


def emulate(job: G.Job) -> np.ndarray:
    """decode.cu on one job, in NumPy; raises ContainerError where the kernel sets bad[s]."""
    job = placed(job)
    if isinstance(job.stream, G.Packed):
        return emulate_packed(job)
    numel = math.prod(job.shape)
    index = emulate_index(job.stream, numel)
    out = np.array([value(job, i, wrap(int(v) + job.stream.lo)) for i, v in enumerate(index)], np.float64)
    return from_float64(out, job.dtype).reshape(job.shape)


DQ_CONSTANTS = {name: int(v, 16) for name, v in re.findall(r"#define (DQ_\w+) (0x[0-9A-F]+)u",
                                                            (Path(G.__file__).with_name("decode.cu")).read_text())}


def emulate_trellis(jobs: list[G.TrellisJob]) -> list[np.ndarray]:
    """run_trellis in NumPy over the arrays it uploads: the index buffer (rans_index's 16-bit
    symbols or a packed frame's ints at each record's byte offset), the DqTensor records,
    then dq_maps and dq_values thread by thread (the state maps and transition constants
    read from decode.cu), each thread's segment found by binary search as the kernel finds it."""
    jobs = [placed(j) for j in jobs]
    records, srcs, size, nseg = G.trellis_layout(jobs)
    assert size % 8 == 0 and all(src % 8 == 0 for src in srcs)  # run_trellis views it as uint16 and uint64
    idx = np.zeros(size, np.uint8)
    for j, src in zip(jobs, srcs, strict=True):
        n = math.prod(j.shape)
        raw = j.stream.raw if isinstance(j.stream, G.Packed) else \
            emulate_index(j.stream, n).astype(f"<u{j.width}").tobytes()  # rans_index / rans_index64
        idx[src:src + len(raw)] = np.frombuffer(raw, np.uint8)
    nxt = (DQ_CONSTANTS["DQ_NEXT0"], DQ_CONSTANTS["DQ_NEXT1"])
    steps = np.concatenate([np.asarray(j.steps, np.float64) for j in jobs])
    out = np.zeros(sum(math.prod(j.shape) for j in jobs), np.float64)
    starts = records["seg_start"].tolist()

    def level(t, flat):
        w = int(t["width"])
        v = int.from_bytes(idx[int(t["src"]) + flat * w:int(t["src"]) + (flat + 1) * w].tobytes(), "little")
        v = (v + int(t["lo"])) % (1 << 64)
        return v - (1 << 64) if v >= 1 << 63 else v

    def segment(gid):
        t = records[bisect.bisect_right(starts, gid) - 1]
        walks, length = (int(t["cols"]), int(t["rows"])) if t["by_column"] else (int(t["rows"]), int(t["cols"]))
        j = gid - int(t["seg_start"])
        w, g = j % walks, j // walks
        first, stride = (w, int(t["cols"])) if t["by_column"] else (w * int(t["cols"]), 1)
        return t, walks, w, g, range(g * G.DQ_SEGMENT, min(g * G.DQ_SEGMENT + G.DQ_SEGMENT, length)), first, stride

    maps = np.zeros(nseg, np.uint8)
    for gid in range(nseg):  # dq_maps
        t, _, _, _, positions, first, stride = segment(gid)
        m = DQ_CONSTANTS["DQ_IDENTITY"]
        for p in positions:
            n = nxt[level(t, first + p * stride) & 1]
            m = sum(((n >> (2 * ((m >> (2 * s)) & 3))) & 3) << (2 * s) for s in range(4))
        maps[gid] = m
    for gid in range(nseg):  # dq_values
        t, walks, w, g, positions, first, stride = segment(gid)
        state = 0
        for h in range(g):
            state = (int(maps[int(t["seg_start"]) + h * walks + w]) >> (2 * state)) & 3
        for p in positions:
            flat = first + p * stride
            k = level(t, flat)
            twice = (2 * k) % (1 << 64)
            lev = twice if state < 2 else (twice - (k > 0) + (k < 0)) % (1 << 64)
            lev = lev - (1 << 64) if lev >= 1 << 63 else lev
            row = p if t["by_column"] else w
            step = steps[int(t["steps"]) + (row if t["nsteps"] > 1 else 0)]
            out[int(t["out_start"]) + flat] = float(np.float64(lev) * step)
            state = (nxt[k & 1] >> (2 * state)) & 3
    res, at = [], 0
    for j in jobs:
        n = math.prod(j.shape)
        res.append(from_float64(out[at:at + n], j.dtype).reshape(j.shape))
        at += n
    return res


def emulate_huffman(h: G.Huffman) -> np.ndarray:
    """One Huffman plane through huff_layout and the kernel's emulation."""
    out = np.zeros(h.count, np.uint8)
    staged = G.Staged.gather([h.data], host_memory)
    emulate_huff_launch(staged, G.huff_layout([("t", h, 0)], staged), out)
    return out


def emulate_huff_launch(staged: G.Staged, layout: tuple, out: np.ndarray) -> None:
    """decode.cu's huff_bytes over a huff_layout launch, thread by thread: the table of the block's
    plane, 12 bits peeked from three bytes (zeros past the substream's end), the table's symbol and
    length, each symbol inside the substream, then every byte used and the last one's unused bits
    zero; raises ContainerError where the kernel sets bad[s]."""
    sub_off, sub_len, sub_first, sub_count, tables, block_plane = layout
    assert tables.dtype == np.uint16 and len(sub_off) == len(block_plane) * G.THREADS
    for s in range(len(sub_off)):
        table = tables[int(block_plane[s // G.THREADS]) * 4096 :][:4096]
        length, first = int(sub_len[s]), int(sub_first[s])
        b = bytes(staged.host[int(sub_off[s]) : int(sub_off[s]) + length]) + bytes(3)
        pos = 0
        for i in range(int(sub_count[s])):
            v = int.from_bytes(b[pos >> 3 : (pos >> 3) + 3], "big")
            e = int(table[(v >> (12 - (pos & 7))) & 0xFFF])
            if pos + (e >> 8) > 8 * length:
                raise ContainerError("substream ends early")
            out[first + i] = e & 0xFF
            pos += e >> 8
        if (pos + 7) // 8 != length or (pos & 7 and (b[length - 1] << (pos & 7)) & 0xFF):
            raise ContainerError("substream ends wrong")


def emulate_planes(job: G.PlanesJob) -> np.ndarray:
    """run_planes in NumPy: rans_bytes (emulate's rANS walk, the symbol stored as a byte) or
    huff_bytes per coded plane, raw planes as they are, then planes_merge's rotation."""
    n = math.prod(job.shape)
    planes = [np.frombuffer(p, np.uint8) if isinstance(p, memoryview)
              else emulate_huffman(p) if isinstance(p, G.Huffman)
              else emulate(G.Job(job.name, (n,), "float32", p, np.ones(1))).astype(np.uint8) for p in job.planes]
    width = len(planes)
    r = np.zeros(n, np.uint32)
    for k, p in enumerate(planes):
        r |= p.astype(np.uint32) << np.uint32(8 * (width - 1 - k))
    bits = 8 * width
    out = (r >> np.uint32(1)) | ((r << np.uint32(bits - 1)) & np.uint32((1 << bits) - 1))
    return out.astype(np.uint32 if width == 4 else np.uint16).reshape(job.shape)


def weights(shape, dtype, seed=0, scale=0.05):
    w = torch.from_numpy(np.random.default_rng(seed).laplace(0, scale, shape).astype(np.float32))
    return w.to(getattr(torch, dtype))


MODEL = {  # 8-lane substreams (>= 4096 symbols), a short last one, 1-lane ones, every dtype
    "big.weight": weights((300, 700), "float32"),          # 210,000: 4 substreams, the last 13,392
    "half.weight": weights((64, 100), "float16", 1),       # 6,400: one 8-lane substream, a partial last step
    "bf.weight": weights((50, 60), "bfloat16", 2),          # 3,000: one lane
    "const.weight": torch.full((80, 80), 0.25),            # one symbol: no coded bits
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpudec")
    paths = {}
    for spec in ("uniform:bits=8", "uniform:bits=3,per_tensor=true", "uniform:step=0.013"):
        paths[spec] = tmp / f"{len(paths)}.zc"
        compress(MODEL, paths[spec], spec, min_size=100)
    return paths


@pytest.mark.parametrize("spec", ["uniform:bits=8", "uniform:bits=3,per_tensor=true", "uniform:step=0.013"])
def test_emulated_kernel_gives_the_cpu_bytes(archives, spec):
    with Archive(archives[spec]) as a:
        for name in MODEL:
            job = gpu_job(a, name)
            assert job is not None, name
            assert emulate(job).tobytes() == a.read(name).tobytes(), name


@pytest.mark.parametrize("spec", ["uniform:bits=12", "uniform:bits=16", "uniform:bits=2"])
def test_every_uniform_width_is_taken(tmp_path, spec):
    """2 to 16 bits: rANS frames and packed ones (flat wide alphabets) both decode on the device."""
    model = {**MODEL, "wide.weight": weights((3, 7000), "float32", 5), "h16.weight": weights((40, 90), "float16", 6)}
    compress(model, tmp_path / "m.zc", spec, min_size=100)
    kinds = set()
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert job is not None, name
            kinds.add(type(job.stream).__name__)
            assert emulate(job).tobytes() == a.read(name).tobytes(), name
    if spec == "uniform:bits=16":
        assert "Packed" in kinds


@pytest.mark.parametrize("spec", ["kmeans:k=16", "kmeans:k=4,per=channel", "kmeans:k=8,per=block,block=1000",
                                  "kmeans:k=256,codebook=float16"])
def test_codebook_lookup_is_taken(tmp_path, spec):
    """kmeans declares a fused Lookup: the kernel's algorithm gives the CPU decoder's bytes."""
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    compress(model, tmp_path / "m.zc", spec, min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert job is not None and job.k, name
            assert emulate(job).tobytes() == a.read(name).tobytes(), name


def test_rdoq_levels_under_ans_are_taken(tmp_path):
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    compress(model, tmp_path / "r.zc", "rdoq:bits=6,coder=ans", min_size=100)
    with Archive(tmp_path / "r.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert job is not None and emulate(job).tobytes() == a.read(name).tobytes(), name


DQ_MODEL = {  # row walks (tall) and column walks (wide), walks longer than a segment, a partial last one
    "tall.weight": weights((700, 40), "float32", 7),           # 40 < 700: each row walked, 40 levels
    "wide.weight": weights((20, 600), "float16", 8),           # columns walked, 20 levels each
    "square.weight": weights((300, 300), "bfloat16", 9),       # rows: 2 segments of 256, the second short
    "conv.weight": weights((16, 8, 3, 3), "float32", 11),      # view (16, 72): columns walked
    "const.weight": torch.full((20, 20), 0.25),
}


@pytest.mark.parametrize(("spec", "segment"), [("dq:bits=6,coder=ans", 256), ("dq:bits=6,coder=ans", 16),
                                               ("dq:step=0.01,coder=ans,lam=0.3", 256),
                                               ("dq:step=0.00002,coder=ans", 256),
                                               ("dq:step=0.01,coder=ans,axis=0", 16),
                                               ("dq:step=0.01,coder=ans,axis=1", 256)])
def test_dq_levels_are_taken(tmp_path, monkeypatch, spec, segment):
    """dq declares plan.Trellis: the scan of state maps (dq_maps, dq_values) over rans_index's
    indices, or a packed frame's ints (the tiny step: a wide, flat alphabet), gives the CPU
    decoder's bytes, every tensor in one batch as run_trellis lays them out. Segments of 16
    (the kernels take the length as an argument) make walks of up to 19 segments."""
    monkeypatch.setattr(G, "DQ_SEGMENT", segment)
    compress(DQ_MODEL, tmp_path / "d.zc", spec, min_size=100)
    with Archive(tmp_path / "d.zc") as a:
        jobs = [gpu_job(a, n) for n in DQ_MODEL]
        assert all(isinstance(j, G.TrellisJob) for j in jobs)
        by_dtype = {}
        for j in jobs:
            by_dtype.setdefault(j.dtype, []).append(j)
        for group in by_dtype.values():
            for j, got in zip(group, emulate_trellis(group), strict=True):
                assert got.tobytes() == a.read(j.name).tobytes(), j.name
        kinds = {type(j.stream).__name__ for j in jobs}
    assert kinds == ({"Packed", "Stream"} if "0.00002" in spec else {"Stream"})
    from zoocodec.methods import parse_spec

    axis = parse_spec(spec).axis  # unset: tall matrices walk rows, wide ones columns; else every tensor alike
    assert {j.by_column for j in jobs} == ({True, False} if axis is None else {axis == 0})


def test_dq_steps_per_row_group(tmp_path):
    """dq with group_steps (the bit allocator's step per row group): each row its group's step."""
    from zoocodec.methods import parse_spec

    spec = parse_spec("dq:step=0.004,coder=ans").with_step(0.004, (0.004, 0.006, 0.01))
    compress({"w": DQ_MODEL["tall.weight"]}, tmp_path / "g.zc", spec, min_size=100)
    with Archive(tmp_path / "g.zc") as a:
        job = gpu_job(a, "w")
        assert len(set(job.steps.tolist())) == 3
        assert emulate_trellis([job])[0].tobytes() == a.read("w").tobytes()


GROUPED = ["uniform:bits=4,group=32", "uniform:bits=4,group=16,zero=true", "uniform:bits=3,group=100,zero=true",
           "uniform:step=0.01,group=64,zero=true", "uniform:step=0.01,group=64", "uniform:bits=12,group=128",
           "uniform:bits=4,group=32,zero=true,side=5", "uniform:bits=3,group=100,zero=true,side=3",
           "uniform:bits=8,group=16,zero=true,side=10"]


@pytest.mark.parametrize("spec", GROUPED)
def test_grouped_steps_are_taken(tmp_path, spec):
    """uniform group=G declares plan.Grouped: put()'s step and zero point per group (a last,
    shorter group in every row where G does not divide it) give the CPU decoder's bytes."""
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    model["odd.weight"] = weights((7, 250), "float32", 12)
    compress(model, tmp_path / "m.zc", spec, min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert job is not None and job.group and (job.side is not None) == ("side=" in spec), name
            assert emulate(job).tobytes() == a.read(name).tobytes(), name


def test_grouped_side_streams_decode_only_when_taken(tmp_path, monkeypatch):
    """The CPU's batched decoder asks every method for its fused job: a Grouped one (GPU only)
    must not decode its side streams there."""
    from zoocodec.methods.uniform import Uniform

    compress({"w": DQ_MODEL["tall.weight"]}, tmp_path / "m.zc", "uniform:bits=4,group=16,zero=true", min_size=100)
    calls = []
    real = Uniform._group_values
    monkeypatch.setattr(Uniform, "_group_values", lambda self, *a: calls.append(1) or real(self, *a))
    with Archive(tmp_path / "m.zc") as a:
        a.read("w")
        assert len(calls) == 1  # dequantize's own
        gpu_job(a, "w")
        assert len(calls) == 2


WIDE = ["uniform:step=0.000001", "uniform:step=0.000001,group=64", "rdoq:step=0.000001,coder=ans,lam=0"]


@pytest.mark.parametrize("spec", WIDE)
def test_alphabets_wider_than_2_to_16_are_taken(tmp_path, spec):
    """ans frames with raw low bits (a step far below the weights' spread): emit() shifts each
    element's low bits in, and the values are the CPU decoder's."""
    model = {"w.weight": weights((30, 700), "float32", 14), "h.weight": weights((20, 300), "float16", 15),
             "c.weight": torch.full((10, 10), 0.25)}
    compress(model, tmp_path / "m.zc", spec, min_size=50)
    shifts = set()
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert job is not None, name
            shifts.add(getattr(job.stream, "shift", 0) > 0)
            assert emulate(job).tobytes() == a.read(name).tobytes(), name
    assert True in shifts  # (a small tensor may take the packed frame)


def test_dq_wide_alphabet_is_taken(tmp_path):
    """dq levels with raw low bits: rans_index64's 64-bit indices, then the state walk."""
    model = {"w.weight": weights((100, 700), "float32", 16), "c.weight": torch.full((10, 10), 0.25)}
    compress(model, tmp_path / "m.zc", "dq:step=0.000001,coder=ans", min_size=50)
    with Archive(tmp_path / "m.zc") as a:
        jobs = [gpu_job(a, n) for n in model]
        assert jobs[0].stream.shift > 0 and jobs[0].width == 8
        for j, got in zip(jobs, emulate_trellis(jobs), strict=True):
            assert got.tobytes() == a.read(j.name).tobytes(), j.name


def scaled(shape, dtype, seed, rows=0.7, cols=0.7):
    """Laplace weights whose rows and columns carry scales of their own (log-normal, by `rows` and
    `cols`): what ctx's activity contexts pay off on."""
    g = np.random.default_rng(seed)
    w = g.laplace(0, 0.05, shape) * np.exp(g.normal(0, rows, (shape[0], 1))) * np.exp(g.normal(0, cols, (1, shape[1])))
    return torch.from_numpy(w.astype(np.float32)).to(getattr(torch, dtype))


CTX_MODEL = {  # each context layout (rows, columns, both), group ends, and a payload ctx codes order-0
    "rows.weight": scaled((120, 40), "float32", 0, cols=0),
    "cols.weight": scaled((100, 100), "float16", 1, rows=0),
    "both.weight": scaled((400, 400), "bfloat16", 2),  # contexts of 4,000-48,000 positions: 8-lane substreams
    "flat.weight": scaled((20, 30), "float32", 3, 0, 0),
}


@pytest.mark.parametrize(("spec", "modes"), [
    ("uniform:bits=6,per_tensor=true,coder=ctx", {"rows": (0, 1), "cols": (0, 2), "both": (0, 3), "flat": None}),
    ("uniform:bits=4,group=32,zero=true,coder=ctx", {"both": (2, 0), "flat": None}),
    ("uniform:bits=4,group=32,zero=true,side=5,coder=ctx", {"both": (2, 0), "flat": None}),
    ("dq:bits=5,coder=ctx", {"cols": (0, 3), "both": (0, 3), "flat": None}),
])
def test_ctx_payloads_are_taken(tmp_path, spec, modes):
    """ctx payloads (contexts by rows, columns or both, and group ends, some contexts empty): each
    context's stream through the rANS kernel, the levels put in place by a stable sort by context
    (place(), here on NumPy), then dequantized as a packed frame's (or walked: dq) give the CPU's bytes."""
    compress(CTX_MODEL, tmp_path / "m.zc", spec, min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        for name in CTX_MODEL:
            job = gpu_job(a, name)
            assert job is not None, name
            s, want = job.stream, modes.get(name.split(".")[0], "any")
            if want != "any":
                assert ((s.mode, s.layout) if isinstance(s, G.Contexts) else None) == want, name
            got = emulate_trellis([job])[0] if isinstance(job, G.TrellisJob) else emulate(job)
            assert got.tobytes() == a.read(name).tobytes(), name


def test_placed_lays_out_many_ctx_tensors_in_one_launch(tmp_path, monkeypatch):
    """_placed()'s bookkeeping over several ctx tensors of one load (one rans_index launch for every
    coded context of every tensor, each tensor's indices cut back out), with NumPy standing in for
    CuPy and emulate_symbols for the launch: each tensor's levels are its own."""
    import sys

    compress(CTX_MODEL, tmp_path / "m.zc", "uniform:bits=6,per_tensor=true,coder=ctx", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        jobs = [gpu_job(a, n) for n in CTX_MODEL]
    assert sum(isinstance(j.stream, G.Contexts) for j in jobs) == 3

    def launch(coded, kernel, out, what, staged):
        assert kernel == "rans_index"
        for j, at in coded:
            out[at : at + j.stream.count] = emulate_symbols(j.stream, j.stream.count)

    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(G, "_launch", launch)
    for got, job in zip(G._placed(jobs, "t", None), jobs, strict=True):
        if isinstance(job.stream, G.Contexts):
            assert isinstance(got.stream, G.Packed) and got.stream.lo == job.stream.low
            assert got.stream.raw.tobytes() == placed(job).stream.raw, job.name
        else:
            assert got is job


def test_context_map_follows_the_side_information():
    """Contexts of a hand-made frame: lut[row base + column class]; group ends known, before, between, after."""
    c = G.Contexts(6, 0, 2, 3, 3, np.array([10, 11], np.int32), np.array([0, 1, 0], np.int16),
                   np.array([0] * 10 + [1, 2, 3], np.uint8), 0, 0, 0, np.zeros(0, np.uint16), np.zeros(0, np.uint16),
                   np.zeros(5, np.uint64), 0, 0, [])
    assert G.context_map(c).tolist() == [1, 2, 1, 2, 3, 2]
    ends = G.Contexts(8, 2, 1, 8, 0, np.zeros(0, np.int32), np.zeros(0, np.int16), np.zeros(0, np.uint8), 4, -3, 5,
                      np.array([1, 4], np.uint16), np.array([3, 0], np.uint16), np.zeros(6, np.uint64), -3, 5, [])
    # group 0: lowest at 1, highest at 3; group 1: highest at 0, no lowest (4)
    assert G.context_map(ends).tolist() == [3, G.KNOWN_LO, 2, G.KNOWN_HI, G.KNOWN_HI, 1, 1, 1]


def test_codebook_index_out_of_range_is_flagged():
    from zoocodec.codecs import ans

    steps = np.linspace(-1, 1, 4)
    for data in (ans.encode(np.arange(5000) % 5), ans._packed(np.arange(5000) % 5)):
        job = G.Job("t", (5000,), "float32", G.parse(data, 5000, "t"), steps, k=4, row_len=5000)
        with pytest.raises(ContainerError, match="out of range"):
            emulate(job)


@pytest.mark.parametrize("ints", [np.int8, np.int16, np.int32, np.int64])
def test_coded_side_values_are_the_cpus_and_checked_on_the_host(ints):
    """uniform:side=M on the GPU: the kernel's step and zero of each group from the codes' words (as narrow as
    they decoded) equal native side_values' (the CPU's), subnormal and huge steps included; the host's
    side_range refuses what side_values refuses and bounds the values for check_range."""
    from zoocodec.methods.uniform import MAX_EXPONENT

    mant, bits, n = 5, 4, 3000
    g = np.random.default_rng(int(np.dtype(ints).itemsize))
    top = min(np.iinfo(ints).max >> mant, 900)  # (steps and zero points finite)
    codes = (g.integers(-top, top, n) << mant | g.integers(0, 1 << mant, n)).astype(ints)
    centres = g.integers(np.iinfo(ints).min // 2, np.iinfo(ints).max // 2, n).astype(ints)
    steps, zeros, ok = native.engine().side_values(codes.astype(np.int64), centres.astype(np.int64), mant, bits,
                                                   MAX_EXPONENT)
    side = G.Side.checked(codes, centres, mant, bits, MAX_EXPONENT)
    assert ok and side.largest_step == steps.max() and side.largest_zero == np.abs(zeros).max()
    job = G.Job("t", (n, 32), "float32", G.Packed(n * 32, 0, 1, bytes(n * 32)), G.NO_STEPS, 0, 32, 32, side=side)
    got = np.array([side_values(job, i) for i in range(n)])
    assert np.array_equal(got[:, 0], steps) and np.array_equal(got[:, 1], zeros)
    if np.dtype(ints).itemsize >= 4:  # (narrower codes cannot reach past the largest exponent)
        forged = codes.copy()
        forged[7] = (MAX_EXPONENT + 1) << mant
        with pytest.raises(ContainerError, match="group step codes or centres give steps or zero points out of range"):
            G.Side.checked(forged, centres, mant, bits, MAX_EXPONENT)
    small = G.Side.checked(np.full(n, -4 << mant, ints), np.zeros(n, ints), mant, bits, MAX_EXPONENT)
    G.check_range(dataclasses.replace(job, side=small), "t")
    with pytest.raises(ContainerError, match="outside the float32 range"):
        G.check_range(dataclasses.replace(job, side=dataclasses.replace(small, largest_step=2.0**200)), "t")


def test_lossless_float_planes_are_taken(tmp_path):
    """Lossless fp32 / fp16 / bf16 (rANS, Huffman, raw and zstd planes, a constant tensor): the
    kernels' algorithm gives the CPU decoder's bits."""
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    model["rep.weight"] = torch.zeros(40, 300).index_fill_(1, torch.arange(0, 300, 7), 0.5)  # zstd finds repeats
    model["huff.weight"] = weights((300, 700), "bfloat16", 4)  # 210,000 exponents: Huffman, 4 substreams
    compress(model, tmp_path / "m.zc", "lossless", min_size=100)
    kinds = set()
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = gpu_job(a, name)
            assert isinstance(job, G.PlanesJob), name
            kinds |= {type(p).__name__ for p in job.planes}
            got = emulate_planes(job)
            assert got.tobytes() == a.read(name).tobytes(), name
    assert kinds == {"Stream", "memoryview", "Huffman"}


def test_batches_and_what_the_kernel_takes(tmp_path, archives):
    with Archive(archives["uniform:bits=8"]) as a:
        jobs = [gpu_job(a, n) for n in MODEL]
        assert [j.stream.L > 0 for j in jobs] == [True, True, True, False]
        assert [len(j.stream.lengths) for j in jobs] == [4, 1, 1, 0]
    compress(MODEL, tmp_path / "m.zc", "kmeans:k=4", min_size=100,
             overrides={"half*": "uniform:bits=8,coder=cabac", "bf*": "uniform:bits=8"})
    with Archive(tmp_path / "m.zc") as a:  # kmeans as a codebook lookup; other coders on the host
        assert gpu_job(a, "big.weight").k == 4 and gpu_job(a, "half.weight") is None
        assert gpu_job(a, "bf.weight") is not None


def test_slot_table_matches_the_native_layout():
    freq = np.array([3, 0, 1, 4], np.uint32)
    fb, sym = G.slot_table(freq)
    assert sym.tolist() == [0, 0, 0, 2, 3, 3, 3, 3]
    assert (fb & 0xFFFF).tolist() == [3, 3, 3, 1, 4, 4, 4, 4] and (fb >> 16).tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_slot_table_is_every_symbols_run_of_slots(nsym, bits, seed):
    """The native table against its definition: symbol s fills freq[s] slots in order, each holding
    freq[s] | (its place in the run) << 16; a 2^16-slot table of one symbol too."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, 2**bits + 1, nsym - 1))
    freq = np.diff(np.concatenate([[0], cuts, [2**bits]])).astype(np.uint32)
    for f in (freq, np.array([2**16], np.uint32)):
        fb, sym = G.slot_table(f)
        want_sym = np.repeat(np.arange(f.size), f)
        bias = np.arange(want_sym.size) - np.repeat(np.cumsum(f) - f, f)
        assert sym.dtype == np.uint16 and sym.tolist() == want_sym.tolist()
        assert fb.dtype == np.uint32 and fb.tolist() == (f[want_sym].astype(np.uint64) | bias.astype(np.uint64) << 16
                                                         ).astype(np.uint32).tolist()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_damage_is_an_error_never_garbage(archives, data):
    """Flipped bytes in a stream: the parser or the emulated kernel refuses it, or it decodes
    to exactly what the CPU decoder makes of the same bytes."""
    from zoocodec.methods import spec_from_dict

    with Archive(archives["uniform:bits=8"]) as a:
        e = a.entries["half.weight"]
        raw = bytearray(a.container.segment("t", tuple(e["segments"]["symbols"])))
        steps_seg = a.container.segment("t", tuple(e["segments"]["steps"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        spec = spec_from_dict(e["method"])
        try:
            cpu = spec.decode(e["side"], {"symbols": memoryview(bytes(raw)), "steps": steps_seg}, (64, 100), "float16")
        except (ContainerError, ValueError):
            cpu = None
        stream = gpu = None
        try:
            stream = G.parse(bytes(raw), 6400, "t")
            steps = np.frombuffer(bytes(steps_seg), "<f4").astype(np.float64)
            gpu = None if stream is None else emulate(G.Job("half.weight", (64, 100), "float16", stream, steps))
        except ContainerError:
            pass
        if stream is not None and gpu is not None:
            assert cpu is not None and gpu.tobytes() == cpu.tobytes()



@settings(max_examples=60, deadline=None)
@given(st.data())
def test_huffman_damage_is_an_error_never_garbage(data):
    """Flipped bytes in a Huffman plane (header, code lengths, substream lengths, bits): the native
    parser or the emulated huff_bytes refuses it exactly where the CPU decoder does, and otherwise
    gives its bytes."""
    check_huffman_damage(data, emulate_huffman)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_ctx_damage_is_an_error_never_garbage(tmp_path_factory, data):
    """Flipped bytes in a ctx payload (side information, tables, streams): the native parser or the
    emulated kernel refuses it where the CPU decoder does, or the levels put in place are exactly what
    the CPU decoder makes of the same bytes."""
    shape = tuple(CTX_MODEL["both.weight"].shape)

    def emulated(stream: G.Contexts) -> np.ndarray:
        job = placed(G.Job("w", shape, "float32", stream, np.ones(1)))
        return packed_levels(job.stream, math.prod(shape))

    check_ctx_damage(tmp_path_factory, data, CTX_MODEL["both.weight"], emulated)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_side_code_damage_is_an_error_never_garbage(tmp_path_factory, data):
    """Flipped bytes in a side=M file's step codes or centres (past the checksums): the host's
    side_range or check_range refuses them, or the emulated kernel writes exactly the CPU decoder's bytes."""
    from zoocodec.methods.uniform import CODED_STREAMS

    path = tmp_path_factory.getbasetemp() / "side-damage.zc"
    if not path.exists():
        compress({"w": scaled((40, 200), "bfloat16", 5)}, path, "uniform:bits=4,group=32,zero=true,side=5",
                 min_size=100)
    with Archive(path) as a:
        e = a.plan["w"]
        segments = {k: bytes(a.container.segment("t", tuple(s))) for k, s in e.segments.items()}
        name = data.draw(st.sampled_from(CODED_STREAMS))
        raw = bytearray(segments[name])
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        segments[name] = bytes(raw)
        try:
            with np.errstate(over="raise", invalid="raise"):
                cpu = e.spec.decode(e.side, {k: memoryview(v) for k, v in segments.items()}, e.shape, e.dtype)
        except (ContainerError, ValueError, FloatingPointError):
            cpu = None
        try:
            job = G._job(a, e, segments)
            gpu = None if job is None else emulate(job)
        except ContainerError:
            gpu = None
    if gpu is not None:
        assert cpu is not None and gpu.tobytes() == cpu.tobytes()


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_dq_damage_is_an_error_never_garbage(tmp_path_factory, data):
    """Flipped bytes in a dq stream: the emulated rans_index refuses it, or the state walk gives
    exactly what the CPU decoder makes of the same bytes."""
    from zoocodec.methods import spec_from_dict

    path = tmp_path_factory.getbasetemp() / "dq-damage.zc"
    if not path.exists():
        compress({"w": weights((40, 120), "float32", 13)}, path, "dq:step=0.01,coder=ans", min_size=100)
    with Archive(path) as a:
        e = a.entries["w"]
        raw = bytearray(a.container.segment("t", tuple(e["segments"]["symbols"])))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        cpu = spec_from_dict(e["method"]).decode(e["side"], {"symbols": memoryview(bytes(raw))}, (40, 120), "float32")
    except (ContainerError, ValueError):
        cpu = None
    try:
        stream = G.parse(bytes(raw), 4800, "t")
        gpu = None if stream is None else emulate_trellis(
            [G.TrellisJob("w", (40, 120), "float32", stream, np.array([0.01]), 40, 120, True)])[0]
    except ContainerError:
        gpu = None
    if gpu is not None:
        assert cpu is not None and gpu.tobytes() == cpu.tobytes()


def test_jobs_read_their_substreams_from_the_one_staged_buffer(tmp_path):
    """jobs(): every substream a kernel reads, and every raw plane, lies in the one staged buffer
    (Staged.at finds it there); a plane inflated from zstd on the host does not (run_planes uploads
    it); gather() stages the blobs of jobs parsed on their own, at the offsets at() gives."""
    model = {"w": weights((300, 700), "float32"), "h": weights((300, 700), "bfloat16", 4),
             "rep": torch.zeros(40, 300).index_fill_(1, torch.arange(0, 300, 7), 0.5)}
    compress(model, tmp_path / "m.zc", "lossless", min_size=100)
    compress({"w": model["w"]}, tmp_path / "u.zc", "uniform:bits=6,coder=ctx", min_size=100)
    with Archive(tmp_path / "m.zc") as a, Archive(tmp_path / "u.zc") as u:
        staged, found = G.jobs(a, ["w", "h", "rep"], host_memory)
        blobs = G._blobs(found)
        assert len(blobs) >= 3 and all(staged.at(b) is not None for b in blobs)
        raw = [p for j in found for p in j.planes if isinstance(p, memoryview)]
        inside = [staged.at(p) is not None for p in raw]
        assert True in inside and False in inside  # raw planes staged, rep's zstd plane inflated
        for b in blobs:
            at = staged.at(b)
            assert bytes(staged.host[at : at + len(b)]) == bytes(b)
        ctx = G.jobs(u, ["w"], host_memory)[1]
        assert isinstance(ctx[0].stream, G.Contexts)
    gathered = G.Staged.gather(blobs, host_memory)
    assert gathered.at(b"") == 0 and gathered.at(memoryview(b"elsewhere")) is None
    for b in blobs:
        at = gathered.at(b)
        assert bytes(gathered.host[at : at + len(b)]) == bytes(b)


def test_a_damaged_side_payload_is_named_as_a_checksum_mismatch(tmp_path):
    """jobs() asks the method whether the kernels take a tensor before its payloads are checked
    (as the CPU's pass does); damage there that makes the method refuse is still reported as the
    checksum mismatch it is, by the staging copy's check, never as a parse error."""
    compress({"w": MODEL["big.weight"]}, tmp_path / "m.zc", "uniform:bits=8", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        offset, length, _ = a.entries["w"]["segments"]["steps"]
    data = bytearray((tmp_path / "m.zc").read_bytes())
    data[offset : offset + length] = bytes([0xFF]) * length
    (tmp_path / "bad.zc").write_bytes(bytes(data))
    with Archive(tmp_path / "bad.zc") as a, pytest.raises(ContainerError, match="checksum mismatch"):
        G.jobs(a, ["w"], host_memory)


def test_every_huffman_plane_of_a_load_decodes_in_one_launch(tmp_path):
    """huff_layout: the Huffman planes of several tensors (one with several substreams) in one
    launch, each plane's substreams from a block's start with its table; the kernel's emulation
    over it gives each plane's bytes as the CPU's Huffman decoder does."""
    from zoocodec.codecs import floatplanes

    model = {f"t{i}": weights((100 + 40 * i, 700), "bfloat16", i) for i in range(3)}  # 70,000 exponents and up
    compress(model, tmp_path / "m.zc", "lossless", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        staged, found = G.jobs(a, list(model), host_memory)
        planes, at = [], 0
        for j in found:
            for p in j.planes:
                if isinstance(p, G.Huffman):
                    planes.append((j.name, p, at))
                    at += p.count
        assert len(planes) == len(model)
        layout = G.huff_layout(planes, staged)
        starts = [int(np.searchsorted(layout[5], i)) * G.THREADS for i in range(len(planes))]
        assert [int(layout[2][s]) for s in starts] == [at for _, _, at in planes]
        out = np.zeros(at, np.uint8)
        emulate_huff_launch(staged, layout, out)
        for name, p, at in planes:
            e = a.plan[name]
            (mode, body), _ = floatplanes.frame(a.container.segment("t", e.segments["data"]), e.numel,
                                                np.uint16, huffman=True)
            assert mode == floatplanes.HUFFMAN
            assert out[at : at + p.count].tobytes() == bytes(native.engine().huff_decode(body, e.numel)), name
