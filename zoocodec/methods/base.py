"""Method specs: frozen, versioned dataclasses in one registry (registry.py), parsed from text or JSON.

A spec says how one tensor is coded: the quantizer, its parameters, and the coder of its
symbols (a nested coder spec, codecs/base.py). Its dict form goes into the container
header and into every results row.

A method only quantizes:

    quantize(t: TensorData, xp) -> Quantized(symbols, side, arrays, recon)
    dequantize(q: Quantized, shape, dtype) -> the native array a reader gets

`symbols` are named integer arrays (with the shape the coder should see), `side` small
JSON parameters for the header, `arrays` small binary side data stored as they are
(float32 steps, codebooks), `recon` the reconstruction. `encode` and `decode` are
written once, here: each symbol array goes through `coder_for(name)` into a segment of
its own name, the arrays into theirs, and the symbol shapes into side["symbols"]. A
method whose symbols are dependent-quantization levels says so through `trellis`, so a
coder may model the quantizer's state. The array and number helpers methods share (float64
views, row blocks, error statistics, stored side arrays) are in methods/arrays.py.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from zoocodec import budget
from zoocodec.codecs import CoderSpec, coder_from_dict, parse_coder
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels.backend import on_device, to_numpy
from zoocodec.methods.arrays import FLOAT_DTYPES, ErrorStats, as_float64, error_stats
from zoocodec.registry import METHODS, Range, Spec, build, ints, positive, spec_fields, text_params

REGISTRY = METHODS  # every method, by name
register = METHODS.register


@dataclass
class TensorData:
    """One tensor as the methods see it: its native bits and its dtype name.

    bfloat16 has no NumPy dtype, so it travels as its uint16 bit pattern.
    """

    name: str
    dtype: str
    array: np.ndarray

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def float64(self, xp=np):
        """The values as float64, in namespace `xp` (the native bits travel, not the float64s)."""
        return as_float64(self.array, self.dtype, xp)

    def matrix(self, per_row: bool = True) -> np.ndarray:
        """The native array as 2-D (rows = output channels, or one row), without a copy."""
        a = self.array
        return a.reshape(a.shape[0], -1) if per_row and a.ndim >= 2 and a.shape[0] else a.reshape(1, -1)


@dataclass
class Quantized:
    """What a method's quantizer produces for one tensor (and what its dequantizer reads).

    symbols: named integer arrays for the coders; side: JSON-able parameters for the
    header; arrays: named binary side data (little-endian float steps, codebooks) stored
    as is; recon: the reconstruction in the tensor's native dtype (None when decoding).
    """

    symbols: dict[str, np.ndarray]
    side: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, bytes | memoryview] = field(default_factory=dict)
    recon: np.ndarray | None = None
    stats: ErrorStats | None = None  # recon's error, when the quantizer measured it on the way (native uniform)


@dataclass
class Encoded:
    """What encode produces for one tensor: header side info, named payloads, the
    reconstruction's error (None for lossless methods) and the reconstruction (None unless asked for)."""

    side: dict[str, Any]
    segments: dict[str, bytes]
    recon: np.ndarray | None
    stats: ErrorStats | None = None


MAX_SYMBOLS = 1 << 40


@dataclass(frozen=True)
class MethodSpec(Spec):
    """Base of all method specs. Subclasses set `name`, `version`, their fields, their
    `ranges` and `upgrades` (registry.py), and the capabilities below that they have.

    A field annotated `CoderSpec` is a coder: text or its dict is accepted and parsed.
    """

    kind = "method"
    # ---- capabilities: declared, so no caller probes for fields or types -------------------
    lossless: ClassVar[bool] = False  # the reader gets the tensor's bits back
    gpu: ClassVar[bool] = False  # quantize() does its array work in the `xp` it is given (CuPy on a GPU)
    # quantize_many pays on the CPU too (many small array operations become few large ones);
    # else tensors are grouped on a GPU only: on the CPU, large stacked temporaries lose the cache
    batch_on_cpu: ClassVar[bool] = False
    # `step` sets one absolute step per tensor, as bit allocation chooses it (with_step); `bits`,
    # the other way to set it, then gives way
    steppable: ClassVar[bool] = False
    grouped_steps: ClassVar[bool] = False  # `group_steps`: a step per group of consecutive rows
    # nearest rounding on its grid: values handed over on the grid (k * step) quantize to k, so
    # data-aware rounding (tuning/calibrate.py) may choose the symbols for it
    rounds_nearest: ClassVar[bool] = False
    # steps_for(amax) gives a step per row from the largest |w| of several tensors, so a sequence
    # (methods/sequence.py) puts all its members on one grid and codes their deltas
    shared_grid: ClassVar[bool] = False
    # its fused() describes its payloads to the GPU decoder when its coder has `gpu_decode`
    # (kernels/decode.py; `compress --decode-on gpu` keeps to these methods)
    gpu_decode: ClassVar[bool] = False
    # spec texts of its other modes, run with the default by the conformance suite
    # (tests/methods/test_conformance.py) and the batching tests
    examples: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for name in spec_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, (str, dict)):
                object.__setattr__(self, name, parse_coder(value))

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        return parse_spec(text)

    def with_step(self, step: float, group_steps: tuple[float, ...] | None = None) -> MethodSpec:
        """This spec with an absolute step (and, where it has them, steps per row group) in place
        of `bits`, validated: what bit allocation hands each tensor."""
        if not self.steppable or (group_steps is not None and not self.grouped_steps):
            raise SpecError(f"method {self.name!r} takes no {'group steps' if self.steppable else 'step'}")
        fields = {"step": step, "bits": None, **({"group_steps": group_steps} if self.grouped_steps else {})}
        spec = dataclasses.replace(self, **fields)
        spec.validate()
        return spec

    # ---- the quantizer: what each method writes ----------------------------------------
    def quantize(self, t: TensorData, xp=np) -> Quantized:
        raise NotImplementedError

    def dequantize(self, q: Quantized, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        raise NotImplementedError

    def coder_for(self, stream: str) -> CoderSpec:
        """The coder of one symbol stream (default: the spec's `coder`)."""
        return self.coder

    def trellis(self, stream: str, shape: tuple[int, ...]) -> int | None:
        """For dependent-quantization levels, the axis of the 2-D view the state machine walks."""
        return None

    def symbol_dtype(self, stream: str, dtype: str) -> np.dtype | None:
        """What decode asks the coder for; None: any integer type (the coder's narrowest)."""
        return np.dtype(np.int64)

    # ---- written once ---------------------------------------------------------------------
    def batch_key(self, t: TensorData) -> Hashable | None:
        """Tensors whose keys are equal (and not None) may be quantized together by
        quantize_many (pipeline/batch.py groups a model's tensors by it)."""
        return None

    def quantize_many(self, ts: list[TensorData], xp=np, recon: bool = True) -> list[Quantized]:
        """quantize() of tensors of one batch_key, with the same results; methods whose kernels
        batch (one launch for many same-shape problems) override it. recon=False: the caller
        codes the result and needs only its error, so a method that measured it (q.stats) may
        leave q.recon None (code() rebuilds it from the symbols if it is ever asked for)."""
        return [self.quantize(t, xp) for t in ts]

    def encode(self, t: TensorData, xp=np, recon: bool = True) -> Encoded:
        """Quantize in `xp` (when the method has a GPU path), code on the host."""
        return self.code(t, self.quantize(t, xp if self.gpu else np), recon)

    def code(self, t: TensorData, q: Quantized, recon: bool = True, stats: ErrorStats | None = None,
             kept: Coded | None = None) -> Encoded:
        """The payloads of quantization `q` of `t`: host work only (pipeline/batch.py runs it on
        worker threads while the next tensors quantize).

        recon=False drops the reconstruction once its error is measured (`stats`, when the
        caller measured it already), before coding: the tensor, its symbols and the coder's
        output are held, not a second copy of the tensor. `kept`: streams of `t` under this
        spec coded before (code_stream)."""
        # symbols on a GPU stay there for a coder that encodes them there (only its bytes come back)
        q.symbols = {k: v if self.coder_for(k).gpu_encode and on_device(v) else to_numpy(v)
                     for k, v in q.symbols.items()}
        stats = stats or q.stats
        if q.recon is None and (recon or stats is None):  # left out by quantize_many(recon=False)
            host = {k: to_numpy(v) for k, v in q.symbols.items()}
            q.recon = self.dequantize(Quantized(host, q.side, q.arrays), t.array.shape, t.dtype)
        q.recon = None if q.recon is None else to_numpy(q.recon)
        if stats is None and not self.lossless and t.is_float:
            stats = error_stats(t, q.recon)
        if not recon:
            q.recon = None
        segments, shapes, coded, decoded = {}, {}, {}, {}
        for name, symbols in q.symbols.items():
            coder = self.coder_for(name)
            data, symbols = self.code_stream(name, symbols, coder, None if kept is None else kept.get(name))
            segments[name] = data
            q.symbols[name] = symbols  # as coded: int64 for a coder that does not narrow
            shapes[name] = list(symbols.shape)
            info = coder.describe(data)
            if coder.lossy:  # measure what a reader will get
                decoded[name] = coder.decode(data, symbols.shape, self._decoded_dtype(name, t.dtype, coder),
                                             self.trellis(name, symbols.shape))
                diff = np.abs(decoded[name].astype(np.int64) - symbols.astype(np.int64))
                info["max_symbol_error"] = int(diff.max()) if diff.size else 0
            if info:
                coded[name] = info
        if decoded:
            q.recon = self.dequantize(Quantized({**q.symbols, **decoded}, q.side, q.arrays), t.array.shape, t.dtype)
            stats = None if stats is None else error_stats(t, q.recon)
        if set(segments) & set(q.arrays):
            raise ValueError(f"{self.name}: a symbol stream and an array share a name")
        segments.update({k: bytes(v) for k, v in q.arrays.items()})
        side = {**q.side, "symbols": shapes, **({"coded": coded} if coded else {})}
        return Encoded(side, segments, q.recon if recon else None, stats)

    def decode(self, side: dict, segments: dict[str, memoryview], shape: tuple[int, ...], dtype: str,
               consume: bool = False) -> np.ndarray:
        """`consume`: the caller hands `segments` over, and each coded stream is dropped from it
        once decoded, before the reconstruction is made (one tensor's payload less at the peak)."""
        shapes = side.get("symbols") if isinstance(side, dict) else None
        if not isinstance(shapes, dict) or not all(
                isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) and math.prod(s) <= MAX_SYMBOLS
                for s in shapes.values()):
            raise ContainerError(f"{self.name}: bad symbol shapes {shapes!r}")
        budget.check_tensor(f"{self.name}: its symbol streams", sum(math.prod(s) for s in shapes.values()), 8)
        missing = sorted(set(shapes) - set(segments))
        if missing:
            raise ContainerError(f"{self.name}: symbol stream {missing[0]!r} is missing")
        symbols = {}
        for name, s in shapes.items():
            s, coder = tuple(s), self.coder_for(name)
            symbols[name] = coder.decode(
                segments[name], s, self._decoded_dtype(name, dtype, coder), self.trellis(name, s)
            )
            if consume:
                del segments[name]
        arrays = {k: v for k, v in segments.items() if k not in shapes}  # (consumed streams are gone already)
        try:
            return self.dequantize(Quantized(symbols, side, arrays), tuple(shape), dtype)
        except (KeyError, IndexError, ValueError, TypeError, OverflowError) as e:  # what a forgery makes NumPy raise
            raise ContainerError(f"{self.name}: damaged payload or side info ({type(e).__name__}: {e})") from None

    def fused(self, side: dict, arrays: dict[str, bytes], shape: tuple[int, ...], dtype: str):
        """How this tensor decodes in one pass, entropy decoding and dequantization fused into the
        output dtype (a zoocodec.plan kind: the native CPU decoder and the CUDA kernel take it),
        or None: decode() runs. `arrays`: every payload, symbol streams included (a kind with
        side streams decodes them only when a decoder takes it)."""
        return None

    def _decoded_dtype(self, stream: str, dtype: str, coder: CoderSpec) -> np.dtype | None:
        want = self.symbol_dtype(stream, dtype)
        return np.dtype(np.int64) if want is None and not coder.narrows else want

    def code_stream(self, stream: str, symbols: np.ndarray, coder: CoderSpec,
                    kept: tuple[tuple, bytes] | None = None) -> tuple[bytes, np.ndarray]:
        """Stream `stream`'s bytes under `coder` and the symbols as coded: handed over as a file holds them,
        integers widened to int64 for a coder that does its arithmetic there. The one hand-over, for writing and
        for automatic mode's choice of a coder per tensor. `kept`: (digest() of the symbols as coded, their
        bytes) from an earlier hand-over of this stream under this spec (automatic mode's choice): taken where
        the symbols have that digest, so the bytes are those of coding again, without the coding."""
        if symbols.dtype.kind == "i" and not coder.narrows:
            symbols = symbols.astype(np.int64)
        if kept is not None and isinstance(symbols, np.ndarray) and kept[0] == digest(symbols):
            return kept[1], symbols
        return coder.encode(symbols, self.trellis(stream, symbols.shape)), symbols

    def reconstruct(self, t: TensorData) -> np.ndarray:
        """What a reader will decode, by quantizing only (coding too where a coder is lossy)."""
        q = self.quantize(t, np)
        if any(self.coder_for(name).lossy for name in q.symbols):
            return self.encode(t).recon
        return q.recon

    # ---- description ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            params[f.name] = v.to_dict() if isinstance(v, CoderSpec) else v
        return {"method": self.name, "version": self.version, **params}

    def __str__(self) -> str:
        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                          if getattr(self, f.name) is not None)
        return f"{self.name}:{params}" if params else self.name


# a tensor's streams coded before under one spec: stream -> (digest() of its symbols as coded, its bytes)
Coded = dict[str, tuple[tuple, bytes]]


def digest(symbols: np.ndarray) -> tuple:
    """What a stream's bytes under a given spec and coder depend on: its symbols' dtype, shape and values
    (XXH3-64 of them, by the native engine: tens of GB/s, nothing beside coding them)."""
    from zoocodec.codecs import native

    a = np.ascontiguousarray(symbols)
    return a.dtype.str, a.shape, native.engine().xxh3(a.reshape(-1).view(np.uint8))


def default_bits(spec: MethodSpec) -> None:
    """The quantizers' step-or-bits convention: neither given means 8 bits (call in __post_init__)."""
    if spec.bits is None and spec.step is None:
        object.__setattr__(spec, "bits", 8)


CAPABILITIES = ("lossless", "gpu", "batch_on_cpu", "steppable", "grouped_steps", "rounds_nearest", "shared_grid",
                "gpu_decode")

STEP_OR_BITS: dict[str, Range] = {"step": positive(), "bits": ints(2, 16)}  # the quantizers' two ways to a step


def check_step_or_bits(spec: MethodSpec) -> None:
    """Not both of step and bits (their ranges: STEP_OR_BITS)."""
    if spec.step is not None and spec.bits is not None:
        raise SpecError(f"{spec.name}: give either step or bits, not both")


def nested_coder(params: dict[str, Any]) -> dict[str, Any]:
    """Upgrade from version 1, whose `coder` was its name as text, to 2, where it is the coder's JSON."""
    if isinstance(params.get("coder"), str):
        params["coder"] = parse_coder(params["coder"]).to_dict()
    return params


def spec_from_dict(d: dict[str, Any]) -> MethodSpec:
    """The inverse of MethodSpec.to_dict; rejects unknown methods, newer versions and unknown
    fields (older versions are upgraded: MethodSpec.upgrade)."""
    cls, params = METHODS.from_dict(d)
    for key in spec_fields(cls) & set(params):
        if not isinstance(params[key], dict):
            raise SpecError(f"method {cls.name!r}: {key} must be a coder spec dict, got {params[key]!r}")
        params[key] = coder_from_dict(params[key])
    return build(cls, params)


def parse_spec(text: str | MethodSpec) -> MethodSpec:
    """'uniform', 'uniform:bits=6', 'uniform:step=0.002,coder=video-hevc(crf=18)' -> a spec."""
    if isinstance(text, MethodSpec):
        text.validate()
        return text
    if not isinstance(text, str):
        raise SpecError(f"not a method spec: {text!r}")
    name, _, rest = text.strip().partition(":")
    cls = METHODS.lookup(name.strip())
    return build(cls, text_params(cls, rest, text))


def nested_text(spec: MethodSpec) -> str:
    """A spec as the text a wrapping method's `then` holds: commas become ';' so it nests in a spec string."""
    return str(spec).replace(",", ";")


def inner_method(outer: MethodSpec) -> MethodSpec:
    """The method a wrapper (prune, sequence) hands its values to, parsed from its `then` text."""
    if not isinstance(outer.then, str):
        raise SpecError(f"{outer.name}: then must be a method spec text, got {outer.then!r}")
    spec = parse_spec(outer.then.replace(";", ","))
    if isinstance(spec, type(outer)):
        raise SpecError(f"{outer.name}: the inner method cannot be {outer.name} again")
    return spec
