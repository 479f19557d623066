"""On a CUDA GPU: compress --device gpu writes the same bytes as the CPU, records the GPU,
and evaluate runs the models there. Skips cleanly without CuPy or a GPU."""
from __future__ import annotations

import pytest
from safetensors.torch import save_file

from zoocodec import device as D
from zoocodec.eval import evaluate
from zoocodec.jobs import run as runner, spec as sweep_spec
from zoocodec.pipeline.core import compress

pytestmark = pytest.mark.gpu
if D.gpu_count() == 0:
    pytest.skip(f"no CUDA GPU ({D.why_no_gpu()})", allow_module_level=True)

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


def test_evaluate_on_the_gpu_matches_the_cpu(tmp_path, mnist_path):
    compress(mnist_path, tmp_path / "m.zc", "uniform:bits=4", device="gpu")
    cpu = {(m.task, m.metric): m for m in evaluate(tmp_path / "m.zc", device="cpu")}
    gpu = {(m.task, m.metric): m for m in evaluate(tmp_path / "m.zc", device="gpu")}
    assert cpu.keys() == gpu.keys()
    for k in cpu:  # float reduction order differs on the GPU: a flipped prediction at most
        assert abs(cpu[k].value - gpu[k].value) <= 2e-3, (k, cpu[k].value, gpu[k].value)


def test_work_item_without_ray_runs_on_the_gpu(tmp_path, model):
    save_file(model, tmp_path / "m.safetensors")
    (tmp_path / "s.yaml").write_text("models: [m.safetensors]\nmin_size: 100\nmethods:\n"
                                     "  - {method: uniform, params: {bits: 6}, resources: {GPU: 1}}\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    assert item.device == "auto"
    row, tensors = runner.execute(item, "s")
    assert row["status"] == "ok", row["error"]
    assert row["device"].startswith("cuda:0 ") and tensors
