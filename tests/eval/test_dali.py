"""The DALI photo loader gives the plain loader's images: its CPU-only pipeline on any machine
with DALI's wheel (slow: DALI starts in seconds), its GPU decoder where DALI and a GPU are
(DALI is not on the GPU test machine, so that test has not run)."""
import pytest
import torch

from zoocodec.eval import data


@pytest.mark.gpu
def test_dali_matches_the_cpu_loader():
    pytest.importorskip("nvidia.dali")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    try:
        cpu = data.photo_views(224, "cpu")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    gpu = data.photo_views(224, "dali")
    assert gpu.shape == cpu.shape
    # JPEG decoders may round differently (+-1 of 255 per pixel before normalisation)
    assert (gpu - cpu).abs().mean() < 0.01
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.eval.models import build

    net = build("effnet-lite0", load_weights("effnet-lite0"))
    with torch.no_grad():
        same = (net(cpu).argmax(1) == net(gpu).argmax(1)).float().mean()
    assert same >= 0.95


@pytest.mark.slow
def test_dali_cpu_pipeline_decodes_the_plain_loaders_images():
    pytest.importorskip("nvidia.dali")
    from zoocodec.eval import dali

    try:
        files = [str(p) for p in data.photo_files()]
        plain = data._decoded_photos("cpu")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    decoded = dali.decode(files, device_id=None)
    assert len(decoded) == len(plain) == len(files)
    for a, b in zip(decoded, plain, strict=True):
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape
        # libjpeg-turbo in both; allow the IDCT rounding of one level on a few pixels
        assert (a.int() - b.int()).abs().float().mean() < 0.5
