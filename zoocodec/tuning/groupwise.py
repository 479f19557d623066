"""Group-wise candidates in automatic mode's plans (causal LMs, the formats LLM quantizers use).

Each 2-D tensor the allocation gives a step d_t may instead take `uniform:bits=B,group=G,zero=true`:
B-bit levels between each group's minimum and maximum, G weights per group along the input
dimension, with the groups' steps and offsets coded as their own streams (their bytes count, as
in every size here). Per tensor, the candidate with the least Lagrangian cost at the plan's
slope wins:

    J_c = bits_c + n * mse_c / (2 ln2 * d_t^2 / 12)

The slope is the allocation's own: it gives every tensor the step where s_t * d_t^2 is one
constant (allocate.py), and at high rate a step d costs d^2/12 per weight for -log2 d bits,
so a bit is worth 2 ln2 * s_t * d_t^2 / 12 of weighted squared error. The step itself is a
candidate (its nearest rounding, quantized and priced like the others), so a tensor keeps it
unless a group format is cheaper at equal slope. Every candidate's mse and bits (the symbols
priced by the entropy model of `ans`, never coded; the groups' side streams coded; the plan is
then priced under each coder as a whole) are measured once per tensor and kept for the process:
automatic mode at several budgets of one model, or with several coders priced, measures them once.

Measured on smollm2-135m (whose weights were dequantized from 32-weight Q4_1 blocks): below 4
bits, min-max groups cost 0.2-0.6 bits/weight more than one entropy-coded step at equal mse;
at 4 bits in groups of 32 with zero points they reproduce the layers' weights exactly. Where
those bits go (bench/bench_group_side.py, layers 2, 15 and 27): 3.862 bits/weight of indices
(ctx the same, cabac 4.03: min-max levels are near uniform) and 0.596 of float16 steps and
minimums as the float coder writes them (order-0 rANS of their float16 bits 0.573 with its
tables, the order-0 entropy without tables 0.517, predicting a step from its row's last or a
minimum from -7.5 steps worse): 4.46 coded, 4.38 as the order-0 model priced the side streams
before they were coded here. That is the Q4_1 grid the weights came from, not a property of
group-wise steps: the head-to-head prints that caveat beside every 4-bit number.

Each group candidate also comes with its side values at the precision they need (`side=M`,
SIDES: the step to M mantissa bits, the group's centre to a grid of step/2^(M-2), integer
codes under ans): on those layers M=5 takes 0.35 bits/weight of side information for 0.2% of
d^2 of weight error, M=4 0.28 for 0.75% (bench/bench_group_side_lossy.py); the slope says
which, if any, a tensor takes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Mapping

import numpy as np
import torch

from zoocodec.codecs.ans import Ans
from zoocodec.eval.refcache import add_tensors
from zoocodec.methods import MethodSpec

CANDIDATES = ((2, 32), (3, 32), (4, 32), (5, 32), (3, 64), (4, 64), (3, 128), (4, 128))  # (bits, weights per group)
SIDES = (None, 4, 5, 6)  # each candidate's side values: float16 (None), or M mantissa bits (uniform side=M)
_MEASURED: dict[tuple[str, str], tuple[float, float]] = {}  # (content hash, candidate) -> (mse, bits)


def applies(spec: MethodSpec) -> bool:
    """Plans of plain `uniform` (nearest or data-aware rounding, no groups asked for) take group candidates."""
    return spec.name == "uniform" and getattr(spec, "group", None) is None and not getattr(spec, "per_tensor", False)


def _grouped(spec: MethodSpec, bits: int, group: int, side: int | None = None) -> MethodSpec:
    out = dataclasses.replace(spec, bits=bits, step=None, group=group, zero=True, side=side)
    out.validate()
    return out


class Groupwise:
    """The group candidates of a model's 2-D tensors, measured on first use."""

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        self.weights = weights
        self._keys: dict[str, str] = {}

    def _key(self, name: str) -> str:
        if name not in self._keys:
            h = hashlib.sha256()
            add_tensors(h, {name: self.weights[name]})
            self._keys[name] = h.hexdigest()
        return self._keys[name]

    def measured(self, name: str, spec: MethodSpec) -> tuple[float, float]:
        """(mse, bits) of `name` under `spec` (a group candidate, or the plan's own step): quantized once (the
        native path where the dtype has one), its symbols priced by the coder's entropy model, never coded."""
        from zoocodec.methods.arrays import error_stats
        from zoocodec.pipeline.modelio import to_tensordata

        key = (self._key(name), str(spec))
        if key not in _MEASURED:
            t = to_tensordata(name, self.weights[name])
            q = spec.quantize(t)
            mse = (q.stats or error_stats(t, q.recon)).mse
            bits = sum(_bits(spec, n, s) for n, s in q.symbols.items())
            _MEASURED[key] = (mse, float(bits))
        return _MEASURED[key]

    def _cost(self, name: str, spec: MethodSpec, per_bit: float) -> float:
        """J of `name` under `spec` (any candidate, its own step too), priced by the ans model."""
        mse, bits = self.measured(name, dataclasses.replace(spec, coder=Ans()))
        return bits + self.weights[name].numel() * mse / per_bit

    def plan(self, plan: dict[str, MethodSpec], sensitivities: Mapping[str, object]) -> dict[str, MethodSpec]:
        """`plan` with each 2-D uniform tensor at its cheapest candidate at the plan's slope (a tensor of
        sensitivity 0 keeps its step: every weight already rounds to 0 there)."""
        out = dict(plan)
        for name, spec in plan.items():
            w = self.weights[name]
            if w.dim() != 2 or not applies(spec) or spec.step is None:
                continue
            s = np.asarray(sensitivities.get(name, 1.0), dtype=np.float64)
            if not (s > 0).any():
                continue
            d = spec.step
            per_bit = 2 * math.log(2) * d * d / 12  # squared error worth one bit at this tensor's slope
            best, least = spec, self._cost(name, spec, per_bit)
            for (b, g), side in itertools.product(CANDIDATES, SIDES):
                if w.shape[1] < g:
                    continue
                cand = _grouped(spec, b, g, side)
                if (c := self._cost(name, cand, per_bit)) < least:
                    best, least = cand, c
            out[name] = best
        return out


def _bits(spec: MethodSpec, stream: str, symbols: np.ndarray) -> float:
    """Bits of one stream: the symbols priced by the coder's entropy model; the groups' steps and zero points
    coded (small streams, and their float coder's bytes are about 15% above the order-0 model's price: 0.596
    against 0.517 bits/weight on smollm2's layers 2, 15 and 27, bench/bench_group_side.py)."""
    from zoocodec.methods.uniform import CODED_STREAMS, GROUP_STREAMS

    coder = spec.coder_for(stream)
    if stream in GROUP_STREAMS or stream in CODED_STREAMS:
        return 8.0 * len(spec.code_stream(stream, symbols, coder)[0])
    return coder.model(symbols, spec.trellis(stream, symbols.shape)).bits(symbols)


def describe(plan: Mapping[str, MethodSpec], weights: Mapping[str, torch.Tensor]) -> dict:
    """What the header says of a plan's group choices: weights per format, the candidates tried."""
    counts: dict[str, int] = {}
    for name, spec in plan.items():
        if weights[name].dim() == 2 and spec.name == "uniform":
            kind = f"bits={spec.bits},group={spec.group},zero=true" if getattr(spec, "group", None) else "step"
            kind += f",side={spec.side}" if getattr(spec, "side", None) else ""
            counts[kind] = counts.get(kind, 0) + weights[name].numel()
    return {"candidates": [f"bits={b},group={g},zero=true" for b, g in CANDIDATES],
            "sides": [f"side={m}" for m in SIDES if m is not None], "weights": counts}
