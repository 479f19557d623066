"""Sequential data-aware rounding in one forward pass, on effnet-lite0 and real calibration photos."""
import numpy as np
import pytest
import torch

from conftest import zoo_path
from zoocodec.eval import data
from zoocodec.eval.models import build
from zoocodec.eval.tasks import _logits
from zoocodec.methods import parse_spec
from zoocodec.tuning.auto import reconstruct
from zoocodec.tuning.calibrate import DataAware, collect
from zoocodec.tuning.sequential import collect_in_order


@pytest.fixture(scope="module")
def effnet():
    from zoocodec.eval.evaluate import load_weights

    zoo_path("effnet-lite0")
    try:
        calib = data.photo_calibration()[:24]
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    w = load_weights("effnet-lite0")
    net = build("effnet-lite0", w)
    names = {k: k for k in net.state_dict() if k in w}
    convs = [k for k, v in w.items() if v.dim() >= 2]
    plan = {k: parse_spec(f"uniform:step={0.3 * float(w[k].std())}") for k in convs}
    return w, net, names, plan, calib


@pytest.mark.slow  # (26 s: the fast tier keeps the dampened-H case on the same model)
def test_each_layer_is_measured_on_the_quantized_layers_before_it_and_the_rounding_is_reproducible(effnet):
    w, net, names, plan, calib = effnet
    original = collect(net, lambda n: _logits(lambda: calib, 8)(n, None), names)
    seen = []

    def whole(n):
        seen.append(_logits(lambda: calib, len(calib))(n, None))

    inputs = collect_in_order(net, whole, names, w, plan, original)
    assert set(inputs) == set(original)
    stem, later = "_conv_stem.weight", "_blocks.6._project_conv.weight"
    # nothing is quantized before the stem: its inputs are the original's; later ones drifted
    assert np.allclose(inputs[stem].h, original[stem].h, rtol=1e-5, atol=1e-6)
    assert np.abs(inputs[stem].drift).max() < 1e-5
    assert np.abs(inputs[later].drift).max() > 1e-3
    assert inputs[later].bias == original[later].bias
    # the net holds the original weights again
    assert all(torch.equal(net.state_dict()[own].float(), w[name].float()) for own, name in names.items())
    # the rounding chosen inside the forward is the one DataAware gives from the inputs measured there
    targets = DataAware(inputs).targets(w, plan)
    assert "_bn0.running_mean" in targets
    again = _logits(lambda: calib, len(calib))(build("effnet-lite0", reconstruct({**w, **targets}, plan)), None)
    assert torch.allclose(again, seen[0], atol=1e-4)


def test_a_layer_seen_on_fewer_inputs_than_its_size_is_rounded_with_a_dampened_h(effnet, monkeypatch):
    """The classifier (1,280 inputs, 24 crops): error feedback with H dampened by its mean diagonal lowers the
    output error on other crops, and its bias absorbs the mean error; without FEW_DAMP it keeps nearest rounding."""
    from zoocodec.tuning import calibrate
    from zoocodec.tuning.calibrate import output_error

    w, net, names, plan, calib = effnet
    fc = {"_fc.weight": "_fc.weight", "_fc.bias": "_fc.bias"}
    seen = collect(net, lambda n: _logits(lambda: calib, 8)(n, None), fc)["_fc.weight"]
    other = collect(net, lambda n: _logits(lambda: data.photo_calibration()[24:64], 8)(n, None), fc)["_fc.weight"]
    assert seen.count < seen.h.shape[-1]
    targets = DataAware({"_fc.weight": seen}).targets(w, plan)
    assert set(targets) == {"_fc.weight", "_fc.bias"}
    wf = w["_fc.weight"].double().numpy()
    nearest = reconstruct(w, plan)["_fc.weight"].double().numpy()
    assert output_error(wf, targets["_fc.weight"].double().numpy(), other) < 0.95 * output_error(wf, nearest, other)
    monkeypatch.setattr(calibrate, "FEW_DAMP", None)
    assert DataAware({"_fc.weight": seen}).targets(w, plan) == {}
