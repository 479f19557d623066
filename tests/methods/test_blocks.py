"""Streaming inside a tensor changes no byte: row blocks of any size give the file that one
block gives (the statistics' sums are split as NumPy's pairwise summation splits them)."""
import numpy as np
import pytest
import torch

import zoocodec
from zoocodec.methods import arrays
from zoocodec.methods.arrays import pairwise_sum, row_blocks


def model() -> dict[str, torch.Tensor]:
    g = np.random.default_rng(3)
    return {
        "tall.weight": torch.from_numpy(g.laplace(0, 0.02, (120, 70)).astype(np.float32)),
        "wide.weight": torch.from_numpy(g.laplace(0, 0.02, (12, 900)).astype(np.float32)),
        "bf.weight": torch.from_numpy(g.laplace(0, 0.02, (50, 100)).astype(np.float32)).to(torch.bfloat16),
        "outlier.weight": torch.from_numpy(np.concatenate([g.normal(0, 1e-3, (60, 80)),
                                                           g.normal(0, 3, (1, 80))]).astype(np.float32)),
    }


@pytest.mark.parametrize("spec", ["uniform:bits=8", "uniform:step=0.001", "uniform:bits=5,per_tensor=true",
                                  "dq:bits=8,coder=ans", "rdoq:step=0.002", "kmeans:k=16",
                                  "kmeans:k=4,per=block,block=1000", "lossless"])
def test_blocks_change_no_byte(tmp_path, monkeypatch, spec):
    zoocodec.compress(model(), tmp_path / "one.zc", spec, min_size=100)
    monkeypatch.setattr(arrays, "BLOCK_BYTES", 2048)  # 256 float64s: many blocks, rows cut in pieces
    zoocodec.compress(model(), tmp_path / "many.zc", spec, min_size=100)
    assert (tmp_path / "one.zc").read_bytes() == (tmp_path / "many.zc").read_bytes()
    back = zoocodec.decompress(tmp_path / "many.zc")
    monkeypatch.setattr(arrays, "BLOCK_BYTES", 8 << 20)
    for name, t in zoocodec.decompress(tmp_path / "one.zc").items():
        assert torch.equal(t, back[name])


def test_row_blocks_cover_the_matrix_once():
    for rows, cols, limit, whole in [(7, 5, 24, False), (3, 100, 80, False), (3, 100, 80, True), (0, 4, 8, False)]:
        seen = np.zeros((rows, cols), dtype=int)
        for r, c in row_blocks(rows, cols, limit=limit, whole=whole):
            seen[r, c] += 1
            assert whole or seen[r, c].size * 8 <= limit
        assert (seen == 1).all()


def test_pairwise_sum_is_numpy_sum():
    x = np.random.default_rng(0).standard_normal(100_003) ** 3
    assert pairwise_sum(x.size, lambda lo, hi: (np.sum(x[lo:hi]),), limit=1000) == (float(np.sum(x)),)
