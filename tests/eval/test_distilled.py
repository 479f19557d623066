"""Calibration images distilled from a CNN's BatchNorm statistics (zoocodec.eval.distilled)."""
import pytest
import torch

from zoocodec.eval import distilled as D


def _net() -> torch.nn.Module:
    """Two conv + BN layers whose running statistics are far from what noise gives."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8))
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
    return net.eval()


def test_the_images_match_the_statistics_and_repeat():
    """Optimising the pixels lowers ZeroQ's statistic loss; the same seed gives the same images, another seed others."""
    net = _net()
    x, info = D.images(net, 6, size=16, steps=(100, 30))
    assert x.shape == (6, 3, 16, 16) and torch.isfinite(x).all()
    assert info["last_loss"] < 0.7 * info["first_loss"]
    assert float(D._bn_loss(net, x)) < 0.7 * info["first_loss"]
    again, _ = D.images(net, 6, size=16, steps=(100, 30))
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other, _ = D.images(net, 6, size=16, seed=1, steps=(100, 30))
    assert not torch.equal(other, x)


def test_the_images_are_stored_once(tmp_path, monkeypatch):
    """A second call for the same weights reads the zoo cache (the same floats); other weights make their own."""
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (4, 2))
    net = _net()
    weights = dict(net.state_dict())
    first = D.cached(net, weights, 3, size=16)
    assert len(list((tmp_path / "distilled").iterdir())) == 1
    monkeypatch.setattr(D, "images", lambda *_a, **_k: pytest.fail("distilled again"))
    torch.testing.assert_close(D.cached(net, weights, 3, size=16), first, rtol=0, atol=0)
    monkeypatch.undo()
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (4, 2))
    D.cached(net, weights | {"0.weight": weights["0.weight"] + 1}, 3, size=16)
    assert len(list((tmp_path / "distilled").iterdir())) == 2


@pytest.mark.slow
def test_the_photo_task_calibrates_on_crops_and_distilled_images(tmp_path, monkeypatch):
    """effnet-lite0's calibration: the 256 crops of three photos, then its distilled images (a few steps here)."""
    from conftest import zoo_path
    from zoocodec.eval import data
    from zoocodec.eval.tasks import DISTILLED, TASKS

    zoo_path("effnet-lite0")
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (2, 1))
    try:
        x = TASKS["photos"].calibration()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    assert x.shape == (data.CALIBRATION_CROPS + DISTILLED, 3, 224, 224)
    torch.testing.assert_close(x[:data.CALIBRATION_CROPS], data.photo_calibration(), rtol=0, atol=0)
    torch.testing.assert_close(x[data.CALIBRATION_CROPS:], D.for_zoo("effnet-lite0", DISTILLED), rtol=0, atol=0)
    assert len(list((tmp_path / "distilled").iterdir())) == 1
    assert "distilled" in TASKS["photos"].calibration_about
