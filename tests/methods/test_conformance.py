"""Every registered method, on every device, without a list to keep: the cases come from the
registry (each method's default spec and its declared `examples`), so a new method is covered
as soon as it registers.

Round trip (decode gives byte for byte the reconstruction encode reported) in fp32, fp16 and
bf16 and for empty and one-element tensors; a declared fused decoder equal to decode;
quantize_many equal to quantize; forged payloads and side info refused in one line
(ContainerError); the spec's JSON round trip and its version; the declared ranges and
capabilities hold; GPU equal to CPU.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conformance import outside, refused_in_one_line, same
from zoocodec import plan, schema
from zoocodec.errors import SpecError
from zoocodec.header import TensorEntry
from zoocodec.kernels.backend import gpu_available
from zoocodec.methods import REGISTRY, MethodSpec, TensorData, parse_spec, spec_from_dict
from zoocodec.methods.arrays import from_float64
from zoocodec.methods.lossless import native_dtype
from zoocodec.registry import range_of


def spec_texts() -> list[str]:
    return [text for name, cls in sorted(REGISTRY.items()) for text in (name, *cls.examples)]


SPECS = [pytest.param(text, id=text) for text in spec_texts()]
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.gpu)] if gpu_available() else [])


def namespace(device: str):
    if device == "cpu":
        return np
    if not gpu_available():
        pytest.skip("no CUDA device here")
    import cupy

    return cupy


def weights(shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> TensorData:
    """Laplacian weights with per-row scales, as trained layers look, in `dtype`'s native bits."""
    g = np.random.default_rng(seed)
    w = g.laplace(0, 0.05, shape) * (g.uniform(0.5, 2, (shape[0],) + (1,) * (len(shape) - 1)) if shape else 1)
    return TensorData("t", dtype, from_float64(w, dtype))


def round_trip(spec: MethodSpec, t: TensorData, xp=np):
    """(encoded, decoded), the side info passed through JSON as the header stores it."""
    enc = spec.encode(t, xp)
    side = json.loads(json.dumps(enc.side))
    out = spec.decode(side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    return enc, out


def check_round_trip(spec: MethodSpec, t: TensorData, xp=np) -> None:
    enc, out = round_trip(spec, t, xp)
    assert out.shape == t.array.shape and out.dtype == native_dtype(t.dtype)
    assert out.tobytes() == enc.recon.tobytes(), "decode differs from the reconstruction encode reported"
    if spec.lossless:
        assert out.tobytes() == t.array.tobytes()
    elif t.array.size:
        assert enc.stats is not None and enc.stats.mse < np.mean(t.float64() ** 2) + 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("text", SPECS)
def test_round_trip(text, dtype, device):
    check_round_trip(parse_spec(text), weights((12, 40), dtype), namespace(device))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("text", SPECS)
def test_fused_decode_equals_decode(text, dtype):
    """Where a method declares a fused decoder the native CPU pass runs (MethodSpec.fused,
    zoocodec/plan.py), it decodes byte for byte what the method's own decode does."""
    spec = parse_spec(text)
    for shape in [(12, 40), (40,), (3, 4, 10)]:
        enc, out = round_trip(spec, weights(shape, dtype))
        side = json.loads(json.dumps(enc.side))
        entry = TensorEntry("t", shape, dtype, spec, side, {})
        job = plan.fused_job(spec, entry, enc.segments)
        if job is None:
            continue
        outs, left = plan.decode([(entry, job, enc.segments[job.stream])])
        assert left or outs["t"].tobytes() == out.tobytes(), shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0,), (0, 8), (1,), (1, 1)], ids=str)
@pytest.mark.parametrize("text", SPECS)
def test_empty_and_one_element(text, shape, device):
    check_round_trip(parse_spec(text), weights(shape), namespace(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("text", SPECS)
def test_quantize_many_equals_quantize(text, device):
    """Each group batch_key forms, quantized together, gives every tensor what quantizing it alone gives."""
    spec, xp = parse_spec(text), namespace(device)
    xp = xp if spec.gpu else np
    ts = [weights(s, d, seed) for seed, (s, d) in enumerate(
        [((12, 40), "float32"), ((12, 40), "float32"), ((6, 40), "float32"), ((12, 24), "float32"),
         ((12, 40), "bfloat16"), ((40,), "float32")])]
    groups: dict = {}
    for t in ts:
        key = spec.batch_key(t)
        if key is not None:
            groups.setdefault(key, []).append(t)
    for group in groups.values():
        for t, q in zip(group, spec.quantize_many(group, xp), strict=True):
            assert same(q, spec.quantize(t, xp)), t.array.shape


FORGED_VALUES = [None, -1, 1e308, "x", [], {}, [[-1]]]


@pytest.mark.parametrize("text", SPECS)
def test_forged_payloads_and_side_info_are_refused_in_one_line(text):
    spec, t = parse_spec(text), weights((4, 30))  # (4 rows: a sequence of 4 members, each its own streams)
    enc = spec.encode(t)
    side = json.loads(json.dumps(enc.side))
    shape = t.array.shape

    def decode(side, segments):
        out = spec.decode(side, {k: memoryview(v) for k, v in segments.items()}, shape, t.dtype)
        assert out.shape == shape

    g = np.random.default_rng(1)
    for name, data in enc.segments.items():
        for cut in sorted({0, 1, len(data) // 2, max(len(data) - 1, 0)}):
            refused_in_one_line(lambda: decode(side, {**enc.segments, name: data[:cut]}))
        for _ in range(8 if data else 0):
            b = bytearray(data)
            for pos in g.integers(0, len(b), int(g.integers(1, 4))):
                b[pos] ^= int(g.integers(1, 256))
            refused_in_one_line(lambda: decode(side, {**enc.segments, name: bytes(b)}))
        refused_in_one_line(lambda: decode(side, {k: v for k, v in enc.segments.items() if k != name}))
    for key in side:
        refused_in_one_line(lambda: decode({k: v for k, v in side.items() if k != key}, enc.segments))
        for value in FORGED_VALUES:
            refused_in_one_line(lambda: decode({**side, key: value}, enc.segments))
    for stream in side.get("symbols", {}):
        for forged in ([], [12], [13, 40], [-1, 40], [2**40, 2**40]):
            refused_in_one_line(lambda: decode({**side, "symbols": {**side["symbols"], stream: forged}}, enc.segments))


@pytest.mark.parametrize("text", SPECS)
def test_spec_json_round_trip_and_versions(text):
    spec = parse_spec(text)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["method"] == spec.name and d["version"] == type(spec).version
    assert spec_from_dict(d) == spec == parse_spec(str(spec))
    assert schema.spec_of(d, "its header entry") == spec  # what a file's header reader accepts (JSON types)
    assert type(spec).upgrade(d, spec.version) == d
    with pytest.raises(SpecError, match="newer than this zoocodec"):
        spec_from_dict({**d, "version": spec.version + 1})


CLASSES = [pytest.param(cls, id=name) for name, cls in sorted(REGISTRY.items())]


@pytest.mark.parametrize("cls", CLASSES)
def test_declarations_hold(cls):
    """Name, version, upgrades, examples, ranges and capabilities say what the class does."""
    assert REGISTRY[cls.name] is cls and isinstance(cls.version, int) and cls.version >= 1
    assert all(1 <= v < cls.version for v in cls.upgrades)
    assert all(type(parse_spec(text)) is cls for text in cls.examples)
    default = parse_spec(cls.name)
    fields = {f.name for f in dataclasses.fields(cls)}
    for name in fields:
        r = range_of(cls, name)
        if r is not None and r.registry != "coder":
            with pytest.raises(SpecError, match=f"{name} must be|unknown method"):
                dataclasses.replace(default, **{name: outside(r)}).validate()
    if cls.steppable:
        stepped = default.with_step(0.25)
        assert {"step", "bits"} <= fields and stepped.step == 0.25 and stepped.bits is None
        check_round_trip(stepped, weights((12, 40)))
    else:
        with pytest.raises(SpecError):
            default.with_step(0.25)
    if cls.grouped_steps:
        assert default.with_step(0.25, (0.25, 0.5)).group_steps == (0.25, 0.5)
    if cls.rounds_nearest:  # values on the grid come back as their grid indices
        k = np.arange(-20, 20).reshape(4, 10)
        q = default.with_step(0.25).quantize(TensorData("t", "float32", (k * 0.25).astype(np.float32)))
        assert [s.ravel().tolist() for s in q.symbols.values()] == [k.ravel().tolist()]
    if cls.name != "sequence":  # a shared grid is what a sequence's delta coding needs from its inner method
        delta = f"sequence:mode=delta,then={cls.name}"
        if cls.shared_grid:
            members = TensorData("t", "float32", np.stack([weights((12, 40)).array] * 2))
            assert parse_spec(delta).on_grid
            check_round_trip(parse_spec(delta), members)
        else:
            with pytest.raises(SpecError):
                parse_spec(delta)


@pytest.mark.gpu
@pytest.mark.parametrize("text", SPECS if gpu_available() else [])  # (one skip without a GPU)
def test_gpu_equals_cpu(text):
    """Where a method declares a GPU quantizer, CuPy gives NumPy's symbols, side info and bytes."""
    spec, xp = parse_spec(text), namespace("cuda")
    if not spec.gpu:
        pytest.skip(f"{spec.name} declares no GPU quantizer")
    for dtype in ("float32", "bfloat16"):
        t = weights((12, 40), dtype)
        assert same(spec.quantize(t, xp), spec.quantize(t, np))
        assert spec.encode(t, xp).segments == spec.encode(t, np).segments
