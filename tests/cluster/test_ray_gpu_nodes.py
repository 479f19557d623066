"""GPU placement across nodes: a local Ray cluster of a CPU-only head and a node declaring two
placeholder GPUs (ray.cluster_utils.Cluster: two raylets on this machine). Items with
`resources: {GPU: 1}` run on the GPU node only, with CUDA_VISIBLE_DEVICES set to one of its
GPUs; with no real GPU behind it, `device: gpu` fails in one line naming it and `auto` records
`cpu` (test_ray_gpu.py has the one-node case in the fast tier)."""
from __future__ import annotations

import re

import pytest
from safetensors.torch import save_file

from zoocodec import device as D
from zoocodec.jobs import results as res, run as runner, spec as sweep_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def two_nodes(ray_api):
    if D.gpu_count():
        pytest.skip("this machine has a real GPU: the placeholder case is for CPU machines")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=2)
    ray_api.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray_api, gpu_node.node_id
    finally:
        ray_api.shutdown()
        cluster.shutdown()


def test_gpu_items_run_on_the_gpu_node_with_one_of_its_gpus(two_nodes, tmp_path, model):
    ray, gpu_node = two_nodes
    assert ray.cluster_resources().get("GPU") == 2 and len(ray.nodes()) == 2
    save_file(model, tmp_path / "m.safetensors")
    (tmp_path / "s.yaml").write_text(
        "name: g\nmodels: [m.safetensors]\nmin_size: 100\nmax_retries: 0\nmethods:\n"
        "  - {method: uniform, params: {bits: [4, 5]}, resources: {GPU: 1}, device: gpu}\n"
        "  - {method: uniform, params: {bits: [6, 7, 8]}, resources: {GPU: 1}}\n")
    sweep = sweep_spec.load(tmp_path / "s.yaml", tmp_path / "out")
    outcome = runner.run(sweep)
    assert (outcome.ok, outcome.failed) == (3, 2)
    rows = res.Results(sweep.out).runs().to_pylist()
    assert all(r["node"].endswith("/" + gpu_node[:12]) for r in rows), [r["node"] for r in rows]
    for r in rows:
        if r["status"] == "failed":  # asked for a GPU: Ray gave it one of the node's two, which is not real
            assert r["device"] == "asked: gpu" and "no CUDA GPU" in r["error"] and "\n" not in r["error"]
            assert re.search(r"CUDA_VISIBLE_DEVICES=[01]\b", r["error"]), r["error"]
        else:
            assert r["device"] == "cpu"
