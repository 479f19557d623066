"""GPU placement with Ray on a CPU machine: a local Ray node declared with a placeholder GPU.

Ray schedules an item with `resources: {GPU: 1}` on the node that has one and sets
CUDA_VISIBLE_DEVICES for it. With no real GPU behind it the item must not pretend: device
`gpu` fails with the one-line "no CUDA GPU" error (naming the CUDA_VISIBLE_DEVICES Ray set),
device `auto` (the default with a GPU resource) runs on the CPU and records `cpu`.
"""
from __future__ import annotations

import pytest
from safetensors.torch import save_file

from zoocodec import device as D
from zoocodec.jobs import results as res, run as runner, spec as sweep_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def placeholder_gpu_ray(ray_api):
    if D.gpu_count():
        pytest.skip("this machine has a real GPU: the placeholder case is for CPU machines")
    ray_api.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray_api
    finally:
        ray_api.shutdown()


def test_gpu_items_are_placed_on_the_gpu_node_and_never_fake_a_gpu(placeholder_gpu_ray, tmp_path, model):
    ray = placeholder_gpu_ray
    assert ray.cluster_resources().get("GPU") == 1
    save_file(model, tmp_path / "m.safetensors")
    (tmp_path / "s.yaml").write_text(
        "name: g\nmodels: [m.safetensors]\nmin_size: 100\nmax_retries: 0\nmethods:\n"
        "  - {method: uniform, params: {bits: 6}, resources: {GPU: 1}, device: gpu}\n"
        "  - {method: uniform, params: {bits: 5}, resources: {GPU: 1}}\n"
        "  - uniform:bits=4\n")
    sweep = sweep_spec.load(tmp_path / "s.yaml", tmp_path / "out")
    outcome = runner.run(sweep)
    assert (outcome.ok, outcome.failed) == (2, 1)
    got = {r["method"].split(",")[0]: r for r in res.Results(sweep.out).runs().to_pylist()}
    gpu, auto, cpu = got["uniform:bits=6"], got["uniform:bits=5"], got["uniform:bits=4"]
    assert gpu["status"] == "failed" and gpu["device"] == "asked: gpu"
    assert "no CUDA GPU" in gpu["error"] and "CUDA_VISIBLE_DEVICES=0" in gpu["error"] and "\n" not in gpu["error"]
    assert auto["status"] == "ok" and auto["device"] == "cpu"
    assert cpu["status"] == "ok" and cpu["device"] == "cpu"
