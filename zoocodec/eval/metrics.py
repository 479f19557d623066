"""The metrics, as small functions of tensors (hand-checked in tests/eval/test_metrics.py)."""
from __future__ import annotations

import numpy as np
import torch


def top_k(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(k, dim=1).indices
    return float((top == labels.view(-1, 1)).any(dim=1).float().mean())


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of rows whose top-1 class is the reference model's top-1 class."""
    return float((logits.argmax(1) == reference.argmax(1)).float().mean())


def kl(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || model) in nats between the softmax distributions."""
    p_log = reference.double().log_softmax(1)
    q_log = logits.double().log_softmax(1)
    return float((p_log.exp() * (p_log - q_log)).sum(1).mean())


def cosines(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (float64)."""
    x, reference = x.double(), reference.double()
    return (x * reference).sum(1) / (x.norm(dim=1) * reference.norm(dim=1)).clamp(min=1e-300)


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
