"""On a CUDA GPU: the rANS + dequantization kernels (uniform, grouped uniform, rdoq, dq, kmeans, lossless float
planes; rANS and packed frames, ctx payloads' contexts and group ends, group values from side codes)
write the CPU decoder's bytes, straight into torch CUDA tensors; damaged substreams raise
ContainerError. With `--cuda-emulator` (tests/cuda_emu, no GPU) the same kernels' source runs on the
CPU and the tests that need torch's CUDA skip. Skips cleanly without either."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import zoocodec
from tests.support import check_ctx_damage, check_huffman_damage, gpu_job
from zoocodec import device as D
from zoocodec.errors import ContainerError
from zoocodec.kernels import decode as G
from zoocodec.pipeline.core import Archive, compress, decompress

pytestmark = pytest.mark.gpu
if D.gpu_count() == 0:
    pytest.skip(f"no CUDA GPU for CuPy ({D.why_no_gpu()})", allow_module_level=True)
torch_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA (the CUDA emulator)")


def weights(shape, dtype, seed=0, scale=0.05):
    w = torch.from_numpy(np.random.default_rng(seed).laplace(0, scale, shape).astype(np.float32))
    return w.to(getattr(torch, dtype))


MODEL = {
    "big.weight": weights((1000, 1000), "float32"),       # 16 substreams, the last short
    "wide.weight": weights((3, 70000), "float32", 1),       # 3 rows of steps, 4 substreams
    "half.weight": weights((64, 100), "float16", 2),        # one 8-lane substream
    "bf.weight": weights((50, 60), "bfloat16", 3),           # one lane
    "bf2.weight": weights((512, 512), "bfloat16", 4),
    "const.weight": torch.full((80, 80), 0.25),
    "empty.weight": torch.zeros((0, 5000)),
    "conv.weight": weights((64, 32, 3, 3), "float32", 5),
    "scaled.weight": (weights((600, 500), "float32", 6)  # rows and columns of their own scales: ctx's contexts
                      * torch.exp(torch.randn(600, 1, generator=torch.Generator().manual_seed(7)) * 0.7)
                      * torch.exp(torch.randn(1, 500, generator=torch.Generator().manual_seed(8)) * 0.7)),
}
SPECS = ["uniform:bits=8", "uniform:bits=4", "uniform:bits=3,per_tensor=true", "uniform:step=0.013",
         "uniform:bits=12", "uniform:bits=16", "uniform:bits=2", "kmeans:k=16", "kmeans:k=4,per=channel",
         "kmeans:k=256,per=block,block=5000,codebook=float16", "lossless", "rdoq:bits=6,coder=ans",
         "dq:bits=6,coder=ans", "dq:step=0.01,coder=ans", "dq:step=0.000001,coder=ans", "uniform:step=0.000001",
         "uniform:bits=4,group=32,zero=true", "uniform:bits=4,group=64", "uniform:bits=12,group=128",
         "uniform:step=0.01,group=64,zero=true", "uniform:bits=6,per_tensor=true,coder=ctx", "rdoq:bits=6",
         "dq:bits=6,coder=ctx", "dq:step=0.01,axis=0,lam=0,coder=ans", "uniform:bits=4,group=32,zero=true,coder=ctx",
         "uniform:bits=4,group=32,zero=true,side=5", "uniform:bits=4,group=32,zero=true,side=5,coder=ctx"]


@pytest.mark.parametrize("spec", SPECS)
def test_gpu_decode_equals_cpu_decode(spec, tmp_path):
    compress(MODEL, tmp_path / "m.zc", spec, min_size=100)
    cpu = decompress(tmp_path / "m.zc")
    with Archive(tmp_path / "m.zc") as a:
        taken = {n for n in a.names() if gpu_job(a, n) is not None}
        kernels = G.tensors(a, a.names())
    assert taken >= {"big.weight", "wide.weight", "half.weight", "bf.weight", "bf2.weight"}
    assert set(kernels) == taken
    gpu = zoocodec.load(tmp_path / "m.zc", device="cuda") if torch.cuda.is_available() else {**cpu, **kernels}
    for name, t in cpu.items():
        g = gpu[name]
        assert g.is_cuda == torch.cuda.is_available() and g.dtype == t.dtype and g.shape == t.shape, name
        assert torch.equal(bits(g.cpu()), bits(t)), name


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 and 0.0 differ)."""
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


@torch_cuda
def test_one_tensor_and_load_into(tmp_path):
    compress(MODEL, tmp_path / "m.zc", "uniform:bits=8", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        g = a.tensor("big.weight", "cuda:0")
        assert g.is_cuda and torch.equal(g.cpu(), a.tensor("big.weight"))
    net = torch.nn.Linear(1000, 1000, bias=False)
    compress({"weight": MODEL["big.weight"]}, tmp_path / "n.zc", "uniform:bits=8", min_size=100)
    zoocodec.load_into(net, tmp_path / "n.zc", device="cuda")
    assert net.weight.is_cuda and torch.equal(net.weight.detach().cpu(), decompress(tmp_path / "n.zc")["weight"])


def test_damage_gives_an_error_or_the_cpu_decoders_bytes(tmp_path):
    """Flipped bytes in the substreams: the kernel flags the substream, or (where the damage
    still leaves a valid stream) writes exactly what the CPU decoder makes of it."""
    from zoocodec.methods import spec_from_dict

    compress({"w": MODEL["big.weight"]}, tmp_path / "m.zc", "uniform:bits=8", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        e = a.entries["w"]
        payload = bytes(a.container.segment("t", tuple(e["segments"]["symbols"])))
        steps = bytes(a.container.segment("t", tuple(e["segments"]["steps"])))
        job = gpu_job(a, "w")
    spec = spec_from_dict(e["method"])
    body_at = len(payload) - len(job.stream.data)
    rng = np.random.default_rng(0)
    errors = 0
    for _ in range(50):
        damaged = bytearray(payload)
        damaged[body_at + int(rng.integers(0, len(payload) - body_at))] ^= int(rng.integers(1, 256))
        try:
            cpu = spec.decode(e["side"], {"symbols": memoryview(bytes(damaged)), "steps": memoryview(steps)},
                              (1000, 1000), "float32")
        except ContainerError:
            cpu = None
        job.stream = G.parse(bytes(damaged), 1000 * 1000, "t")
        try:
            gpu = G.run([job])[0].get()
        except ContainerError:
            errors += 1
            assert cpu is None
            continue
        assert cpu is not None and gpu.tobytes() == cpu.tobytes()
    assert errors >= 40


def test_many_tensors_one_launch_matches(tmp_path):
    model = {f"layer{i}.weight": weights((384, 384), "float32", i) for i in range(24)}
    compress(model, tmp_path / "m.zc", "uniform:bits=6", min_size=100)
    cpu = decompress(tmp_path / "m.zc")
    with Archive(tmp_path / "m.zc") as a:
        gpu = G.tensors(a, a.names())
    assert set(gpu) == set(cpu) and all(torch.equal(gpu[k].cpu(), cpu[k]) for k in cpu)


def test_dq_damage_gives_an_error_or_the_cpu_decoders_bytes(tmp_path):
    """dq levels: a substream rans_index flags raises before dq_maps / dq_values run; a damaged
    stream that stays valid walks the state machine to exactly what the CPU decoder makes of it."""
    from zoocodec.methods import spec_from_dict

    compress({"w": MODEL["big.weight"]}, tmp_path / "m.zc", "dq:step=0.01,coder=ans", min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        e = a.entries["w"]
        payload = bytes(a.container.segment("t", tuple(e["segments"]["symbols"])))
        job = gpu_job(a, "w")
        assert isinstance(job, G.TrellisJob)
        assert torch.equal(bits(G.to_torch(G.run_trellis([job])[0], "float32").cpu()), bits(a.tensor("w")))
    spec = spec_from_dict(e["method"])
    body_at = len(payload) - len(job.stream.data)
    rng = np.random.default_rng(1)
    errors = 0
    for _ in range(30):
        damaged = bytearray(payload)
        damaged[body_at + int(rng.integers(0, len(payload) - body_at))] ^= int(rng.integers(1, 256))
        try:
            cpu = spec.decode(e["side"], {"symbols": memoryview(bytes(damaged))}, (1000, 1000), "float32")
        except ContainerError:
            cpu = None
        job.stream = G.parse(bytes(damaged), 1000 * 1000, "t")
        try:
            gpu = G.run_trellis([job])[0].get()
        except ContainerError:
            errors += 1
            assert cpu is None
            continue
        assert cpu is not None and gpu.tobytes() == cpu.tobytes()
    assert errors >= 20


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_huffman_damage_gives_an_error_or_the_cpu_decoders_bytes(data):
    """Flipped bytes in a Huffman plane past its checksum: the native parser or huff_bytes refuses it
    exactly where the CPU decoder does, and otherwise writes its bytes."""
    import cupy

    def on_device(h: G.Huffman) -> np.ndarray:
        out = cupy.zeros(h.count, dtype=np.uint8)
        G._huff_launch([("w", h, 0)], out, "t", G.Staged.gather([h.data]))
        return out.get()

    check_huffman_damage(data, on_device)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_ctx_damage_gives_an_error_or_the_cpu_decoders_levels(tmp_path_factory, data):
    """Flipped bytes in a ctx payload (side information, tables, streams) past its checksum: the native
    parser or rans_index refuses it where the CPU decoder does (on the emulator every damaged stream so far
    was refused by both), or the levels place() puts on the device are the CPU decoder's."""

    def on_device(stream: G.Contexts) -> np.ndarray:
        job = G.Job("w", tuple(MODEL["scaled.weight"].shape), "float32", stream, np.ones(1))
        placed = G._placed([job], "t", G.Staged.gather(G._blobs([job])))[0].stream
        return placed.raw.get().astype(np.int64) + placed.lo

    check_ctx_damage(tmp_path_factory, data, MODEL["scaled.weight"], on_device)
