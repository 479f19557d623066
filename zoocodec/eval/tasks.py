"""Tasks: real inputs, how to run a model on them, and the metrics of its outputs.

A task's `outputs(model, limit)` runs the model on its inputs (`limit` of them, evenly
spread, for quick searches); `compare(out, ref)` pairs the model's per-input results with
the uncompressed reference's on the same inputs (zoocodec.eval.stats.Paired: value,
baseline and the 95% interval of the delta); `metrics(out, ref)` is just the values.
Fidelity metrics have baselines 1 (cosine, agreement) or 0 (KL).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zoocodec.eval import data, lm, metrics as M
from zoocodec.eval.stats import Paired


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # image | text | tokens (a causal LM): what the model must be
    about: str
    primary: str  # the metric automatic mode keeps within budget
    # the model's outputs on `limit` inputs; a tokens task has `texts` instead (zoocodec.eval.lm.Scorer runs them)
    outputs: Callable[[object, int | None], torch.Tensor] | None
    compare: Callable[[torch.Tensor, torch.Tensor], dict[str, Paired]]
    lower_is_better: tuple[str, ...] = field(default=())
    # inputs (evenly spread) used while automatic mode searches (all of them for its final check),
    # and to measure sensitivities (one run per tensor)
    search_limit: int | None = None
    sensitivity_limit: int | None = None
    # inputs that data-aware rounding measures layer inputs on (zoocodec.eval.calibration):
    # images or texts, disjoint from the judged ones where the data allows (`calibration_about` says)
    calibration: Callable[[], object] | None = None
    calibration_about: str = ""
    # what calibration() makes once, slowly, before it reads it from the zoo cache (effnet-lite0's distilled
    # images: minutes on a CPU): `prepare(progress)` makes it, calling progress(done, total) with its steps, so
    # that automatic mode's time-left estimate counts them; `prepare_about` names it
    prepare: Callable[[Callable[[int, int], None] | None], object] | None = None
    prepare_about: str = ""
    # data-aware rounding's dampening of H by layer kind (zoocodec.tuning.calibrate.kind_of), where calibration
    # inputs this few in kind over-fit GPTQ's 1%: (kind, fraction of H's mean diagonal) pairs
    rounding_damp: tuple[tuple[str, float], ...] = ()
    texts: Callable[[], Sequence[str]] | None = None  # a tokens task's documents

    def metrics(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        return {k: p.value for k, p in self.compare(out, ref).items()}

    def distortion(self, out: torch.Tensor, ref: torch.Tensor) -> float:
        """A smooth output fidelity loss, 0 for the original: KL for logits, 1 - mean cosine for embeddings.

        Sensitivities are measured on it: unlike top-1 it moves with the smallest noise.
        """
        if self.kind == "image":
            return M.kl(out, ref)
        if self.kind == "tokens":
            return lm.distortion(out, ref)
        return float(1 - M.cosines(out, ref).mean())


def subset(n: int, limit: int | tuple[int, ...] | None) -> torch.Tensor:
    """Indices of `limit` inputs spread evenly over all n (datasets sorted by class stay balanced),
    or the inputs a tuple of indices names (a part of a split: zoocodec.eval.evaluate.Evaluator.part)."""
    if isinstance(limit, tuple):
        return torch.tensor(limit, dtype=torch.long)
    if limit is None or limit >= n:
        return torch.arange(n, device="cpu")
    return torch.linspace(0, n - 1, limit, device="cpu").round().long()


def _logits(inputs: Callable[[], torch.Tensor], batch: int) -> Callable:
    def run(net: torch.nn.Module, limit: int | None) -> torch.Tensor:
        x = inputs()
        x = x[subset(len(x), limit)]
        device = next(net.parameters()).device
        with torch.no_grad():  # channels-last: depthwise convolutions run several times faster on CPU
            return torch.cat([net(x[i:i + batch].to(device).contiguous(memory_format=torch.channels_last))
                              for i in range(0, len(x), batch)])
    return run


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> np.ndarray:
    return _np((logits.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1))


def _fidelity(out: torch.Tensor, ref: torch.Tensor, groups: np.ndarray | None = None) -> dict[str, Paired]:
    """Top-1 agreement and KL against the reference's outputs (whose own are 1 and 0)."""
    n = len(out)
    return {"agreement": Paired("binary", _np(out.argmax(1) == ref.argmax(1)), np.ones(n, bool), groups=groups),
            "kl": Paired("mean", _np(M.kl_rows(out, ref)), np.zeros(n), groups=groups)}


def _labelled(labels: Callable[[], torch.Tensor]) -> Callable:
    def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
        y = labels()
        y = y[subset(len(y), len(out))]
        return {f"top{k}": Paired("binary", _topk_hits(out, y, k), _topk_hits(ref, y, k)) for k in (1, 5)} \
            | _fidelity(out, ref)
    return compare


def _photo_fidelity(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
    views = subset(len(data.photo_views()), len(out))
    return _fidelity(out, ref, groups=_np(views // data.PHOTO_VIEWS))


def _embed_docs(enc, limit: int | None) -> torch.Tensor:
    docs = data.lee_documents()
    return enc.encode([docs[i] for i in subset(len(docs), limit)])


def _cosine(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
    c, one = _np(M.cosines(out, ref)), np.ones(len(out))
    return {"cosine_mean": Paired("mean", c, one), "cosine_min": Paired("min", c, one)}


def _vocabulary() -> list[str]:
    return sorted({w for name in ("wordsim353", "simlex999") for a, b, _ in data.word_pairs(name) for w in (a, b)})


def _embed_words(enc, limit: int | None) -> torch.Tensor:
    return enc.encode(_vocabulary(), batch=128)


def _word_similarity(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
    index = {w: i for i, w in enumerate(_vocabulary())}
    result = {}
    for name in ("wordsim353", "simlex999"):
        pairs = data.word_pairs(name)
        a, b = [index[p[0]] for p in pairs], [index[p[1]] for p in pairs]
        human = np.array([p[2] for p in pairs])
        result[name] = Paired("spearman", _np(M.cosines(out[a], out[b])), _np(M.cosines(ref[a], ref[b])), human)
    return result


DISTILLED = 32  # images distilled from effnet-lite0's BatchNorm statistics beside its calibration crops
CALIBRATION_PHOTOS = sum(len(names) for _, _, names, _ in data.CALIBRATION_PHOTOS)


def _photo_calibration() -> torch.Tensor:
    """The calibration crops of the calibration photos and DISTILLED images distilled from effnet-lite0's BatchNorm
    statistics (zoocodec.eval.distilled: made once, about 10 CPU-minutes, then read from the zoo cache).
    H measured on both: 0.6% smaller at equal KL than on the crops alone (17 fixed plans, -0.033 +- 0.011
    bits/weight; bench/results/h2h-levers-2026-12-05h-effnet-cal*.json); on the distilled images alone 2.1% larger.
    Crops of 34 photos (3 until 2026-12-05j), with the dense layers dampened by 0.1 rather than 0.3: 1.0% smaller
    (17 plans, -0.053 +- 0.018; bench/results/h2h-levers-2026-12-05j-calphotos-*.json)."""
    return torch.cat([data.photo_calibration(), _photo_distilled()])


def _photo_distilled(progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    from zoocodec.eval import distilled

    return distilled.for_zoo("effnet-lite0", DISTILLED, progress)


TEXT_CALIBRATION = "gensim's lee.cor (50 documents) and pang_lee_polarity.cor (200 sentences), not lee_background.cor"

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("digits", "image", "top-1/top-5 on opencv-doc's 5,000 MNIST digits, and agreement/KL vs the original",
         "top1", _logits(lambda: data.opencv_digits()[0], 1000), _labelled(lambda: data.opencv_digits()[1]), ("kl",),
         search_limit=1000, sensitivity_limit=1000, calibration=data.digits_calibration,
         calibration_about=f"{data.CALIBRATION_IMAGES} of scikit-learn's 1,797 8x8 digits, scaled to 20x20 "
                           "(seeded; never judged: the task judges opencv-doc's)"),
    Task("fashion", "image", "top-1/top-5 on the 10,000 Fashion-MNIST test images, and agreement/KL vs the original",
         "top1", _logits(lambda: data.fashion_mnist("test")[0], 1000), _labelled(lambda: data.fashion_mnist("test")[1]),
         ("kl",), search_limit=2000, sensitivity_limit=1000, calibration=data.fashion_calibration,
         calibration_about=f"{data.CALIBRATION_IMAGES} Fashion-MNIST train images "
                           "(seeded; disjoint from the test set)"),
    Task("photos", "image", "KL and top-1 agreement vs the original on opencv-doc's 90 example photos, "
         f"{data.PHOTO_VIEWS} views each (2 crops x 2 flips, 224x224)",
         "kl", _logits(data.photo_views, 16), _photo_fidelity, ("kl",), search_limit=90, sensitivity_limit=16,
         calibration=_photo_calibration, prepare=_photo_distilled,
         prepare_about=f"distilling {DISTILLED} calibration images from the model's BatchNorm statistics",
         calibration_about=f"{data.CALIBRATION_CROPS} random crops of {CALIBRATION_PHOTOS} photos that ship with "
                           "scikit-learn, matplotlib, scikit-image and two Debian wallpaper packages (seeded; never "
                           f"judged) and {DISTILLED} images distilled from the model's BatchNorm statistics (ZeroQ)",
         # at GPTQ's 1%, the pointwise layers' error feedback fits the calibration crops: 0.3 paid with 3 photos
         # (bench/results/h2h-damping-2026-12-05.json); with 34, 0.1 pays (h2h-levers-2026-12-05j-calphotos-*.json)
         rounding_damp=(("dense", 0.1),)),
    Task("lee", "text", "embedding cosine vs the original on the 300 documents of lee_background.cor",
         "cosine_mean", _embed_docs, _cosine, search_limit=64, sensitivity_limit=16,
         calibration=data.text_calibration, calibration_about=TEXT_CALIBRATION),
    Task("ppl", "tokens", f"token KL(original || model) and perplexity on the 300 documents of lee_background.cor, "
         f"{lm.WINDOW}-token windows", "kl", None, lm.compare, ("kl", "ppl"),
         calibration=data.lm_calibration, calibration_about=data.LM_CALIBRATION, texts=data.lee_documents),
    Task("wordsim", "text", "Spearman of embedding cosine vs human scores on WordSim353 and SimLex-999",
         "wordsim353", _embed_words, _word_similarity, calibration=data.text_calibration,
         calibration_about=TEXT_CALIBRATION),
)}
