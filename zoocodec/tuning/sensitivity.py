"""Per-tensor sensitivity of a model's output fidelity to quantization noise, measured.

Quantization with step d adds noise of variance d^2/12 to every weight of a tensor. We
inject uniform noise of that kind into one tensor at a time (or one row group of an
embedding table), run the task's inputs, and divide the fidelity loss (KL of logits, or
1 - cosine of embeddings, against the original) by numel * variance: the loss per unit of
squared error per weight, which zoocodec.tuning.allocate turns into per-tensor steps
(equal slope: step_t ~ 1/sqrt(s_t)). In the small-noise regime the loss is additive over
tensors and linear in the variance; `predict` and bench/bench_eval.py check that on real models.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from zoocodec.eval.evaluate import Evaluator, entry, evaluator, tasks_of
from zoocodec.pipeline.modelio import torch_dtypes
from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, selected

EMBEDDING_GROUPS = 4  # row groups of a word-embedding table (token ids: frequent words come first)


def quantized_names(weights: dict[str, torch.Tensor], min_size: int = DEFAULT_MIN_SIZE) -> list[str]:
    """The tensors compress quantizes by default: floating point with at least min_size weights."""
    return [k for k, v in weights.items() if selected(torch_dtypes().get(v.dtype, str(v.dtype)), v.numel(), min_size)]


def row_groups(n_rows: int, groups: int) -> torch.Tensor:
    """Group index of each row: `groups` near-equal consecutive runs (as zoocodec.tuning.allocate splits them)."""
    return (torch.arange(n_rows) * groups) // n_rows


def _noise(w: torch.Tensor, rows: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    noisy = w.detach().clone().float()
    shape = (int(rows.sum()), *w.shape[1:])
    noisy[rows] += (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).float() * (math.sqrt(3) * sigma)
    return noisy


def measure(ev: Evaluator, weights: dict[str, torch.Tensor], names: list[str] | None = None,
            rel_noise: float = 0.05, groups: dict[str, int] | None = None, seed: int = 0,
            progress: Callable[[str], None] | None = None) -> dict[str, float | np.ndarray]:
    """Sensitivity per tensor name (an array per row group for the names in `groups`).

    Noise of standard deviation rel_noise * RMS(tensor) keeps every measurement in the
    small-noise regime (well below the quantization noise automatic mode ends at); in a
    positive 1-D tensor (BatchNorm variances) at most half its smallest value, so no
    variance turns negative.
    """
    names = names if names is not None else quantized_names(weights)
    groups = groups or {}
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float | np.ndarray] = {}
    for name in names:
        w = weights[name]
        n_groups = groups.get(name, 1)
        group_of = row_groups(w.shape[0], n_groups)
        values = []
        for g in range(n_groups):
            rows = group_of == g
            part = w[rows].double()
            sigma = rel_noise * float(part.pow(2).mean().sqrt()) or rel_noise
            if w.dim() == 1 and bool((part > 0).all()):  # variances, scales: the noise keeps them positive
                sigma = min(sigma, 0.5 * float(part.min()))
            noisy = dict(weights)
            noisy[name] = _noise(w, rows, sigma, gen)
            loss = max(ev.task.distortion(ev.outputs(noisy), ev.ref_out), 0.0)
            values.append(loss / (part.numel() * sigma**2))
        out[name] = np.array(values) if name in groups else values[0]
        if progress:
            progress(name)
    return out


def embedding_groups(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """Row groups for word-embedding tables (frequent and rare tokens matter differently): BERT's
    `word_embeddings`, and `embed_tokens` of Llama-like causal LMs (also their output head when tied)."""
    return {k: EMBEDDING_GROUPS for k in weights if k.endswith(("word_embeddings.weight", "embed_tokens.weight"))}


def predict(sens: dict[str, float | np.ndarray], weights: dict[str, torch.Tensor],
            recon: dict[str, torch.Tensor]) -> float:
    """The fidelity loss the sensitivities predict for a reconstruction: sum of s * squared error."""
    total = 0.0
    for name, s in sens.items():
        err = (recon[name].double() - weights[name].double()).pow(2)
        s = np.atleast_1d(s)
        group_of = row_groups(err.shape[0], len(s))
        total += sum(float(s[g]) * float(err[group_of == g].sum()) for g in range(len(s)))
    return total


def sensitivities(reference: str, task: str | None = None, limit: int | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, float | np.ndarray]:
    """Measured sensitivities of zoo model `reference` on its task (default: its first task)."""
    from zoocodec.eval.evaluate import load_weights

    entry(reference)
    t = tasks_of(reference, task)[0]
    ev = evaluator(reference, t, limit if limit is not None else t.sensitivity_limit)
    weights = load_weights(reference)
    return measure(ev, weights, groups=embedding_groups(weights), progress=progress)
