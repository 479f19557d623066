"""bench/bench_gpu.py's device branches on the CUDA emulator (tests/cuda_emu): the script the one GPU run
of a session depends on (scripts/gpu_check.sh), its cases that need no torch CUDA, run as on a GPU at a
tiny scale. Its dry run takes the CPU branches only; this catches a device branch broken by a change
before device time is spent on it."""
from __future__ import annotations

import json

import pytest

from tests import cuda_emu


@pytest.mark.slow
@pytest.mark.skipif(cuda_emu.available() is not None, reason=str(cuda_emu.available()))
def test_the_device_cases_run_and_give_the_cpu_bytes(tmp_path):
    import bench_gpu

    with cuda_emu.emulated():
        bench_gpu.main(["--scale", "0.001", "--only", "rdoq_kernels,rans_encode,compress,profile",
                        "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert result["device"].startswith("cuda:0")
    assert [r["table"] for r in result["rdoq_kernels"]] == ["ctx", "ctx", "cabac-4-state"] * 3
    assert all(r["same_levels"] for r in result["rdoq_kernels"])
    assert [r["bits"] for r in result["rans_encode"]] == [8, 12]
    assert all(r["same_bytes"] for r in result["rans_encode"])
    assert len(result["compress"]) == 8
    assert [r.get("error") for r in result["compress"]] == [None] * 8
    assert all(r["same_bytes"] and r["gpu_device"] == result["device"] for r in result["compress"])
    assert result["profile"]["top_own_time"] and result["kmeans"] is None and result["load"] == []


def test_only_names_its_cases(capsys):
    import bench_gpu

    with pytest.raises(SystemExit):
        bench_gpu.main(["--only", "compress,lod"])
    assert "unknown case lod" in capsys.readouterr().err
