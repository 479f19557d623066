"""bench/bench_outside_zoo.py's models load as a user's module would, and parallel split runs merge."""
from __future__ import annotations

import importlib

import pytest
import torch


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_the_committed_weights_fit_the_factory_strictly(name):
    nets, bench = importlib.import_module("bench_outside_zoo_nets"), importlib.import_module("bench_outside_zoo")
    from zoocodec.eval.anymodel import factory

    module = factory(bench.MODULES[name])()  # how --module finds it
    subject = bench.subject_of(name)
    module.load_state_dict(subject.tensors, strict=True)
    assert isinstance(module, (nets.ResNet, nets.ViT))
    with torch.no_grad():
        assert module.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_parallel_split_runs_merge_by_seed():
    bench = importlib.import_module("bench_outside_zoo")

    def run(seeds, holds):
        return {"model": "vit", "target_pct": 1.0, "splits": [{"seed": s, "holds": h} for s, h in zip(seeds, holds,
                strict=True)], "holds": sum(holds), "count": len(seeds)}

    both = bench.merged(run([0, 1], [True, False]), run([3, 2], [True, True]))
    assert [e["seed"] for e in both["splits"]] == [0, 1, 2, 3]
    assert (both["holds"], both["count"]) == (3, 4)
    other = {**run([0], [True]), "target_pct": 0.5}
    assert bench.merged(other, run([5], [False]))["count"] == 1  # another budget is not merged in
