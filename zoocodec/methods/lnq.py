"""LNQ, local non-linear quantization (Lee et al., MPEG NNR / NCTM 3.0).

First uniform quantization (the `bits` / `step` / `per_tensor` knobs of `uniform`), then
per LNQ unit (`unit` x `unit` blocks of a 2-D matrix, one filter of a conv weight) a
codebook of `clusters` integer levels (3: ternary) from k-means over the unit's symbols.
Each unit keeps whichever of its uniform symbols or its LNQ indices + codebook costs less
in D + lam * R, with D the squared error in units of the step squared and R in bits under
each group's order-0 model; lam = 0.12 is about the slope of uniform quantization itself
(2 ln 2 / 12). The choice is a flag per unit, and the units of each choice are coded as
their own streams (each with its own model):

  flags      one 0/1 symbol per unit, unit order
  symbols    uniform symbols of the units with flag 0, unit-major order
  indices    LNQ indices of the units with flag 1, unit-major order
  codebooks  the integer levels of the flag-1 units, `clusters` per unit
  steps      as `uniform` (one per row), or side["step"]

side["lnq_ratio"] is the share of units that chose LNQ (the paper's selection ratio),
side["lnq_weight_ratio"] the share of weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError, NonFiniteError
from zoocodec.kernels import lnq as L, uniform as U
from zoocodec.methods.arrays import from_float64
from zoocodec.methods.base import (
    STEP_OR_BITS,
    MethodSpec,
    Quantized,
    TensorData,
    check_step_or_bits,
    default_bits,
    nested_coder,
    register,
)
from zoocodec.methods.uniform import Uniform, load_steps, store_steps
from zoocodec.registry import Range, ints


@register
@dataclass(frozen=True)
class LNQ(MethodSpec):
    name = "lnq"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {**STEP_OR_BITS, "lam": Range(0, text="a non-negative number"), "unit": ints(1, 4096),
              "clusters": ints(2, 16), "iters": ints(0, 1000)}
    steppable = True
    examples = ("lnq:bits=6,unit=4,clusters=4",)

    bits: int | None = None
    step: float | None = None
    per_tensor: bool = False
    lam: float = 0.12
    unit: int = 8
    clusters: int = 3
    iters: int = 10
    seed: int = 0
    coder: CoderSpec = Ans()

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)

    def base(self) -> Uniform:
        return Uniform(bits=self.bits, step=self.step, per_tensor=self.per_tensor, coder=self.coder)

    def check(self) -> None:
        check_step_or_bits(self)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        w = t.float64()
        if not np.isfinite(w).all():
            raise NonFiniteError(f"lnq: tensor {t.name!r} holds NaN or Inf")
        steps = self.base().steps_for(w)
        q = U.quantize(w, steps, np).ravel()
        lay = L.layout(w.shape, self.unit)
        unit_of = lay.unit_of()
        # everything below is in unit-major order (positions), in step units
        z = (w.reshape(steps.shape[0], -1) / steps[:, None]).ravel()[lay.order]
        qo = q[lay.order]
        idx = np.zeros(qo.shape, dtype=np.int64)
        cb = np.zeros((lay.count, self.clusters), dtype=np.int64)
        for units, pos in lay.groups():  # one batch per distinct unit size (at most 4)
            cb[units], idx[pos] = L.cluster_units(qo[pos].astype(np.float32), self.clusters, self.iters, self.seed)
        level = cb[unit_of, idx] if qo.size else qo
        choose = L.rd_choice((z - qo) ** 2, (z - level) ** 2, qo, idx, cb, unit_of, lay.count, self.lam)
        lnq_pos = choose[unit_of]
        out = np.where(lnq_pos, level, qo)
        recon_levels = np.empty_like(out)
        recon_levels[lay.order] = out
        recon = from_float64(U.dequantize(recon_levels.reshape(w.shape), steps, np), t.dtype)
        symbols = {
            "flags": choose.astype(np.int64),
            "symbols": qo[~lnq_pos],
            "indices": idx[lnq_pos],
            "codebooks": cb[choose].ravel(),
        }
        side = {"units": lay.count,
                "lnq_ratio": float(choose.mean()) if lay.count else 0.0,
                "lnq_weight_ratio": float(lnq_pos.mean()) if qo.size else 0.0}
        arrays = {}
        store_steps(steps, side, arrays)
        return Quantized(symbols, side, arrays, recon)

    def dequantize(self, q, shape, dtype):
        shape = tuple(shape)
        lay = L.layout(shape, self.unit)
        flags, idx, cb, kept = (q.symbols[k].ravel() for k in ("flags", "indices", "codebooks", "symbols"))
        if flags.size != lay.count or (flags.size and (flags.min() < 0 or flags.max() > 1)):
            raise ContainerError(f"lnq: {flags.size} flags for {lay.count} units, each 0 or 1")
        choose = flags.astype(bool)
        unit_of = lay.unit_of()
        lnq_pos = choose[unit_of]
        n_lnq = int(lnq_pos.sum())
        if idx.size != n_lnq or cb.size != int(choose.sum()) * self.clusters or kept.size != unit_of.size - n_lnq:
            raise ContainerError("lnq: stream sizes do not match the flags")
        if idx.size and (idx.min() < 0 or idx.max() >= self.clusters):
            raise ContainerError(f"lnq index out of range 0..{self.clusters - 1}")
        cb = cb.reshape(-1, self.clusters)
        out = np.empty(unit_of.shape, dtype=np.int64)
        out[~lnq_pos] = kept
        rank = np.cumsum(choose) - 1  # row of each LNQ unit in cb
        out[lnq_pos] = cb[rank[unit_of[lnq_pos]], idx]
        levels = np.empty_like(out)
        levels[lay.order] = out
        steps = load_steps(q, shape, "lnq")
        return from_float64(U.dequantize(levels.reshape(shape), steps, np), dtype)
