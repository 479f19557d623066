"""The DALI (GPU) photo loader gives the CPU loader's inputs and effnet-lite0's same predictions."""
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
