"""Shared fixtures: small real-looking models in every input format, and the zoo models."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

from zoocodec.pipeline import zoo

# Property tests draw the same examples on every run, so CI cannot turn red by luck;
# HYPOTHESIS_PROFILE=explore draws fresh ones (run it when hunting bugs).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
