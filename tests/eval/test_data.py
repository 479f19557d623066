"""effnet-lite0's calibration photos (zoocodec.eval.data): never the judged ones, the same crops every run."""
import hashlib

import numpy as np
import pytest
import torch

from zoocodec.eval import data


def _files() -> tuple[list, list]:
    try:
        return data.calibration_photo_files(), data.photo_files()
    except data.DatasetMissing as e:
        pytest.skip(str(e))


def _thumbnail(path) -> np.ndarray:
    """32 x 32 grey, zero mean, unit norm: what a rescaled, recompressed or recoloured copy keeps."""
    from PIL import Image

    with Image.open(path) as img:
        x = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64).ravel()
    x -= x.mean()
    return x / (np.linalg.norm(x) + 1e-9)


def test_no_calibration_photo_is_a_judged_one():
    """Disjoint by name, by bytes and by content: a judged photo resized or re-encoded would correlate near 1
    (the closest pair, two landscapes of sky over ground, is at 0.83)."""
    calibration, judged = _files()
    assert len(calibration) == len(set(calibration)) >= 30
    assert not {p.name.lower() for p in calibration} & {p.name.lower() for p in judged}

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert not {digest(p) for p in calibration} & {digest(p) for p in judged}
    ours, theirs = np.stack([_thumbnail(p) for p in calibration]), np.stack([_thumbnail(p) for p in judged])
    assert float((ours @ theirs.T).max()) < 0.95


@pytest.mark.slow
def test_the_crops_repeat_and_cover_every_photo():
    """Seeded: two calls give the same floats; the crops take the photos in turn, so each photo gives some."""
    calibration, _ = _files()
    x = data.photo_calibration(64)
    assert x.shape == (data.CALIBRATION_CROPS, 3, 64, 64) and torch.isfinite(x).all()
    torch.testing.assert_close(data.photo_calibration(64), x, rtol=0, atol=0)
    assert data.CALIBRATION_CROPS >= len(calibration)


def test_a_large_photo_is_scaled_to_the_calibration_side(tmp_path):
    """The shorter side of a photo larger than CALIBRATION_SIDE becomes CALIBRATION_SIDE; a smaller one is kept."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for size, want in (((1600, 1200), (3, data.CALIBRATION_SIDE, 683)), ((300, 200), (3, 200, 300))):
        path = tmp_path / f"{size[0]}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        x = data._calibration_photo(path)
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == want


def test_absent_photos_name_their_install(monkeypatch, tmp_path):
    """One line naming the command: apt-get for the wallpapers, pip for a Python package's samples."""
    monkeypatch.setattr(data, "CALIBRATION_PHOTOS", ((str(tmp_path), "", ("a.jpg",), data.APT_CALIBRATION),))
    with pytest.raises(data.DatasetMissing, match="apt-get install lomiri-wallpapers-16.04 mate-backgrounds") as e:
        data.calibration_photo_files()
    assert "\n" not in str(e.value)
    monkeypatch.setattr(data, "CALIBRATION_PHOTOS", (("no_such_package_zc", "data", ("a.png",), data.PIP_ZOO),))
    with pytest.raises(data.DatasetMissing, match="no_such_package_zc.*pip install") as e:
        data.calibration_photo_files()
    assert "\n" not in str(e.value)
