"""On a CUDA GPU: compress --device gpu writes the same bytes as the CPU, records the GPU,
and evaluate runs the models there. With `--cuda-emulator` (tests/cuda_emu) the kernels run on the CPU
and the tests that need torch's CUDA skip. Skips cleanly without CuPy or a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from zoocodec import device as D
from zoocodec.eval import evaluate
from zoocodec.jobs import run as runner, spec as sweep_spec
from zoocodec.pipeline.core import compress

pytestmark = pytest.mark.gpu
if D.gpu_count() == 0:
    pytest.skip(f"no CUDA GPU ({D.why_no_gpu()})", allow_module_level=True)
torch_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA (the CUDA emulator)")

SPECS = ["uniform:bits=8", "uniform:bits=4,per_tensor=true", "uniform:step=0.01", "kmeans:k=16",
         "kmeans:k=4,per=channel,codebook=float16", "kmeans:k=8,per=block,block=100", "rdoq:bits=6",
         "dq:step=0.01", "dq:bits=6,coder=ans", "lnq"]


@pytest.mark.parametrize("spec", SPECS)
def test_gpu_bytes_equal_cpu_bytes(spec, tmp_path, model):
    cpu = compress(model, tmp_path / "cpu.zc", spec, min_size=100)
    gpu = compress(model, tmp_path / "gpu.zc", spec, min_size=100, device="gpu")
    assert (tmp_path / "cpu.zc").read_bytes() == (tmp_path / "gpu.zc").read_bytes()
    assert cpu.device == "cpu" and gpu.device.startswith("cuda:0 ")
    lossy = [t for t in gpu.tensors if t.method.split(":")[0] == spec.split(":")[0]]
    gpu_path = spec.split(":")[0] in ("uniform", "kmeans", "rdoq", "dq")
    assert lossy and all(t.device == (gpu.device if gpu_path else "cpu") for t in lossy)


@torch_cuda
def test_evaluate_on_the_gpu_matches_the_cpu(tmp_path, mnist_path):
    compress(mnist_path, tmp_path / "m.zc", "uniform:bits=4", device="gpu")
    cpu = {(m.task, m.metric): m for m in evaluate(tmp_path / "m.zc", device="cpu")}
    gpu = {(m.task, m.metric): m for m in evaluate(tmp_path / "m.zc", device="gpu")}
    assert cpu.keys() == gpu.keys()
    for k in cpu:  # float reduction order differs on the GPU: a flipped prediction at most
        assert abs(cpu[k].value - gpu[k].value) <= 2e-3, (k, cpu[k].value, gpu[k].value)


@torch_cuda
def test_work_item_without_ray_runs_on_the_gpu(tmp_path, model):
    save_file(model, tmp_path / "m.safetensors")
    (tmp_path / "s.yaml").write_text("models: [m.safetensors]\nmin_size: 100\nmethods:\n"
                                     "  - {method: uniform, params: {bits: 6}, resources: {GPU: 1}}\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    assert item.device == "auto"
    row, tensors = runner.execute(item, "s")
    assert row["status"] == "ok", row["error"]
    assert row["device"].startswith("cuda:0 ") and tensors


def same_shapes_model() -> dict:
    """24 attention-like 384x384 matrices, 6 of 1536x384 (fp32 and bf16), one wide: batches of one shape."""
    g = np.random.default_rng(7)
    m = {f"l{i}.{p}.weight": torch.from_numpy(g.laplace(0, 0.03, (384, 384)).astype(np.float32))
         for i in range(6) for p in "qkvo"}
    m.update({f"l{i}.up.weight": torch.from_numpy(g.laplace(0, 0.03, (1536, 384)).astype(np.float32)).to(
        torch.bfloat16 if i % 2 else torch.float32) for i in range(6)})
    m["wide.weight"] = torch.from_numpy(g.laplace(0, 0.03, (64, 4000)).astype(np.float32))
    return m


@pytest.mark.parametrize("spec", ["uniform:bits=8", "uniform:bits=4,per_tensor=true", "uniform:step=0.004",
                                  "kmeans:k=16", "kmeans:k=4,per=channel,codebook=float16", "rdoq:bits=6"])
def test_batched_gpu_bytes_equal_cpu_one_at_a_time(spec, tmp_path):
    """pipeline/batch.py on the GPU (same-shape groups in one launch, two CUDA streams, pinned
    copies, coding threads) writes the CPU's one-tensor-at-a-time bytes."""
    m = same_shapes_model()
    compress(m, tmp_path / "cpu.zc", spec, batch=False)
    gpu = compress(m, tmp_path / "gpu.zc", spec, device="gpu")
    compress(m, tmp_path / "gpu1.zc", spec, device="gpu", batch=False)
    cpu_bytes = (tmp_path / "cpu.zc").read_bytes()
    assert (tmp_path / "gpu.zc").read_bytes() == cpu_bytes
    assert (tmp_path / "gpu1.zc").read_bytes() == cpu_bytes
    assert all(t.device == gpu.device for t in gpu.tensors if not t.method.startswith("lossless"))


def test_stack_rows_on_the_device():
    import cupy

    from zoocodec.kernels.backend import stack_rows

    parts = [np.arange(12, dtype=np.float32).reshape(3, 4), np.full((2, 4), 7, np.float32)]
    out = stack_rows(parts, cupy)
    assert isinstance(out, cupy.ndarray) and np.array_equal(out.get(), np.concatenate(parts))
