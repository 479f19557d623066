"""The CUDA emulator itself: CUDA's semantics where the kernels lean on them (barriers, warp shuffles and
ballots, conversions), the errors that stand for a GPU's undefined behaviour, CuPy's argument rules; and
the `gpu` tests run on it (the decoder's in the fast tier, every one in the slow tier)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import cuda_emu

pytestmark = pytest.mark.skipif(cuda_emu.available() is not None, reason=str(cuda_emu.available()))
ROOT = Path(__file__).parents[2]

SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__ void rotate(const float* x, float* out) {  // a barrier between shared writes and reads
  __shared__ float s[256];
  s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void warp_sum(const int* x, int* out, unsigned long long* ballots) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = x[i];
  const unsigned b = __ballot_sync(0xFFFFFFFFu, v & 1);
  for (int d = 16; d; d >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, d);
  int w = x[i];
  for (int d = 1; d < 32; d <<= 1) w += __shfl_xor_sync(0xFFFFFFFFu, w, d);
  out[2 * i] = v;
  out[2 * i + 1] = w;
  ballots[i] = b | (unsigned long long)__any_sync(0xFFFFFFFFu, w < 0) << 32 |
                (unsigned long long)__any_sync(0xFFFFFFFFu, threadIdx.x % 32 == 5) << 33;
}
extern "C" __global__ void partial(const int* x, int* out) {  // half a warp one operation ahead of the other
  int v = x[threadIdx.x];
  if (threadIdx.x < 16) v += __shfl_xor_sync(0x0000FFFFu, v, 1);
  out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, v, 16);
}
extern "C" __global__ void early_exit(int* out) {  // lanes 16.. leave before a full-warp ballot
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __ballot_sync(0xFFFFFFFFu, 1);
}
extern "C" __global__ void divergent(int* out) {  // half a warp at a barrier, its other half at a ballot
  if (threadIdx.x < 16) { out[0] = __ballot_sync(0xFFFFFFFFu, 1); } else { __syncthreads(); }
}
extern "C" __global__ void convert(const double* x, unsigned short* half, long long* rounded) {
  half[threadIdx.x] = __half_as_ushort(__double2half(x[threadIdx.x]));
  rounded[threadIdx.x] = __double2ll_rn(x[threadIdx.x]);
}
extern "C" __global__ void past(const float* x, unsigned long long reach, float* out) {
  out[threadIdx.x] = x[threadIdx.x + reach];
}
extern "C" __global__ void before(const float* x, long long back, float* out) {
  out[threadIdx.x] = x[(long long)threadIdx.x - back];
}
extern "C" __global__ void scaled(const float* x, unsigned long long n, double by, float* out) {
  const unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
  if (i < n) out[i] = (float)__dmul_rn(x[i], by);
}
"""


@pytest.fixture(scope="module")
def emu():
    cupy, _ = cuda_emu.modules()
    return cupy, cupy.RawModule(code=SOURCE)


def test_a_barrier_orders_shared_memory(emu):
    cupy, m = emu
    x = np.arange(512, dtype=np.float32)
    out = cupy.empty(512, dtype=np.float32)
    m.get_function("rotate")((2,), (256,), (cupy.asarray(x), out))
    assert np.array_equal(out.get(), np.roll(x.reshape(2, 256), -1, axis=1).ravel())


def test_shuffles_and_ballots_are_cudas(emu):
    cupy, m = emu
    x = np.random.default_rng(0).integers(0, 100, 128).astype(np.int32)
    out, ballots = cupy.empty(256, dtype=np.int32), cupy.empty(128, dtype=np.uint64)
    m.get_function("warp_sum")((2,), (64,), (cupy.asarray(x), out, ballots))
    warps = x.reshape(4, 32)
    # __shfl_down_sync's tree: lane l adds lane l + d, or itself where l + d is past the warp (lane 0 ends
    # with the warp's sum); __shfl_xor_sync's butterfly gives every lane the whole sum.
    down = warps.astype(np.int64)
    for d in (16, 8, 4, 2, 1):
        down = down + np.where(np.arange(32) + d < 32, np.roll(down, -d, axis=1), down)
    got = out.get().reshape(4, 32, 2)
    assert np.array_equal(got[:, :, 0], down)
    assert np.array_equal(got[:, :, 1], np.repeat(warps.sum(axis=1, keepdims=True), 32, axis=1))
    odd = [int(sum(1 << lane for lane in range(32) if w[lane] & 1)) for w in warps]
    assert np.array_equal(ballots.get() & 0xFFFFFFFF, np.repeat(odd, 32))
    assert np.array_equal(ballots.get() >> 32, np.full(128, 2))  # no lane's w < 0; lane 5 of each warp


def test_lanes_that_did_more_warp_operations_are_read_at_this_one(emu):
    cupy, m = emu
    x = np.arange(32, dtype=np.int32) * 3 + 1
    out = cupy.empty(32, dtype=np.int32)
    m.get_function("partial")((1,), (32,), (cupy.asarray(x), out))
    low = x[:16] + x[np.arange(16) ^ 1]
    assert out.get().tolist() == [*x[16:], *low]


def test_a_warp_operation_naming_an_exited_lane_is_an_error(emu):
    cupy, m = emu
    with pytest.raises(RuntimeError, match="lane 16, which has exited"):
        m.get_function("early_exit")((1,), (32,), (cupy.empty(32, dtype=np.int32),))


def test_a_barrier_nobody_can_leave_is_a_deadlock(emu):
    cupy, m = emu
    with pytest.raises(RuntimeError, match="deadlock in block 0"):
        m.get_function("divergent")((1,), (32,), (cupy.empty(1, dtype=np.int32),))


def test_conversions_round_as_the_device_does(emu):
    cupy, m = emu
    x = np.array([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-12, 65520.0, -2.5, 3.5, 1e300, -1e300, np.nan], np.float64)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)  # one rounding from double, to infinity past the range
    half, rounded = cupy.empty(8, dtype=np.uint16), cupy.empty(8, dtype=np.int64)
    m.get_function("convert")((1,), (8,), (cupy.asarray(x), half, rounded))
    assert np.array_equal(half.get(), expected)
    assert rounded.get().tolist() == [1, 1, 65520, -2, 4, 2**63 - 1, -(2**63), 0]  # even ties, clamped, NaN 0


def test_reading_past_an_array_is_caught(emu):
    """Each device array ends at a page nobody may touch: a kernel that reads past it fails the launch (on a
    GPU it would read a neighbour's bytes); reads inside, to the last element, do not."""
    cupy, m = emu
    x, out = cupy.asarray(np.arange(100, dtype=np.float32)), cupy.zeros(32, dtype=np.float32)
    m.get_function("past")((1,), (32,), (x, np.uint64(68), out))
    assert np.array_equal(out.get(), np.arange(68, 100, dtype=np.float32))
    with pytest.raises(RuntimeError, match="thread 31 of block 0,0: read or wrote outside its arrays"):
        m.get_function("past")((1,), (32,), (x, np.uint64(69), out))
    m.get_function("past")((1,), (32,), (x, np.uint64(0), out))  # (the launch after a fault runs)
    assert np.array_equal(out.get(), np.arange(32, dtype=np.float32))


def test_reading_before_an_array_is_caught_with_the_guard_at_its_start(emu, monkeypatch):
    """ZOOCODEC_EMU_GUARD=start puts the page nobody may touch before each new array: a read at index -1
    fails the launch; reads from the first element on do not."""
    cupy, m = emu
    monkeypatch.setenv("ZOOCODEC_EMU_GUARD", "start")
    x, out = cupy.asarray(np.arange(100, dtype=np.float32)), cupy.zeros(32, dtype=np.float32)
    m.get_function("before")((1,), (32,), (x, np.int64(0), out))
    assert np.array_equal(out.get(), np.arange(32, dtype=np.float32))
    with pytest.raises(RuntimeError, match="thread 0 of block 0,0: read or wrote outside its arrays"):
        m.get_function("before")((1,), (32,), (x, np.int64(1), out))


def test_arguments_follow_cupys_rules(emu):
    cupy, m = emu
    k = m.get_function("scaled")
    x, out = cupy.asarray(np.arange(300, dtype=np.float32)), cupy.empty(300, dtype=np.float32)
    k((2,), (256,), (x, 300, 0.5, out))  # Python int / float: int64 / float64, as CuPy passes them
    assert np.array_equal(out.get(), np.arange(300, dtype=np.float32) / 2)
    with pytest.raises(RuntimeError, match="argument 1: a 4-byte scalar where the kernel takes 8 bytes"):
        k((2,), (256,), (x, np.uint32(300), 0.5, out))
    with pytest.raises(RuntimeError, match="argument 2: an array where the kernel takes a 8-byte scalar"):
        k((2,), (256,), (x, 300, out, out))
    with pytest.raises(TypeError, match="host NumPy array"):
        k((2,), (256,), (np.zeros(300, np.float32), 300, 0.5, out))
    with pytest.raises(RuntimeError, match="3 arguments for a kernel of 4"):
        k((2,), (256,), (x, 300, 0.5))
    with pytest.raises(RuntimeError, match="2048 threads a block"):
        k((1,), (2048,), (x, 300, 0.5, out))


def test_device_arrays_are_not_host_arrays(emu):
    cupy, _ = emu
    d = cupy.arange(6, dtype=np.float32).reshape(2, 3)
    assert isinstance(d, cupy.ndarray) and not isinstance(d, np.ndarray)
    assert isinstance(d.sum(), cupy.ndarray) and float(d.sum()) == 15.0  # 0-d, as CuPy's reductions
    assert isinstance(np.concatenate([d, d]), cupy.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError):
        d + np.ones(3, np.float32)  # a host array in a device operation


def test_a_kernel_missing_its_barrier_is_caught(tmp_path):
    """The emulator runs the source it is given: huff_bytes without the barrier after its table load
    decodes garbage, which the CPU comparison catches."""
    from zoocodec.kernels import decode as G
    from zoocodec.kernels.backend import cuda_source
    from zoocodec.pipeline.core import Archive, compress, decompress

    w = torch.from_numpy(np.random.default_rng(0).laplace(0, 0.05, (300, 400)).astype(np.float32))
    compress({"w": w}, tmp_path / "m.zc", "lossless", min_size=100)
    source = cuda_source("decode.cu")
    assert source.count("__syncthreads();") == 1
    with cuda_emu.emulated():
        with Archive(tmp_path / "m.zc") as a:
            assert torch.equal(G.tensors(a, ["w"])["w"], decompress(tmp_path / "m.zc")["w"])
        G._module.cache_clear()
        original = G.cuda_source
        G.cuda_source = lambda name: original(name).replace("__syncthreads();", "")
        try:
            with Archive(tmp_path / "m.zc") as a, pytest.raises(Exception, match="corrupt Huffman substream"):
                G.tensors(a, ["w"])
        finally:
            G.cuda_source = original
            G._module.cache_clear()


def run_gpu_tests(paths: list[str], timeout: int, *select: str) -> str:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                        "--cuda-emulator", *select, *paths], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    return r.stdout


def test_the_gpu_decoders_tests_pass_on_the_emulator():
    """tests/kernels/test_decode_gpu.py on decode.cu's source: every payload kind the GPU decoder takes
    gives the CPU decoder's bytes (its damage tests, 20 s more, run in the slow tier's whole run)."""
    out = run_gpu_tests(["tests/kernels/test_decode_gpu.py"], 900, "-k", "not damage")
    assert " passed" in out and "failed" not in out


@pytest.mark.slow
@pytest.mark.parametrize("guard", ["end", "start"])
def test_every_gpu_test_passes_on_the_emulator(guard, monkeypatch):
    """The whole `gpu` tier (compress on the device, k-means, rdoq/dq, statistics, rANS encoding) on the
    kernels' source, with the guard page after every device array and again before it; only what needs
    torch's CUDA, NVDEC or DALI skips."""
    monkeypatch.setenv("ZOOCODEC_EMU_GUARD", guard)
    out = run_gpu_tests(["tests"], 3600)
    assert " passed" in out and "failed" not in out
