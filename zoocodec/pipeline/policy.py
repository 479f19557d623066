"""Which spec each tensor gets: the one tensor-selection policy (`selected`), per-tensor
overrides by name pattern, a plan's exact names, and the default spec's SQNR floor.

compress, sequences, allocation and sensitivity measurement all ask here.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from typing import Any

import numpy as np

from zoocodec.errors import NonFiniteError, SpecError
from zoocodec.methods import MethodSpec, TensorData, parse_spec
from zoocodec.methods.arrays import FLOAT_DTYPES, ErrorStats, all_finite, error_stats
from zoocodec.methods.lossless import Lossless
from zoocodec.methods.uniform import Uniform

DEFAULT_SPEC = "uniform:bits=8"
DEFAULT_MIN_SIZE = 4096
# automatic mode measures each tensor it may quantize (one model run each), so it takes the small ones too where
# those hold a share of the weights worth the runs (0.5% of the weights as exact floats: about 4% of a 4-bit file):
# a CNN's BatchNorm vectors, small convolutions and classifiers
AUTO_MIN_SIZE = 64
SMALL_SHARE = 0.005


class Overrides:
    """Per-tensor specs chosen by name pattern; the first pattern that matches wins.

    Patterns are shell globs ('*embeddings*') or regular expressions ('re:layer\\.[0-5]\\.').
    """

    def __init__(self, rules: list[tuple[str, MethodSpec]] | dict[str, Any] | None = None):
        items = rules.items() if isinstance(rules, dict) else (rules or [])
        self.rules: list[tuple[str, re.Pattern, MethodSpec]] = []
        for pattern, spec in items:
            regex = pattern[3:] if pattern.startswith("re:") else fnmatch.translate(pattern)
            try:
                compiled = re.compile(regex)
            except re.error as e:
                raise SpecError(f"bad override pattern {pattern!r}: {e}") from None
            self.rules.append((pattern, compiled, parse_spec(spec)))

    @classmethod
    def parse(cls, texts: list[str]) -> Overrides:
        """['PATTERN=SPEC', ...] as given on the command line."""
        rules = []
        for text in texts:
            pattern, eq, spec = text.partition("=")
            if not eq or not pattern:
                raise SpecError(f"override {text!r} is not PATTERN=SPEC")
            rules.append((pattern, spec))
        return cls(rules)

    def match(self, name: str) -> MethodSpec | None:
        for pattern, compiled, spec in self.rules:
            if (compiled.search(name) if pattern.startswith("re:") else compiled.match(name)):
                return spec
        return None

    def to_list(self) -> list[list]:
        return [[p, s.to_dict()] for p, _, s in self.rules]


def selected(dtype: str, numel: int, min_size: int = DEFAULT_MIN_SIZE) -> bool:
    """The one tensor-selection policy: floating-point tensors of at least `min_size` weights
    are quantized by default; the rest (biases, norms, counters, masks) stay lossless.
    compress, sequences, allocation and sensitivity measurement all ask this."""
    return dtype in FLOAT_DTYPES and numel >= min_size


def small_share(sizes: dict[str, tuple[str, int]]) -> float:
    """The share of the float weights of `sizes` (name -> (dtype, weights)) in tensors of AUTO_MIN_SIZE to
    DEFAULT_MIN_SIZE weights: what a library-default compress leaves exact that automatic mode could quantize."""
    floats = [n for dtype, n in sizes.values() if dtype in FLOAT_DTYPES]
    return sum(n for n in floats if AUTO_MIN_SIZE <= n < DEFAULT_MIN_SIZE) / max(1, sum(floats))


def auto_min_size(sizes: dict[str, tuple[str, int]]) -> int:
    """Automatic mode's min size where none is asked: AUTO_MIN_SIZE where small_share is SMALL_SHARE or more,
    else DEFAULT_MIN_SIZE. effnet-lite0 (2.3% of its weights there; its BatchNorm vectors held 9% of the file
    as exact floats) is 6-7% smaller at 1% and 0.5% KL for 38-69 s more; minilm's 0.14% (LayerNorm and biases)
    gave 0.25% for 65 s more, so it keeps 4,096."""
    return AUTO_MIN_SIZE if small_share(sizes) >= SMALL_SHARE else DEFAULT_MIN_SIZE


def finite(t: TensorData) -> bool:
    return all_finite(t)


def choose_spec(t: TensorData, spec: MethodSpec, overrides: Overrides, min_size: int,
                allow_nonfinite: bool, plan: dict[str, MethodSpec] | None = None, floor: bool = True) -> MethodSpec:
    """The spec of tensor `t`. With floor=False the default spec's SQNR floor (safe_default) is
    left to the caller, which checks it on the reconstruction it makes anyway (compress)."""
    chosen = (plan or {}).get(t.name) or overrides.match(t.name)
    if chosen is None:
        chosen = Lossless() if not selected(t.dtype, t.array.size, min_size) or t.array.ndim < 2 else spec
    if not chosen.lossless and not t.is_float:
        return Lossless()
    if not chosen.lossless and not finite(t):
        if not allow_nonfinite:
            raise NonFiniteError(
                f"tensor {t.name!r} holds NaN or Inf; use --allow-nonfinite to keep such tensors lossless"
            )
        return Lossless()
    if floor and chosen is spec and spec == parse_spec(DEFAULT_SPEC):
        return safe_default(t, spec)
    return chosen


SAFE_SQNR_DB = 30.0  # the floor the default spec keeps on every tensor


def safe_default(t: TensorData, spec: MethodSpec, stats: ErrorStats | None = None) -> MethodSpec:
    """The default spec, or one uniform step from the tensor's own RMS where min-max rows fall below the floor.

    A few large values in a row stretch its min-max range, and the small ones round to
    nothing (a real OCR model's output bias: 14 dB, the rest of the model above 40 dB).
    Any step s = 2 rms 10^(-floor/20) keeps |error| <= s/2, so SQNR >= the floor (about
    35 dB in practice); the large values just get large symbols, which the entropy
    coder prices. 1-D tensors (biases, norm scales: under 1% of the weights) never get
    here: choose_spec keeps them lossless under a model-wide spec. `stats`: the error of
    what a reader decodes under `spec`, when the caller measured it (compress does).
    """
    stats = stats or error_stats(t, spec.reconstruct(t))  # an empty tensor: power 0, nothing to keep
    if stats.power == 0 or stats.sqnr_db >= SAFE_SQNR_DB:
        return spec
    step = float(np.float32(2 * math.sqrt(stats.power) * 10 ** (-SAFE_SQNR_DB / 20) * (1 - 1e-6)))
    return Uniform(step=step, coder=spec.coder)


# ---- where the file will be decoded ------------------------------------------------------
DECODE_ON = ("any", "gpu")


def gpu_coders() -> tuple[str, ...]:
    """The coders whose registry entry declares a GPU decoder (`gpu_decode`)."""
    from zoocodec.codecs import CODERS

    return tuple(sorted(name for name, cls in CODERS.items() if cls.gpu_decode))


def for_decoder(spec: MethodSpec, decode_on: str, choose_coder: bool = False) -> MethodSpec:
    """The spec to write for a reader that decodes on `decode_on`: "any", `spec` itself; "gpu",
    a spec whose method and coder both declare a GPU decoder (`gpu_decode`). A coder the user
    did not name (`choose_coder`) without one gives way to a GPU coder of its alphabet (a context
    model's to ctx, others' to ans; float for a tensor's bits), and takes the mode the GPU decodes itself
    (CoderSpec.for_gpu: float's rANS planes); anything else is a SpecError saying what to change."""
    from zoocodec.codecs import CODERS
    from zoocodec.registry import METHODS, spec_fields

    if decode_on not in DECODE_ON:
        raise SpecError(f"--decode-on must be one of {', '.join(DECODE_ON)}, got {decode_on!r}")
    if decode_on == "any":
        return spec
    if not type(spec).gpu_decode:
        methods = ", ".join(sorted(n for n, cls in METHODS.items() if cls.gpu_decode))
        raise SpecError(f"--decode-on gpu: method {spec.name!r} has no GPU decoder (methods with one: {methods})")
    if "coder" not in spec_fields(type(spec)):
        return spec
    if spec.coder.gpu_decode:
        return dataclasses.replace(spec, coder=spec.coder.for_gpu()) if choose_coder else spec
    same = sorted((c for c in gpu_coders() if CODERS[c].alphabet == spec.coder.alphabet),
                  key=lambda c: CODERS[c].context_model != spec.coder.context_model)  # (cabac's place: ctx)
    if not choose_coder or not same:
        raise SpecError(f"--decode-on gpu: coder {spec.coder.name!r} has no GPU decoder "
                        f"(coders with one: {', '.join(gpu_coders())})")
    return dataclasses.replace(spec, coder=CODERS[same[0]]().for_gpu())
