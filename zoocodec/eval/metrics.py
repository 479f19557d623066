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


def kl_rows(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-row KL(reference || model) in nats between the softmax distributions (float64)."""
    p_log = reference.double().log_softmax(1)
    q_log = logits.double().log_softmax(1)
    return (p_log.exp() * (p_log - q_log)).sum(1)


def kl(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || model) in nats between the softmax distributions."""
    return float(kl_rows(logits, reference).mean())


def rel_l2_rows(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-row (first axis) ||x - reference|| / ||reference|| (float64)."""
    x, reference = x.double().reshape(len(x), -1), reference.double().reshape(len(reference), -1)
    return (x - reference).norm(dim=1) / reference.norm(dim=1).clamp(min=1e-300)


def cosines(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (float64)."""
    x, reference = x.double(), reference.double()
    return (x * reference).sum(1) / (x.norm(dim=1) * reference.norm(dim=1)).clamp(min=1e-300)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
