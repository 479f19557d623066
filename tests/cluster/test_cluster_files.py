"""The cluster set-up files: ray_config.yaml against Ray's launcher schema, the Dockerfile's
essentials, and a real `docker build` where an engine and the base image are available."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "ray_config.yaml").read_text())


def test_ray_config_matches_the_launcher_schema(config):
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")  # locate Ray's schema without importing Ray
    if spec is None:
        pytest.skip("ray is not installed (pip install 'zoocodec[ray]')")
    schema = json.loads(
        (Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json").read_text()
    )
    jsonschema.validate(config, schema)


def test_ray_config_names_the_image_gpu_and_nvenc_node_types(config):
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    gpu = {name: n["resources"] for name, n in nodes.items() if n["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker node type"
    assert any(r.get("nvenc", 0) >= 1 for r in gpu.values()), "no node type offers the nvenc resource"
    assert any("nvenc" not in r for r in gpu.values()), "a GPU type without NVENC (Hopper) is expected too"
    assert config["docker"]["image"].startswith("zoocodec-gpu")
    assert "-e RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_dockerfile_has_cuda_runtime_video_caps_and_the_extras():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:[\w.-]*runtime", text, re.M)
    caps = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", text).group(1).split(",")
    assert {"compute", "video"} <= set(caps)
    assert re.search(r'pip install "\.\[[^\]]*gpu[^\]]*video[^\]]*ray', text)
    assert "torch==2.13.0" in text  # the project's pin, never a newer torch


@pytest.mark.slow
def test_docker_build(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    if subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("docker is installed but no docker engine is running")
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    if subprocess.run([docker, "image", "inspect", base], capture_output=True).returncode != 0:
        pytest.skip(f"base image {base} is not available locally (no registry access here)")
    subprocess.run([docker, "build", "-t", "zoocodec-gpu:test", str(ROOT)], check=True, timeout=3600)


def test_nvenc_resource_follows_the_encoder_probe():
    from zoocodec import cluster
    from zoocodec.codecs import nvdec

    assert cluster.detect_resources() == ({"nvenc": 1.0} if nvdec.nvenc_available() else {})
