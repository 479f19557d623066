"""The metrics on tiny inputs whose values are worked out by hand."""
import math

import numpy as np
import pytest
import torch

from zoocodec.eval import metrics as M
from zoocodec.eval.tasks import subset


def test_top_k():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 2, 0, 0])
    assert M.top_k(logits, labels, 1) == 0.5  # rows 0 and 3
    assert M.top_k(logits, labels, 2) == 0.75  # row 1: label 2 is second; row 2: label 0 is last
    assert M.top_k(logits, labels, 3) == 1.0


def test_agreement_and_kl():
    ref = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    out = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert M.agreement(out, ref) == 0.5  # row 0 ties -> argmax 0 in both
    # row 0: identical -> 0; row 1: p = softmax(1, 0) = (e/(1+e), 1/(1+e)), q = (1/(1+e), e/(1+e))
    p = math.e / (1 + math.e)
    row1 = p * math.log(p / (1 - p)) + (1 - p) * math.log((1 - p) / p)
    assert M.kl(out, ref) == pytest.approx(row1 / 2, rel=1e-12)
    assert M.kl(ref, ref) == 0.0


def test_cosines():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0], [4.0, 3.0]])
    assert M.cosines(a, b).tolist() == pytest.approx([0.0, 1.0, 24 / 25])


def test_per_row_kl_and_relative_l2():
    ref = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    out = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert M.kl_rows(out, ref).mean().item() == pytest.approx(M.kl(out, ref))
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert M.rel_l2_rows(x + torch.tensor([[0.5, 0.0], [0.0, 0.0]]), x).tolist() == pytest.approx([0.1, 0.0])


def test_spearman():
    assert M.spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert M.spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (2,1,4,3): 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 60 = 0.6
    assert M.spearman(np.array([1, 2, 3, 4]), np.array([2, 1, 4, 3])) == pytest.approx(0.6)
    # with ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): Pearson of the ranks
    ra, rb = np.array([1, 2.5, 2.5, 4]) - 2.5, np.array([1, 2, 3, 4]) - 2.5
    expected = (ra * rb).sum() / math.sqrt((ra**2).sum() * (rb**2).sum())
    assert M.spearman(np.array([1, 5, 5, 9]), np.array([1, 2, 3, 4])) == pytest.approx(expected)


def test_subset_spreads_over_sorted_data():
    assert subset(10, None).tolist() == list(range(10))
    assert subset(10, 3).tolist() == [0, 4, 9]  # linspace(0, 9, 3) = 0, 4.5, 9 -> rounds half to even
    assert subset(5000, 10).div(500, rounding_mode="floor").tolist() == list(range(10))  # one digit per class
