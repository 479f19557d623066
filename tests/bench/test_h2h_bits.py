"""bench/bench_h2h_bits.py: the layer kind each EfficientNet-lite0 tensor is counted under."""
from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(("name", "shape", "kind"), [
    ("_conv_stem.weight", [32, 3, 3, 3], "stem"),
    ("_blocks.3._depthwise_conv.weight", [144, 1, 3, 3], "depthwise"),
    ("_blocks.3._expand_conv.weight", [144, 24, 1, 1], "pointwise expand"),
    ("_blocks.3._project_conv.weight", [24, 144, 1, 1], "pointwise project"),
    ("_conv_head.weight", [1280, 320, 1, 1], "head 1x1"),
    ("_fc.weight", [1000, 1280], "classifier"),
    ("_bn0.running_var", [32], "1-D"),
])
def test_layer_kind(name, shape, kind):
    assert importlib.import_module("bench_h2h_bits").kind(name, shape) == kind
