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


def test_sequential_measurement_rounds_the_layers_before_as_it_is_told(setup):
    """act_order / sweeps reach the rounding of the layers whose outputs feed the next: layer 1's inputs are
    those of layer 0 rounded by plain GPTQ when asked for it, and differ from the default's."""
    _, w, net, run, names, plan = setup
    plain = collect_sequential(net, run, names, w, plan, DataAware({}, act_order=False, sweeps=0))
    first = {k: v for k, v in plain.items() if ".layers.0." in k}
    rounded = DataAware(first, act_order=False, sweeps=0).targets(w, plan)
    decoded = reconstruct({**w, **rounded}, {k: plan[k] for k in plan if ".layers.0." in k})
    again = collect_on(net, run, names, decoded)
    net.load_state_dict({own: w[name] for own, name in names.items()}, strict=False)
    default = collect_sequential(net, run, names, w, plan)
    layer1 = [k for k in plain if ".layers.1." in k]
    for k in layer1:
        np.testing.assert_allclose(plain[k].h, again[k].h, rtol=1e-4, atol=1e-7)
    assert any(not np.allclose(plain[k].h, default[k].h, rtol=1e-6, atol=0) for k in layer1)


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


@pytest.mark.parametrize("bits,group,side",
                         [(3, 32, ""), (4, 64, ""), (2, 48, ""), (4, 32, ",side=5"), (3, 64, ",side=3")])
def test_grouped_rounding_lands_on_the_methods_own_grid_and_beats_it(bits, group, side):
    """GPTQ inside min-max groups with zero points: the method's quantizer, handed these values, returns them
    bit for bit (so the format is unchanged), and the output error on the inputs H came from falls."""
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.modelio import to_tensordata
    from zoocodec.tuning.calibrate import LayerInputs, factors, output_error
    from zoocodec.tuning.gptq import round_groups

    gen = np.random.default_rng(bits)
    x = gen.standard_normal((2000, 144)) @ gen.standard_normal((144, 144)) * 0.3  # correlated inputs
    h = x.T @ x / len(x)
    w = gen.standard_normal((40, 144)) * 0.05
    w[:, 7] = 0.0  # a constant column
    spec = parse_spec(f"uniform:bits={bits},group={group},zero=true{side}")  # side=M: pinned ends keep the codes
    ours = round_groups(w, spec, lambda: factors(h[None]))
    hat = np.asarray(spec.quantize(to_tensordata("w", torch.from_numpy(ours).float())).recon, np.float64)
    assert np.array_equal(hat, ours.astype(np.float32).astype(np.float64))
    nearest = np.asarray(spec.quantize(to_tensordata("w", torch.from_numpy(w).float())).recon, np.float64)
    li = LayerInputs(h[None], x.mean(0)[None], len(x))
    assert output_error(w, ours, li) < 0.7 * output_error(w, nearest, li)


def test_grouped_rounding_keeps_weights_already_on_the_grid():
    """Weights that lie on 4-bit 32-weight groups (SmolLM2's Q4_1 grid) come back unchanged."""
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.modelio import to_tensordata
    from zoocodec.tuning.calibrate import factors
    from zoocodec.tuning.gptq import round_groups

    gen = np.random.default_rng(0)
    spec = parse_spec("uniform:bits=4,group=32,zero=true")
    w = spec.quantize(to_tensordata("w", torch.from_numpy(gen.standard_normal((16, 96))).float())).recon
    x = gen.standard_normal((500, 96))
    ours = round_groups(w.astype(np.float64), spec, lambda: factors((x.T @ x / 500)[None]))
    assert np.array_equal(ours.astype(np.float32), w)
    assert round_groups(w.astype(np.float64), parse_spec("uniform:step=0.1"), lambda: factors(np.eye(96)[None])) is None


def test_sequential_rounding_rounds_group_candidates_too(setup):
    """Grouped plans are rounded layer by layer too, each tensor onto the grid its method finds again."""
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.modelio import to_tensordata

    _, w, net, run, names, plan = setup
    grouped = {k: parse_spec("uniform:bits=3,group=16,zero=true") for k in plan}
    targets = DataAware(collect_sequential(net, run, names, w, grouped)).targets(w, grouped)
    assert set(grouped) <= set(targets)
    for k in grouped:
        back = grouped[k].quantize(to_tensordata(k, targets[k])).recon
        assert np.array_equal(back, targets[k].numpy())
