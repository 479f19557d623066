"""Bit allocation across tensors: one Lagrangian slope for the whole model.

We minimise sum_t s_t * sum_i (w_i - w_hat_i)^2 + lambda * bits, where s_t is the
sensitivity of tensor t *per weight* (how much the model's loss grows per unit of squared
error in one of its weights). At the rates that matter, a uniform quantizer with step d
costs d^2/12 per weight and -log2(d) + const bits, so the optimum gives every tensor the
same slope: s_t * d_t^2 = const, i.e.

    d_t = base * sqrt(median(s) / s_t)

With no sensitivities every s_t is equal: one step for the whole model, which under
entropy coding is the MSE-optimal allocation. `base` is given, or searched by bisection
so that the estimated size hits `target_bpw` (bits per weight over all tensors, the
lossless ones included, as Report.bits_per_weight counts them).

Sensitivities:
- a float per tensor name (per-weight sensitivity; tensors without one get the median);
- a 1-D array per tensor: one sensitivity per row group of axis 0 (rows split into
  len(array) near-equal consecutive groups, e.g. frequent and rare rows of an embedding
  table; the median above then counts the tensor once, by its mean). A method that declares
  `grouped_steps` (rdoq, dq) then gets a step per group; any other the groups' weighted mean step;
- 0 means the tensor does not matter (e.g. a pooler the task never runs): its step is
  capped so that every weight quantizes to zero.

Sizes come from entropy models (codecs/base.py), never from coding. The bisection prices
the rounded symbols with the order-0 model (cheap: a rint and a bincount per tensor),
plus the exact lossless cost of the tensors that stay lossless. It is then aimed off by
the difference between that and what the spec's coders' own models give the method's
own symbols (rdoq and dq choose other levels than rounding; `ctx` prices by context),
measured on a sample of rows of every tensor, twice.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping

import numpy as np

from zoocodec.codecs import native
from zoocodec.codecs.base import Order0, counts_bits
from zoocodec.errors import SpecError
from zoocodec.methods import MethodSpec, TensorData, parse_spec
from zoocodec.methods.lossless import Lossless
from zoocodec.pipeline.core import load
from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, finite, selected

DEFAULT_METHOD = "uniform"
DEFAULT_BASE_STEP = 2.0 ** (-30 / 4)  # about level with NNCodec's default on minilm (bench/bench_rd.py)


def allocate(model: str | os.PathLike | dict, *, sensitivities: Mapping[str, float | np.ndarray] | None = None,
             base_step: float | None = None, target_bpw: float | None = None, method: str | MethodSpec | None = None,
             min_size: int = DEFAULT_MIN_SIZE,
             methods: Mapping[str, MethodSpec] | None = None) -> dict[str, MethodSpec]:
    """A per-tensor plan {name: spec} for `compress(model, out, plan=plan)`.

    `method` is any `steppable` spec ('uniform', 'rdoq:lam=0.1,coder=ctx'); each
    quantized tensor gets it with its own step. `methods` names another steppable spec for some
    tensors (e.g. one with `grouped_steps` where a tensor has a sensitivity per row group and
    `method` takes one step). Give `base_step` or `target_bpw`, not both
    (neither: DEFAULT_BASE_STEP). Tensors that compress keeps lossless (small, non-float)
    are left out of the plan.
    """
    if base_step is not None and target_bpw is not None:
        raise SpecError("allocate: give base_step or target_bpw, not both")
    if base_step is not None and not (math.isfinite(base_step) and base_step > 0):
        raise SpecError(f"allocate: base_step must be a positive number, got {base_step}")
    if target_bpw is not None and not (math.isfinite(target_bpw) and target_bpw > 0):
        raise SpecError(f"allocate: target_bpw must be a positive number, got {target_bpw}")
    spec = parse_spec(method or DEFAULT_METHOD)
    for s in (spec, *(methods or {}).values()):
        if not s.steppable:
            raise SpecError(f"allocate: method {s.name!r} has no step parameter to allocate")
    items, fixed_bits, params = _gather(model, min_size)
    specs = [(methods or {}).get(it.name, spec) for it in items]
    rel = _relative_steps(items, sensitivities or {})
    if target_bpw is not None:
        base_step = _search_base(items, rel, fixed_bits, params, target_bpw)
        for _ in range(2):  # aim off by what the coders' models say of the method's own symbols
            offset = _method_offset(specs, items, rel, base_step, params)
            if abs(offset) < 1e-4 * target_bpw:
                break
            base_step = _search_base(items, rel, fixed_bits, params, target_bpw + offset)
    base = base_step if base_step is not None else DEFAULT_BASE_STEP
    return {it.name: _spec_for(sp, it, base * r) for it, sp, r in zip(items, specs, rel, strict=True)}


def estimate_bpw(
    model: str | os.PathLike | dict, plan: Mapping[str, MethodSpec], min_size: int = DEFAULT_MIN_SIZE
) -> float:
    """Estimated bits/weight of a plan (order-0 model of the rounded symbols + lossless tensors)."""
    items, fixed_bits, params = _gather(model, min_size)
    bits = fixed_bits + sum(_rounded_bits(it.w, _steps_of(plan[it.name], it.rows)) for it in items)
    return bits / max(params, 1)


def plan_bits(weights: Mapping[str, object], plan: Mapping[str, MethodSpec]) -> float:
    """Bits of the plan's tensors under their coders' entropy models, for the symbols each
    method makes of them (quantized, never coded): what choices between plans compare."""
    from zoocodec.pipeline.modelio import to_tensordata

    return sum(_model_bits(spec, to_tensordata(name, weights[name]).float64()) for name, spec in plan.items())


def noise_sensitivities(tensors: Mapping[str, np.ndarray], loss: Callable[[dict[str, np.ndarray]], float],
                        sigma: float | None = None, rel_noise: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Crude measured per-weight sensitivities: uniform noise in one tensor at a time.

    For each tensor, adds uniform noise of standard deviation `sigma` (default: `rel_noise`
    times the tensor's RMS) to it alone, calls `loss(tensors_with_noise)` (e.g. 1 - cosine
    of the model's outputs against the original's, so 0 for no change) and returns
    loss / (numel * sigma^2): the loss per unit of squared error in one weight. Pick sigma
    near the quantization noise you expect (step / sqrt(12)): the response is not linear.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, w in tensors.items():
        w64 = np.asarray(w, dtype=np.float64)
        s = sigma if sigma is not None else (rel_noise * float(np.sqrt(np.mean(w64**2))) or rel_noise)
        noise = rng.uniform(-math.sqrt(3) * s, math.sqrt(3) * s, size=w64.shape)
        noisy = dict(tensors)
        noisy[name] = (w64 + noise).astype(np.asarray(w).dtype)
        out[name] = max(float(loss(noisy)), 0.0) / (w64.size * s**2)
    return out


@dataclasses.dataclass
class _Item:
    """A tensor to quantize: its float64 weights, and the step at which all of them round to 0."""

    name: str
    w: np.ndarray

    @property
    def rows(self) -> int:
        return self.w.shape[0]

    @functools.cached_property
    def cap(self) -> float:
        """The largest step: every weight rounds to 0 there; a positive 1-D tensor (variances,
        scales) gets at most its smallest value, so that none rounds to 0 or below. (Once: the
        bisection asks at every step, and each answer is a pass over the weights.)"""
        top = 4 * float(np.max(np.abs(self.w))) or 1.0
        if self.w.ndim == 1 and self.w.size and float(self.w.min()) > 0:
            return min(top, float(self.w.min()))
        return top


def _gather(model, min_size: int) -> tuple[list[_Item], float, int]:
    """The tensors compress quantizes (pipeline.policy.selected, finite), and the bits of the others."""
    items, fixed_bits, params = [], 0.0, 0
    for t in load(model).tensors():
        params += t.array.size
        if selected(t.dtype, t.array.size, min_size) and finite(t):
            items.append(_Item(t.name, t.float64()))
        else:
            fixed_bits += 8 * sum(len(v) for v in Lossless().encode(t).segments.values())
    return items, fixed_bits, params


def _relative_steps(items: list[_Item], sens: Mapping[str, float | np.ndarray]) -> list[np.ndarray]:
    """Per tensor, step / base: a 1-element array, or one entry per row group."""
    unknown = sorted(set(sens) - {it.name for it in items})
    if unknown:
        raise SpecError(f"allocate: sensitivity for {unknown[0]!r}, which is not a quantized tensor of the model")
    values = {}
    for it in items:
        if it.name in sens:
            v = np.atleast_1d(np.asarray(sens[it.name], dtype=np.float64))
            if v.ndim != 1 or v.size == 0 or v.size > it.rows or not (np.isfinite(v).all() and (v >= 0).all()):
                raise SpecError(f"allocate: sensitivity of {it.name!r} must be a non-negative number "
                                f"or one per row group (at most {it.rows} groups)")
            values[it.name] = v
    # the median over tensors (a row-grouped tensor counts once, by its mean), so that row
    # groups do not move the meaning of the base step
    given = np.array([v.mean() for v in values.values()]) if values else np.ones(1)
    positive = given[given > 0]
    median = float(np.median(positive)) if positive.size else 1.0
    with np.errstate(divide="ignore"):
        return [np.sqrt(median / values.get(it.name, np.array([median]))) for it in items]


def _group_rows(n_rows: int, groups: int) -> np.ndarray:
    """Group index of each row: `groups` near-equal consecutive runs."""
    return (np.arange(n_rows) * groups) // n_rows


def _steps_of(spec: MethodSpec, rows: int) -> np.ndarray:
    """One step per row (or a single step) as `spec` will apply it."""
    groups = spec.group_steps if spec.grouped_steps else None
    if groups:
        return np.asarray(groups, dtype=np.float64)[_group_rows(rows, len(groups))]
    return np.array([spec.step])


def _spec_for(spec: MethodSpec, it: _Item, steps: np.ndarray) -> MethodSpec:
    steps = np.minimum(steps, it.cap).astype(np.float32).astype(np.float64)  # compact, exact in the header
    if steps.size == 1 or np.all(steps == steps[0]):
        return spec.with_step(float(steps[0]))
    if spec.grouped_steps:
        return spec.with_step(float(steps.min()), tuple(float(s) for s in steps))
    sizes = np.bincount(_group_rows(it.rows, steps.size), minlength=steps.size)  # one step for the tensor:
    return spec.with_step(float(np.float32((steps * sizes).sum() / sizes.sum())))  # the groups' row-weighted mean


def _rounded_bits(w: np.ndarray, steps: np.ndarray) -> float:
    """Bits of the rounded symbols under the order-0 model: their counts from one native pass over the
    weights (NumPy's rounding and counting where a level is past what the pass counts)."""
    m = np.ascontiguousarray(w.reshape(steps.shape[0], -1))
    counted = native.engine().rounded_counts(m, np.ascontiguousarray(steps, dtype=np.float64), 1 << 22)
    if counted is None:
        return Order0().bits(np.rint(m / steps[:, None]).astype(np.int64))
    return counts_bits(counted[1])


def _model_bits(spec: MethodSpec, w: np.ndarray) -> float:
    """What the spec's coders' entropy models give the symbols the method makes of `w`."""
    q = spec.quantize(TensorData("sample", "float64", w))
    return sum(spec.coder_for(n).model(s, spec.trellis(n, s.shape)).bits(s) for n, s in q.symbols.items())


def _method_offset(specs: list[MethodSpec], items: list[_Item], rel, base: float, params: int,
                   sample_rows: int = 256) -> float:
    """bits/weight by which the rounding estimate exceeds what the specs' coders' models give
    the methods' own symbols at `base` (one spec per item).

    Measured on up to `sample_rows` evenly spaced rows of each tensor, scaled to the whole
    tensor: a cheap correction that the bisection then aims off.
    """
    diff = 0.0
    for it, spec, r in zip(items, specs, rel, strict=True):
        planned = _spec_for(spec, it, base * r)
        rows = np.unique(np.linspace(0, it.rows - 1, min(sample_rows, it.rows)).astype(np.int64))
        w = it.w.reshape(it.rows, -1)[rows]
        steps = _steps_of(planned, it.rows)
        steps = steps[rows] if steps.size > 1 else steps
        if steps.size > 1:  # the sample as its own tensor, one step per sampled row
            planned = dataclasses.replace(planned, group_steps=tuple(float(x) for x in steps))
        diff += it.w.size / w.size * (_rounded_bits(w, steps) - _model_bits(planned, w))
    return diff / max(params, 1)


def _search_base(items: list[_Item], rel, fixed_bits: float, params: int, target_bpw: float) -> float:
    """Bisection on log(base) until the estimated bits/weight is within 0.1% of the target."""
    def bpw(base: float) -> float:
        bits = fixed_bits
        for it, r in zip(items, rel, strict=True):
            steps = np.minimum(base * r, it.cap)
            bits += _rounded_bits(it.w, steps[_group_rows(it.rows, steps.size)] if steps.size > 1 else steps)
        return bits / max(params, 1)

    floor_bpw = fixed_bits / max(params, 1)
    if target_bpw <= floor_bpw:
        raise SpecError(f"allocate: target {target_bpw} bits/weight is below what the lossless tensors "
                        f"alone take ({floor_bpw:.4f})")
    finite = [(it, r[np.isfinite(r)]) for it, r in zip(items, rel, strict=True)]
    # bracket: from about 2**24 levels in the most finely stepped tensor to all-zero everywhere
    lo = math.log(min((it.cap / r.max() for it, r in finite if r.size), default=1.0) * 2.0**-24)
    hi = math.log(max((it.cap / r.min() for it, r in finite if r.size), default=1.0))
    for _ in range(60):
        mid = (lo + hi) / 2
        b = bpw(math.exp(mid))
        if abs(b - target_bpw) <= 1e-3 * target_bpw or hi - lo < 1e-6:
            return math.exp(mid)
        lo, hi = (mid, hi) if b > target_bpw else (lo, mid)
    return math.exp((lo + hi) / 2)
