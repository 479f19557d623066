"""Shared fixtures: small real-looking models in every input format, and the zoo models."""
from __future__ import annotations

import importlib.util
import os
import secrets

import numpy as np
import pytest
import torch
from hypothesis import settings

from zoocodec import cluster
from zoocodec.pipeline import zoo

# Ray reads this once, at import: every Ray the tests start stays on loopback, whichever module imports it first.
os.environ.setdefault(cluster.LOOPBACK_ENV, "0")
# Ray also reads its auth mode at import (pytest.importorskip("ray") may come first). Each test run
# authenticates its Rays with a token of its own, so runs side by side (or a user's Ray)
# never read or overwrite one another's ~/.ray/auth_token.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

# Property tests draw the same examples on every run, so CI cannot turn red by luck;
# HYPOTHESIS_PROFILE=explore draws fresh ones (run it when hunting bugs).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--cuda-emulator", action="store_true",
                     help="CuPy's stand-in from tests/cuda_emu: the kernels' CUDA source runs on the CPU")


def pytest_configure(config):
    if config.getoption("--cuda-emulator"):
        from tests import cuda_emu

        if why := cuda_emu.available():
            raise pytest.UsageError(why)
        cuda_emu.install()


def laplace_model(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small model whose weights look like trained ones (Laplacian, per-row scales)."""
    g = np.random.default_rng(seed)
    return {
        "conv.weight": torch.from_numpy((g.laplace(0, 0.05, (16, 8, 3, 3))).astype(np.float32)),
        "conv.bias": torch.from_numpy(g.normal(0, 0.01, 16).astype(np.float32)),
        "fc.weight": torch.from_numpy((g.laplace(0, 0.02, (64, 144)) * g.uniform(0.5, 2, (64, 1))).astype(np.float32)),
        "fc.bias": torch.from_numpy(g.normal(0, 0.01, 64).astype(np.float32)),
        "head.weight": torch.from_numpy(g.normal(0, 0.1, (10, 64)).astype(np.float16)),
        "emb.weight": torch.from_numpy(g.normal(0, 0.05, (100, 48)).astype(np.float32)).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "mask": torch.from_numpy(g.random(20) > 0.5),
    }


@pytest.fixture
def model() -> dict[str, torch.Tensor]:
    return laplace_model()


def zoo_path(name: str):
    try:
        return zoo.resolve(name)
    except Exception as e:  # not installed here: say how to get it
        pytest.skip(f"zoo model {name} not installed ({e})")


@pytest.fixture(scope="session")
def minilm_path():
    return zoo_path("minilm")


@pytest.fixture(scope="session")
def mnist_path():
    return zoo_path("mnist-cnn")


@pytest.fixture(scope="module")
def ray_api():
    """The `ray` module, imported with the settings zoocodec.cluster uses (loopback, token auth), and no
    Ray running yet in this process; skips where Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'zoocodec[ray]')")
    import ray

    if ray.is_initialized():
        pytest.skip("another Ray is running in this process")
    return ray
