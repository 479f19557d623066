"""The GPU decoder's host half (frame parsing, slot tables, batching) and its algorithm, on the CPU.

`emulate` runs decode.cu's algorithm step for step in NumPy (eight lanes per substream, each
renormalising lane taking the word at its rank among the lanes that read in this step,
float64 dequantization rounded as the kernel rounds), over the same arrays run() uploads;
it must give the CPU decoder's bytes. The kernel itself runs only in tests/kernels/test_decode_gpu.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from zoocodec.errors import ContainerError
from zoocodec.kernels import decode as G
from zoocodec.methods.arrays import from_float64
from zoocodec.pipeline.core import Archive, compress


def emulate_packed(job: G.Job) -> np.ndarray:
    """decode.cu's packed kernel in NumPy: each element's little-endian bytes assembled into a
    uint64, lo added with wrap-around, the float64 product rounded as the kernel rounds."""
    p, numel = job.stream, math.prod(job.shape)
    raw = np.frombuffer(p.raw, np.uint8).reshape(numel, p.width).astype(np.uint64)
    v = np.zeros(numel, np.uint64)
    for b in range(p.width):
        v |= raw[:, b] << np.uint64(8 * b)
    sym = (v + np.uint64(p.lo % (1 << 64))).view(np.int64)
    row = np.arange(numel) // job.row_length if job.rows > 1 else np.zeros(numel, np.int64)
    if job.k:
        if sym.size and (sym.min() < 0 or sym.max() >= job.k):
            raise ContainerError("codebook index out of range")
        return from_float64(job.steps[row * job.k + sym], job.dtype).reshape(job.shape)
    return from_float64(sym.astype(np.float64) * job.steps[row], job.dtype).reshape(job.shape)


def emulate(job: G.Job) -> np.ndarray:
    """decode.cu on one job, in NumPy; raises ContainerError where the kernel sets bad[s]."""
    if isinstance(job.stream, G.Packed):
        return emulate_packed(job)
    s, numel = job.stream, math.prod(job.shape)
    out = np.empty(numel, np.float64)
    rows, row_len = job.rows, job.row_length

    def value(elem, sym):
        row = elem // row_len if rows > 1 else 0
        if job.k:  # a codebook index: outside [0, k) the kernel flags the substream
            if not 0 <= sym + s.lo < job.k:
                raise ContainerError("codebook index out of range")
            return float(job.steps[row * job.k + sym + s.lo])
        return float(np.float64(sym + s.lo) * job.steps[row])

    if s.L == 0:
        out[:] = [value(i, 0) for i in range(numel)]
        return from_float64(out, job.dtype).reshape(job.shape)
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
                out[first + j + k] = value(first + j + k, int(syms[x[k] & mask]))
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
    return from_float64(out, job.dtype).reshape(job.shape)


def emulate_planes(job: G.PlanesJob) -> np.ndarray:
    """run_planes in NumPy: rans_bytes (emulate's rANS walk, the symbol stored as a byte) per
    coded plane, raw planes as they are, then planes_merge's rotation."""
    n = math.prod(job.shape)
    planes = [np.frombuffer(p, np.uint8) if isinstance(p, bytes) else
              emulate(G.Job(job.name, (n,), "float32", p, np.ones(1))).astype(np.uint8) for p in job.planes]
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
            job = G.job(a, name)
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
            job = G.job(a, name)
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
            job = G.job(a, name)
            assert job is not None and job.k, name
            assert emulate(job).tobytes() == a.read(name).tobytes(), name


def test_rdoq_levels_under_ans_are_taken_and_dq_is_not(tmp_path):
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    compress(model, tmp_path / "r.zc", "rdoq:bits=6,coder=ans", min_size=100)
    compress(model, tmp_path / "d.zc", "dq:step=0.01,coder=ans", min_size=100)
    with Archive(tmp_path / "r.zc") as a, Archive(tmp_path / "d.zc") as d:
        for name in model:
            job = G.job(a, name)
            assert job is not None and emulate(job).tobytes() == a.read(name).tobytes(), name
            assert G.job(d, name) is None, name


def test_codebook_index_out_of_range_is_flagged():
    from zoocodec.codecs import ans

    steps = np.linspace(-1, 1, 4)
    for data in (ans.encode(np.arange(5000) % 5), ans._packed(np.arange(5000) % 5)):
        job = G.Job("t", (5000,), "float32", G.parse(data, 5000, "t"), steps, k=4, row_len=5000)
        with pytest.raises(ContainerError, match="out of range"):
            emulate(job)


def test_lossless_float_planes_are_taken(tmp_path):
    """Lossless fp32 / fp16 / bf16 (rANS, raw and zstd planes, a constant tensor): the kernels'
    algorithm gives the CPU decoder's bits."""
    model = {k: v for k, v in MODEL.items() if k != "big.weight"}
    model["rep.weight"] = torch.zeros(40, 300).index_fill_(1, torch.arange(0, 300, 7), 0.5)  # zstd finds repeats
    compress(model, tmp_path / "m.zc", "lossless", min_size=100)
    kinds = set()
    with Archive(tmp_path / "m.zc") as a:
        for name in model:
            job = G.job(a, name)
            assert isinstance(job, G.PlanesJob), name
            kinds |= {type(p).__name__ for p in job.planes}
            got = emulate_planes(job)
            assert got.tobytes() == a.read(name).tobytes(), name
    assert kinds == {"Stream", "bytes"}


def test_batches_and_what_the_kernel_takes(tmp_path, archives):
    with Archive(archives["uniform:bits=8"]) as a:
        jobs = [G.job(a, n) for n in MODEL]
        assert [j.stream.L > 0 for j in jobs] == [True, True, True, False]
        assert [len(j.stream.lengths) for j in jobs] == [4, 1, 1, 0]
    compress(MODEL, tmp_path / "m.zc", "kmeans:k=4", min_size=100,
             overrides={"half*": "uniform:bits=8,coder=ctx", "bf*": "uniform:bits=8"})
    with Archive(tmp_path / "m.zc") as a:  # kmeans as a codebook lookup; other coders on the host
        assert G.job(a, "big.weight").k == 4 and G.job(a, "half.weight") is None
        assert G.job(a, "bf.weight") is not None


def test_slot_table_matches_the_native_layout():
    freq = np.array([3, 0, 1, 4], np.uint32)
    fb, sym = G.slot_table(freq)
    assert sym.tolist() == [0, 0, 0, 2, 3, 3, 3, 3]
    assert (fb & 0xFFFF).tolist() == [3, 3, 3, 1, 4, 4, 4, 4] and (fb >> 16).tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


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

