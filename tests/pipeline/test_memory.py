"""Peak memory of compress and decompress, measured in a fresh process, as a multiple of the
largest tensor's own bytes: at most 3x and 2x (bench/bench_memory.py measures the 1 GB case;
before streaming, a 64 MB tensor took 11.0x and 6.4x in fp32, 24x and 16x in bf16:
bench/results/memory-before-64mb-*.json)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import ctypes, json, sys
import zoocodec.methods.arrays
from zoocodec.pipeline import core

src, zc, out, small, spec, block = sys.argv[1:7]
zoocodec.methods.arrays.BLOCK_BYTES = int(block)  # the blocks scale with the tensor the test can afford

def status_kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

def peak(fn):
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what an earlier step freed leaves the resident set
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the resident set now
        f.write("5")
    base = status_kib("VmRSS:")
    fn()
    return (status_kib("VmHWM:") - base) * 1024

core.compress(small, zc, spec)  # imports and thread pools first
core.decompress(zc, out)
print(json.dumps({"compress": peak(lambda: core.compress(src, zc, spec)),
                  "decompress": peak(lambda: core.decompress(zc, out))}))
"""


def model(path: Path, rows: int, cols: int, dtype: torch.dtype) -> int:
    g = np.random.default_rng(0)
    w = torch.from_numpy((g.laplace(0, 0.02, (rows, cols))).astype(np.float32)).to(dtype)
    save_file({"big.weight": w, "big.bias": torch.zeros(rows, dtype=dtype)}, str(path))
    return w.nbytes


def peaks(tmp_path: Path, dtype: torch.dtype, spec: str, mib: int, block: int) -> dict:
    width = torch.empty(0, dtype=dtype).element_size()
    nbytes = model(tmp_path / "big.safetensors", (mib << 20) // width // 1024, 1024, dtype)
    model(tmp_path / "small.safetensors", 64, 1024, dtype)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "big.safetensors"), str(tmp_path / "m.zc"),
                          str(tmp_path / "out.safetensors"), str(tmp_path / "small.safetensors"), spec, str(block)],
                         capture_output=True, text=True, env=env, check=True)
    return {k: v / nbytes for k, v in json.loads(out.stdout.splitlines()[-1]).items()}


LINUX = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")


@LINUX
def test_default_spec_streams_inside_a_bf16_tensor(tmp_path):
    """A small tensor (16 MB, 1 MB blocks): fixed costs (blocks, the coder's tables, buffers)
    weigh about 0.3x more than at 128 MB."""
    m = peaks(tmp_path, torch.bfloat16, "uniform:bits=8", 16, 1 << 20)
    assert m["compress"] <= 3.5 and m["decompress"] <= 2.3, m


@pytest.mark.slow
@LINUX
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", ["uniform:bits=8", "uniform:step=0.01", "lossless"])
def test_streams_inside_a_128mb_tensor(tmp_path, dtype, spec):
    m = peaks(tmp_path, dtype, spec, 128, 8 << 20)
    assert m["compress"] <= 3.0 and m["decompress"] <= 2.0, m


def test_a_model_larger_than_the_budget_decompresses_to_a_file(tmp_path):
    """Written tensor by tensor, a model only needs its largest tensor to fit the memory budget;
    kept in memory (no output path, or a PyTorch file) it needs all of them."""
    import zoocodec
    import zoocodec.budget
    from zoocodec.errors import ContainerError

    g = np.random.default_rng(0)
    tensors = {f"l{i}.weight": torch.from_numpy(g.normal(0, 0.02, (256, 256)).astype(np.float32)) for i in range(8)}
    zoocodec.compress(tensors, tmp_path / "m.zc")
    one = 256 * 256 * zoocodec.budget.DECODE_BYTES_PER_WEIGHT
    with zoocodec.budget.limit(3 * one // 2):  # one tensor fits, all eight do not
        zoocodec.decompress(tmp_path / "m.zc", tmp_path / "out.safetensors")
        with pytest.raises(ContainerError, match="memory"):
            zoocodec.decompress(tmp_path / "m.zc", tmp_path / "out.pt")
        with pytest.raises(ContainerError, match="memory"):
            zoocodec.decompress(tmp_path / "m.zc")
    back = zoocodec.decompress(tmp_path / "m.zc")
    assert set(back) == set(tensors)


@LINUX
def test_decompress_does_not_hold_the_container(tmp_path):
    """A full decode checks every byte (chunk CRCs, padding, attached files): the pages are
    released as they are read, so a model of many tensors decompresses in memory for a few
    tensors, one in flight per decoding thread (it held the whole .zc before: a 7B model's 6 GB file)."""
    g = np.random.default_rng(0)
    save_file({f"l{i}.weight": torch.from_numpy(g.normal(0, 0.02, (256, 1024)).astype(np.float32)) for i in range(40)},
              str(tmp_path / "m.safetensors"))
    child = r'''
import sys
import zoocodec.container, zoocodec.methods.arrays
from zoocodec.pipeline import core
zoocodec.container.HASH_CHUNK, zoocodec.methods.arrays.BLOCK_BYTES = 256 << 10, 256 << 10  # scaled to 1 MB tensors
core.compress(sys.argv[1], sys.argv[2])
# one decompress first: what a first one adds to the heap (torch, the native pool's threads and arenas) is not
# the decode's memory; the measured one shows what decoding holds (a compress that imports no torch leaves
# too little heap behind to stand in for that warm-up)
core.decompress(sys.argv[2], sys.argv[3] + ".first")
def kib(k):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(k))
open("/proc/self/clear_refs", "w").write("5")
base = kib("VmRSS:")
core.decompress(sys.argv[2], sys.argv[3])
print((kib("VmHWM:") - base) * 1024)
'''
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", child, str(tmp_path / "m.safetensors"), str(tmp_path / "m.zc"),
                          str(tmp_path / "out.safetensors")], capture_output=True, text=True, env=env, check=True,
                         cwd=ROOT)
    zc = (tmp_path / "m.zc").stat().st_size
    peak = int(out.stdout.splitlines()[-1])
    # 2.4-2.6 MB measured with 1 MB tensors decoded two at a time after a first decompress (2026-12-07; 3.0-5.2
    # without it, format 3, 2026-12-04; 1.5-3.8 MB one at a time before); holding the whole file was >= 9.6 MB
    assert peak < zc * 2 / 3, (peak, zc)
