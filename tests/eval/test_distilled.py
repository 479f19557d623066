"""Calibration images distilled from a CNN's BatchNorm statistics (zoocodec.eval.distilled)."""
import pytest
import torch

from support import bn_net
from zoocodec.eval import distilled as D


def test_the_images_match_the_statistics_and_repeat():
    """Optimising the pixels lowers ZeroQ's statistic loss; the same seed gives the same images, another seed others."""
    net = bn_net()
    x, info = D.images(net, 6, size=16, steps=(100, 30))
    assert x.shape == (6, 3, 16, 16) and torch.isfinite(x).all()
    assert info["last_loss"] < 0.7 * info["first_loss"]
    assert float(D._bn_loss(net, x)) < 0.7 * info["first_loss"]
    again, _ = D.images(net, 6, size=16, steps=(100, 30))
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other, _ = D.images(net, 6, size=16, seed=1, steps=(100, 30))
    assert not torch.equal(other, x)


def test_the_making_reports_its_steps():
    """progress(done, total): 0 before the first Adam step, then each step of every batch, up to the total."""
    net, events = bn_net(), []
    D.images(net, D.BATCH + 2, size=16, steps=(3, 2), progress=lambda done, total: events.append((done, total)))
    total = 2 * (3 + 2)  # two batches
    assert events == [(k, total) for k in range(total + 1)]


def test_the_images_are_stored_once(tmp_path, monkeypatch):
    """A second call for the same weights reads the zoo cache (the same floats); other weights make their own."""
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (4, 2))
    net = bn_net()
    weights = dict(net.state_dict())
    made, read = [], []
    first = D.cached(net, weights, 3, size=16, progress=lambda *step: made.append(step))
    assert len(list((tmp_path / "distilled").iterdir())) == 1 and made[-1] == (6, 6)
    monkeypatch.setattr(D, "images", lambda *_a, **_k: pytest.fail("distilled again"))
    torch.testing.assert_close(D.cached(net, weights, 3, size=16, progress=lambda *step: read.append(step)), first,
                               rtol=0, atol=0)
    assert read == []  # read from the cache: no steps to count
    monkeypatch.undo()
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (4, 2))
    D.cached(net, weights | {"0.weight": weights["0.weight"] + 1}, 3, size=16)
    assert len(list((tmp_path / "distilled").iterdir())) == 2


@pytest.mark.slow
def test_the_photo_task_calibrates_on_crops_and_distilled_images(tmp_path, monkeypatch):
    """effnet-lite0's calibration: the 256 photo crops, then its distilled images (a few steps here),
    made first by the task's prepare(), which counts their steps."""
    from conftest import zoo_path
    from zoocodec.eval import data
    from zoocodec.eval.tasks import DISTILLED, TASKS

    zoo_path("effnet-lite0")
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "STEPS", (2, 1))
    steps: list[tuple[int, int]] = []
    try:
        TASKS["photos"].prepare(lambda *step: steps.append(step))
        x = TASKS["photos"].calibration()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    assert x.shape == (data.CALIBRATION_CROPS + DISTILLED, 3, 224, 224)
    torch.testing.assert_close(x[:data.CALIBRATION_CROPS], data.photo_calibration(), rtol=0, atol=0)
    torch.testing.assert_close(x[data.CALIBRATION_CROPS:], D.for_zoo("effnet-lite0", DISTILLED), rtol=0, atol=0)
    assert len(list((tmp_path / "distilled").iterdir())) == 1 and steps == [(k, 3) for k in range(4)]
    assert "distilled" in TASKS["photos"].calibration_about
