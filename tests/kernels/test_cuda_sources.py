"""Every CUDA source beside its Python wrapper compiles for Hopper with nvcc (no GPU needed), with the
flags its wrapper gives NVRTC and as the wrapper hands it over (backend.cuda_source: local headers
inlined, compiled away from them): a new kernel file is covered with no edit here."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import zoocodec.kernels
from zoocodec.kernels.backend import cuda_source

SOURCES = sorted(Path(zoocodec.kernels.__file__).parent.glob("*.cu"))
FLAGS = {"rdoq.cu": ["--fmad=false"]}  # kernels/rdoq.py: exact float64 order, no FMA


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA compiler here")
@pytest.mark.parametrize("src", SOURCES, ids=[s.name for s in SOURCES])
def test_kernel_compiles_for_hopper(src, tmp_path):
    alone = tmp_path / src.name
    alone.write_text(cuda_source(src.name))
    r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-std=c++17", *FLAGS.get(src.name, []),
                        "-o", str(tmp_path / "k.cubin"), str(alone)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
