"""The HTML report renders in headless Chromium (Debian `chromium`) to a non-blank page."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from zoocodec.jobs import report, results as res, run as runner, spec as sweep_spec

pytestmark = pytest.mark.slow


def test_report_renders_in_headless_chromium(tmp_path, mnist_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (apt-get install chromium)")
    (tmp_path / "s.yaml").write_text(
        "models: [mnist-cnn]\nmethods:\n  - method: uniform\n    params: {bits: [3, 4, 5, 6, 8]}\n"
        "  - method: uniform\n    params: {step: [0.02, 0.01, 0.005]}\n"
    )
    sweep = sweep_spec.load(tmp_path / "s.yaml", tmp_path / "out")
    for item in sweep.items:
        res.Results(sweep.out).write(*runner.execute(item, "s"))
    page = report.write(sweep.out, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,1400",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    dark = (pixels.mean(axis=2) < 0.5).mean()  # text, axes and markers on a white page
    assert 0.005 < dark < 0.5, dark
    assert np.unique(pixels.reshape(-1, 3), axis=0).shape[0] > 50  # a plot, not only text
