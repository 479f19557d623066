"""Tasks: real inputs, how to run a model on them, and the metrics of its outputs.

A task's `outputs(model, limit)` runs the model on its inputs (the first `limit` only, for
quick searches); `metrics(out, ref)` scores outputs against labels and against the
reference outputs of the uncompressed model. The baseline of every metric is
`metrics(ref, ref)`, so fidelity metrics have baselines 1 (cosine, agreement) or 0 (KL).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from zoocodec.eval import data, metrics as M


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # image | text: what the model must be
    about: str
    primary: str  # the metric automatic mode keeps within budget
    outputs: Callable[[object, int | None], torch.Tensor]
    metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    lower_is_better: tuple[str, ...] = field(default=())
    # inputs (evenly spread) used while automatic mode searches (all of them for its final check),
    # and to measure sensitivities (one run per tensor)
    search_limit: int | None = None
    sensitivity_limit: int | None = None

    def distortion(self, out: torch.Tensor, ref: torch.Tensor) -> float:
        """A smooth output fidelity loss, 0 for the original: KL for logits, 1 - mean cosine for embeddings.

        Sensitivities are measured on it: unlike top-1 it moves with the smallest noise.
        """
        if self.kind == "image":
            return M.kl(out, ref)
        return float(1 - M.cosines(out, ref).mean())


def subset(n: int, limit: int | None) -> torch.Tensor:
    """Indices of `limit` inputs spread evenly over all n (datasets sorted by class stay balanced)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long()


def _logits(inputs: Callable[[], torch.Tensor], batch: int) -> Callable:
    def run(net: torch.nn.Module, limit: int | None) -> torch.Tensor:
        x = inputs()
        x = x[subset(len(x), limit)]
        with torch.no_grad():  # channels-last: depthwise convolutions run several times faster on CPU
            return torch.cat([net(x[i:i + batch].contiguous(memory_format=torch.channels_last))
                              for i in range(0, len(x), batch)])
    return run


def _labelled(labels: Callable[[], torch.Tensor]) -> Callable:
    def score(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        y = labels()
        y = y[subset(len(y), len(out))]
        return {"top1": M.top_k(out, y, 1), "top5": M.top_k(out, y, 5),
                "agreement": M.agreement(out, ref), "kl": M.kl(out, ref)}
    return score


def _fidelity(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    return {"agreement": M.agreement(out, ref), "kl": M.kl(out, ref)}


def _embed_docs(enc, limit: int | None) -> torch.Tensor:
    docs = data.lee_documents()
    return enc.encode([docs[i] for i in subset(len(docs), limit)])


def _cosine(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    c = M.cosines(out, ref)
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min())}


def _vocabulary() -> list[str]:
    return sorted({w for name in ("wordsim353", "simlex999") for a, b, _ in data.word_pairs(name) for w in (a, b)})


def _embed_words(enc, limit: int | None) -> torch.Tensor:
    return enc.encode(_vocabulary(), batch=128)


def _word_similarity(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    index = {w: i for i, w in enumerate(_vocabulary())}
    result = {}
    for name in ("wordsim353", "simlex999"):
        pairs = data.word_pairs(name)
        a = out[[index[p[0]] for p in pairs]]
        b = out[[index[p[1]] for p in pairs]]
        result[name] = M.spearman(M.cosines(a, b).numpy(), np.array([p[2] for p in pairs]))
    return result


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("digits", "image", "top-1/top-5 on opencv-doc's 5,000 MNIST digits, and agreement/KL vs the original",
         "top1", _logits(lambda: data.opencv_digits()[0], 1000), _labelled(lambda: data.opencv_digits()[1]), ("kl",),
         search_limit=1000, sensitivity_limit=1000),
    Task("fashion", "image", "top-1/top-5 on the 10,000 Fashion-MNIST test images, and agreement/KL vs the original",
         "top1", _logits(lambda: data.fashion_mnist("test")[0], 1000), _labelled(lambda: data.fashion_mnist("test")[1]),
         ("kl",), search_limit=2000, sensitivity_limit=1000),
    Task("photos", "image", "top-1 agreement and KL vs the original on opencv-doc's example photos (224x224)",
         "agreement", _logits(data.photos, 16), _fidelity, ("kl",), sensitivity_limit=16),
    Task("lee", "text", "embedding cosine vs the original on the 300 documents of lee_background.cor",
         "cosine_mean", _embed_docs, _cosine, search_limit=64, sensitivity_limit=16),
    Task("wordsim", "text", "Spearman of embedding cosine vs human scores on WordSim353 and SimLex-999",
         "wordsim353", _embed_words, _word_similarity),
)}
