"""Sequential data-aware rounding of causal LMs (GPTQ's order): each layer's inputs come from the quantized
layers before it, the tied head is rounded against the final norm's outputs, and the KL falls below nearest's."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoocodec.eval import lm
from zoocodec.eval.calibration import _names
from zoocodec.eval.evaluate import load_weights
from zoocodec.tuning.allocate import allocate
from zoocodec.tuning.auto import reconstruct
from zoocodec.tuning.calibrate import DataAware, collect, collect_on
from zoocodec.tuning.gptq import collect_sequential

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from test_lm import llama_folder, texts  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    llama_folder(folder)
    w = load_weights(str(folder))
    net, run, _ = lm.calibration(folder, texts(30, 1), w, None)
    plan = {k: v for k, v in allocate(w, base_step=0.02, method="uniform").items() if w[k].dim() == 2}
    return folder, w, net, run, _names(net, w), plan


def test_each_layer_is_measured_on_the_quantized_layers_before_it(setup):
    _, w, net, run, names, plan = setup
    seq = collect_sequential(net, run, names, w, plan)
    plain = collect(net, run, names)  # the net holds the original weights again
    for k in (k for k in seq if ".layers.0." in k):
        np.testing.assert_allclose(seq[k].h, plain[k].h, rtol=1e-6)
    assert "model.embed_tokens.weight" in seq and "model.embed_tokens.weight" not in plain  # the tied head
    # layer 1's inputs: those of the model whose layer 0 holds its rounding against layer 0's own inputs
    first = {k: v for k, v in seq.items() if ".layers.0." in k}
    decoded = reconstruct({**w, **DataAware(first).targets(w, plan)}, {k: plan[k] for k in plan if ".layers.0." in k})
    again = collect_on(net, run, names, decoded)
    for k in (k for k in seq if ".layers.1." in k):
        np.testing.assert_allclose(seq[k].h, again[k].h, rtol=1e-4, atol=1e-7)
    net.load_state_dict({own: w[name] for own, name in names.items()}, strict=False)


def test_sequential_rounding_is_on_the_grid_and_beats_nearest(setup):
    folder, w, net, run, names, plan = setup
    targets = DataAware(collect_sequential(net, run, names, w, plan)).targets(w, plan)
    assert "model.embed_tokens.weight" in targets
    for k, t in targets.items():
        k_ = t.double() / plan[k].step
        assert torch.equal(k_, k_.round())
    scorer = lm.Scorer(folder, texts(10, 2))
    scorer.reference(w, cache=False)
    kl = {label: float(scorer.outputs(reconstruct({**w, **t}, plan))[:, 1].mean())
          for label, t in (("nearest", {}), ("sequential", targets))}
    assert kl["sequential"] < 0.95 * kl["nearest"]


@pytest.mark.slow
def test_automatic_mode_rounds_a_causal_lm_layer_by_layer(setup, tmp_path):
    """About 100 CPU s: the slow tier."""
    import zoocodec
    from zoocodec.tuning.auto import auto_compress

    folder = setup[0]
    (tmp_path / "in.txt").write_text("\n".join(texts(20)))
    auto_compress(str(folder), tmp_path / "m.zc", 0.05, inputs=tmp_path / "in.txt", sequential=True)
    auto = zoocodec.inspect(tmp_path / "m.zc")["meta"]["auto"]
    assert "sequential, layer by layer" in auto["rounding"]["layer_inputs"]
    assert "model.embed_tokens.weight" in auto["rounding"]["rounded"]  # the tied head, rounded as the head
    assert auto["verified"]["loss_high"] <= 0.05


def test_only_llama_shaped_causal_lms_go_layer_by_layer(setup):
    from zoocodec.tuning.gptq import layers_of

    net = setup[2]
    assert layers_of(net) is not None and layers_of(net.base_model) is None  # no output head: not a causal LM
    assert layers_of(torch.nn.Linear(2, 2)) is None
