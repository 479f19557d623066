"""uniform with group-wise steps and zero points: round trips, the Q4_1 grid, hostile side info."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import zoocodec
from tests.support import gpu_job
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import TensorData, parse_spec, spec_from_dict


def round_trip(spec, t: TensorData):
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()  # the decoder returns what the encoder reported
    return enc, back


def group_bound(spec, w: np.ndarray) -> np.ndarray:
    """Half of each weight's own group step (the largest |error| nearest rounding allows)."""
    rows = w.shape[0] if w.ndim >= 2 and w.shape[0] else 1
    m = w.reshape(rows, -1).astype(np.float64)
    out = np.empty_like(m)
    for j in range(0, m.shape[1], spec.group):
        g = m[:, j : j + spec.group]
        if spec.step is not None:
            step = np.full(rows, spec.step)
        elif spec.zero:
            step = np.maximum(g.max(1) - g.min(1), 0) / ((1 << spec.bits) - 1)
        else:
            step = np.abs(g).max(1) / ((1 << (spec.bits - 1)) - 1)
        out[:, j : j + spec.group] = step[:, None] * (1 + 2.0**-9) / 2  # float16 rounding of the step
    return out.reshape(w.shape)


floats = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40),
    elements=st.floats(-100, 100, width=16),
)


@given(floats, st.sampled_from([4, 5, 32, 48]), st.integers(2, 8), st.booleans())
@settings(max_examples=150, deadline=None)
def test_error_at_most_half_a_group_step(a, group, bits, zero):
    spec = parse_spec(f"uniform:bits={bits},group={group},zero={zero}")
    enc, back = round_trip(spec, TensorData("t", str(a.dtype), a))
    w, r = a.astype(np.float64), back.astype(np.float64)
    ulp = np.spacing(np.abs(w).astype(a.dtype)).astype(np.float64)
    assert np.all(np.abs(w - r) <= group_bound(spec, w) + ulp + 1e-300)


@pytest.mark.parametrize("cols", [96, 100, 31])  # the last group shorter when 32 does not divide the row
def test_symbols_stay_within_the_bit_width(cols):
    w = np.random.default_rng(cols).laplace(0, 0.02, (16, cols)).astype(np.float32)
    t = TensorData("w", "float32", w)
    for zero, lo, hi in ((False, -7, 7), (True, 0, 15)):
        q = parse_spec(f"uniform:bits=4,group=32,zero={zero}").quantize(t)
        s = q.symbols["symbols"]
        assert lo <= s.min() and s.max() <= hi and s.max() == hi  # the range is used, and never left
        assert q.side == {"rows": 16, "groups": -(-cols // 32)}


def test_q4_1_weights_are_reproduced_exactly():
    """Weights dequantized from 32-weight Q4_1 blocks (fp16 scale d and minimum m, fp32 d*q + m as
    ggml computes it) come back bit for bit: GGUF-derived models keep their grid."""
    g = np.random.default_rng(1)
    rows, cols = 48, 256
    q = g.integers(0, 16, (rows, cols))
    q[:, ::32], q[:, 1::32] = 0, 15  # every block spans its levels, as a quantizer's blocks do
    d = g.uniform(1e-3, 5e-2, (rows, cols // 32)).astype(np.float16).astype(np.float32)
    m = -(g.uniform(0, 0.4, (rows, cols // 32))).astype(np.float16).astype(np.float32)
    w = np.repeat(d, 32, axis=1) * q.astype(np.float32) + np.repeat(m, 32, axis=1)
    enc, back = round_trip(parse_spec("uniform:bits=4,group=32,zero=true"), TensorData("w", "float32", w))
    assert np.array_equal(back, w)
    assert enc.stats.mse == 0


def test_bfloat16_and_step_mode():
    g = np.random.default_rng(2)
    w = g.laplace(0, 0.02, (8, 70)).astype(np.float32)
    bf = (w.view(np.uint32) >> 16).astype(np.uint16)
    enc, _ = round_trip(parse_spec("uniform:bits=6,group=16"), TensorData("w", "bfloat16", bf))
    assert set(enc.segments) == {"symbols", "group_steps"}
    enc, back = round_trip(parse_spec("uniform:step=0.01,group=16,zero=true"), TensorData("w", "float32", w))
    assert set(enc.segments) == {"symbols", "group_zeros"} and enc.side["step"] == 0.01
    assert np.abs(back.astype(np.float64) - w).max() <= 0.005 * (1 + 1e-6)


def test_side_values_outside_float16_fall_back_to_float32():
    w = np.array([[1e6, -3e5, 2.0, 1.0] * 4, [1e-9, 2e-9, -1e-9, 0.0] * 4], dtype=np.float32)
    enc, back = round_trip(parse_spec("uniform:bits=8,group=8,zero=true"), TensorData("w", "float32", w))
    assert np.all(np.abs(back.astype(np.float64) - w) <= np.repeat([[1.3e6 / 255 / 2], [3e-9 / 255 / 2]], 16, 1) * 1.01)


def test_empty_tensors_and_one_dimensional_rows():
    for shape in [(0, 5), (0,), (7,), (1, 100)]:
        w = np.linspace(-1, 1, int(np.prod(shape))).astype(np.float32).reshape(shape)
        round_trip(parse_spec("uniform:bits=4,group=8,zero=true"), TensorData("w", "float32", w))


@pytest.mark.parametrize("text", ["uniform:group=2", "uniform:group=1000000", "uniform:zero=true",
                                  "uniform:bits=4,group=32,per_tensor=true", "uniform:group=x"])
def test_bad_group_specs_are_rejected(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_ungrouped_specs_keep_their_header_and_text():
    spec = parse_spec("uniform:bits=6")
    assert "group" not in spec.to_dict() and str(spec) == "uniform:bits=6,per_tensor=False,coder=ans"
    grouped = parse_spec("uniform:bits=4,group=64,zero=true")
    assert spec_from_dict(grouped.to_dict()) == grouped
    with pytest.raises(SpecError):  # methods that borrow uniform's per-row steps refuse groups
        grouped.steps_for(np.ones((4, 64)))


def hostile(enc, **changes):
    side = {**enc.side, **changes.pop("side", {})}
    segments = {k: memoryview(v) for k, v in enc.segments.items()}
    segments.update(changes)
    return side, {k: v for k, v in segments.items() if v is not None}


def test_hostile_side_info_is_a_container_error():
    spec = parse_spec("uniform:bits=4,group=32,zero=true")
    w = np.random.default_rng(3).laplace(0, 0.02, (16, 100)).astype(np.float32)
    enc = spec.encode(TensorData("w", "float32", w))
    coder = spec.coder_for("group_steps")
    bad_steps = [np.full(64, -1.0, np.float32), np.full(64, np.nan, np.float32), np.ones(63, np.float32)]
    cases = [hostile(enc, side={"rows": 8}), hostile(enc, side={"groups": 5}), hostile(enc, side={"rows": "16"}),
             hostile(enc, group_steps=b"\x00garbage"), hostile(enc, side={"symbols": {"symbols": [16, 100]}})]
    cases += [hostile(enc, side={"symbols": {**enc.side["symbols"], "group_steps": [s.size]}},
                      group_steps=memoryview(coder.encode(s.view(np.uint32)))) for s in bad_steps]
    for side, segments in cases:
        with pytest.raises(ContainerError):
            spec.decode(side, segments, w.shape, "float32")
        job = spec.fused(side, segments, w.shape, "float32")  # the GPU decoder's description checks them too
        if job is not None and set(side["symbols"]) == {job.stream, *job.sides}:
            with pytest.raises(ContainerError):
                job.values()


def test_compress_counts_the_side_info_and_the_gpu_decoder_takes_it(tmp_path):
    g = np.random.default_rng(4)
    model = {"a.weight": g.laplace(0, 0.02, (64, 96)).astype(np.float32),
             "b.weight": g.laplace(0, 0.02, (32, 200)).astype(np.float32)}
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in model.items()}
    report = zoocodec.compress(tensors, tmp_path / "m.zc", "uniform:bits=4,group=32,zero=true")
    info = zoocodec.inspect(tmp_path / "m.zc")
    back = zoocodec.decompress(tmp_path / "m.zc")
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        for name in model:
            e = a.entries[name]
            assert set(e["segments"]) == {"symbols", "group_steps", "group_zeros"}
            assert report.tensors[[t.name for t in report.tensors].index(name)].bytes_out == sum(
                s[1] for s in e["segments"].values())
            assert gpu_job(a, name).group == 32  # plan.Grouped, which the CPU's native pass takes too
            err = np.abs(back[name].numpy().astype(np.float64) - model[name]).max()
            assert err <= e["stats"]["max_err"] * (1 + 1e-9) and err > 0
    assert info["bits_per_weight"] > 4  # 4-bit symbols (entropy-coded) plus a step and a zero per 32 weights


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("text", ["uniform:bits=4,group=32", "uniform:bits=4,group=32,zero=true",
                                  "uniform:bits=8,group=48,zero=true", "uniform:step=0.001,group=16,zero=true",
                                  "uniform:bits=12,group=64"])
def test_native_groups_equal_the_array_path(dtype, text):
    from zoocodec.methods.arrays import error_stats

    w = np.random.default_rng(6).laplace(0, 0.02, (37, 300)).astype(np.float32)
    w[0, :5] = [0.0, -1e-9, 1e-9, 0.0, -0.0]
    t = TensorData("w", dtype, w if dtype == "float32" else (w.view(np.uint32) >> 16).astype(np.uint16))
    spec = parse_spec(text)
    native = spec.quantize(t)
    m = t.matrix()
    rows, cols = m.shape
    steps = native.symbols.get("group_steps")
    zeros = native.symbols.get("group_zeros")
    steps = None if steps is None else steps.view("<f4").astype(np.float64).reshape(rows, -1)
    zeros = None if zeros is None else zeros.view("<f4").astype(np.float64).reshape(rows, -1)
    symbols = np.empty(m.shape, dtype=native.symbols["symbols"].dtype)
    recon = np.empty(m.shape, dtype=t.array.dtype)
    from zoocodec.methods.arrays import row_blocks
    from zoocodec.methods.uniform import _group_block

    spec._quantize_group_blocks(t, m, list(row_blocks(rows, cols, limit=_group_block(spec.group))), steps, zeros,
                                symbols, recon, np)
    assert np.array_equal(symbols.reshape(t.array.shape), native.symbols["symbols"])
    assert recon.tobytes() == native.recon.tobytes()
    assert native.stats == error_stats(t, recon)


@pytest.mark.parametrize("cols, group", [(300, 32), (96, 32), (7, 4), (1000, 128)])
def test_native_group_ranges_equal_numpy(cols, group):
    from zoocodec.codecs.native import engine
    from zoocodec.kernels import uniform as K

    w = np.random.default_rng(cols).laplace(0, 0.02, (9, cols)).astype(np.float32)
    count = K.group_count(cols, group)
    lo, hi = np.empty(9 * count), np.empty(9 * count)
    engine().group_ranges(w.reshape(-1).view(np.uint32), 0, cols, group, lo, hi)
    want_lo, want_hi = K.group_ranges(w.astype(np.float64), group, np)
    assert np.array_equal(lo.reshape(9, count), want_lo) and np.array_equal(hi.reshape(9, count), want_hi)


@given(floats, st.sampled_from([4, 32]), st.integers(2, 8), st.integers(3, 10))
@settings(max_examples=100, deadline=None)
def test_side_values_at_less_precision_round_trip_within_the_levels(a, group, bits, side):
    """side=M: symbols stay in 0..2^B-1, the decoder rebuilds the encoder's steps and zero points, and the
    error stays within half a step plus the side values' own rounding (a step to M mantissa bits, the centre to
    step/2^(M-2)). (Quantizing the reconstruction again need not give it back where a step grew by a code: GPTQ's
    pinned group ends do, tests/tuning/test_gptq.py.)"""
    spec = parse_spec(f"uniform:bits={bits},group={group},zero=true,side={side}")
    t = TensorData("t", str(a.dtype), a)
    enc, back = round_trip(spec, t)
    q = spec.quantize(t)
    if a.size:
        s = q.symbols["symbols"]
        assert 0 <= s.min() and s.max() <= (1 << bits) - 1
    w, r = a.astype(np.float64), back.astype(np.float64)
    ulp = np.spacing(np.abs(w).astype(a.dtype)).astype(np.float64)
    slack = 1 + 2.0 ** (1 - side) * (1 << bits)  # a step up to 2^-M larger, and up to 2^-M of it per level
    assert np.all(np.abs(w - r) <= group_bound(spec, w) * slack + ulp + 1e-300)


def test_side_values_at_less_precision_are_integer_codes_under_ans():
    w = np.random.default_rng(7).laplace(0, 0.02, (64, 96)).astype(np.float32)
    exact = parse_spec("uniform:bits=4,group=32,zero=true").encode(TensorData("w", "float32", w))
    spec = parse_spec("uniform:bits=4,group=32,zero=true,side=5")
    enc, back = round_trip(spec, TensorData("w", "float32", w))
    assert set(enc.segments) == {"symbols", "group_step_codes", "group_centres"}
    side = sum(len(enc.segments[k]) for k in ("group_step_codes", "group_centres"))
    assert side < 0.8 * sum(len(exact.segments[k]) for k in ("group_steps", "group_zeros"))
    segments = {k: memoryview(v) for k, v in enc.segments.items()}
    steps, zeros = spec.fused(enc.side, segments, w.shape, "float32").values()
    symbols = spec.quantize(TensorData("w", "float32", w)).symbols["symbols"].astype(np.float64)
    rebuilt = symbols * np.repeat(steps.reshape(64, 3), 32, 1) + np.repeat(zeros.reshape(64, 3), 32, 1)
    assert rebuilt.astype(np.float32).tobytes() == back.tobytes()  # the GPU decoder's values give the CPU's weights
    mantissa = steps / np.exp2(np.floor(np.log2(steps)))
    assert np.array_equal(mantissa * 32, np.rint(mantissa * 32))  # 5 bits of mantissa


@pytest.mark.parametrize("text", ["uniform:bits=4,group=32,side=5", "uniform:step=0.01,group=32,zero=true,side=5",
                                  "uniform:bits=4,side=5", "uniform:bits=4,group=32,zero=true,side=2",
                                  "uniform:bits=4,group=32,zero=true,side=11"])
def test_bad_side_specs_are_rejected(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_specs_without_side_keep_their_header():
    spec = parse_spec("uniform:bits=4,group=32,zero=true")
    assert "side" not in spec.to_dict() and "side" not in str(spec)
    lossy = parse_spec("uniform:bits=4,group=32,zero=true,side=5")
    assert spec_from_dict(lossy.to_dict()) == lossy and lossy.to_dict()["side"] == 5


def test_hostile_side_codes_are_a_container_error():
    spec = parse_spec("uniform:bits=4,group=32,zero=true,side=5")
    w = np.random.default_rng(3).laplace(0, 0.02, (16, 100)).astype(np.float32)
    enc = spec.encode(TensorData("w", "float32", w))
    coder = spec.coder_for("group_step_codes")
    shapes = enc.side["symbols"]

    def codes(name, values):
        values = np.asarray(values, dtype=np.int64)
        return hostile(enc, side={"symbols": {**shapes, name: [values.size]}},
                       **{name: memoryview(coder.encode(values))})

    big_steps = codes("group_step_codes", np.full(64, 1020 * 32))  # 2^1020: finite, but not its zero points
    cases = [codes("group_step_codes", np.full(64, 1 << 40)), codes("group_step_codes", np.full(64, -(1 << 40))),
             codes("group_step_codes", np.full(64, 1030 * 32)), codes("group_step_codes", np.full(64, -1200 * 32)),
             hostile(enc, side=big_steps[0], group_step_codes=big_steps[1]["group_step_codes"]),
             codes("group_step_codes", np.zeros(63)),
             hostile(enc, group_centres=None), hostile(enc, group_step_codes=b"\x00garbage")]
    for side, segments in cases:
        with pytest.raises(ContainerError):
            spec.decode(side, segments, w.shape, "float32")
        job = spec.fused(side, segments, w.shape, "float32")
        if job is not None and set(side["symbols"]) == {job.stream, *job.sides} and set(job.sides) <= set(segments):
            with pytest.raises(ContainerError):
                job.values()


@given(st.integers(1, 6), st.integers(1, 80), st.sampled_from([1, 3, 16, 32, 64]), st.sampled_from(
    ["float32", "float16", "bfloat16"]), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_native_group_dequantize_rounds_as_numpy(rows, cols, group, dtype, per_group, with_zeros, seed):
    """The native group dequantization (a load's own decode of group=G) writes what symbol * step + zero
    in float64 rounded by from_float64 gives, bit for bit, and says where a value overflows the dtype."""
    from zoocodec.codecs import native
    from zoocodec.kernels import uniform as K
    from zoocodec.methods.arrays import from_float64
    from zoocodec.plan import KINDS

    g = np.random.default_rng(seed)
    groups = K.group_count(cols, group)
    symbols = g.integers(-40, 41, (rows, cols))
    steps = g.lognormal(-6, 2, (rows, groups)) if per_group else np.array(g.lognormal(-6, 2))
    zeros = g.normal(0, 0.1, (rows, groups)) if with_zeros else None
    want = from_float64(K.dequantize_groups(symbols, steps, zeros, group, np), dtype)
    out = np.empty((rows, cols), want.dtype)
    ok = native.engine().group_dequantize(symbols, steps if per_group else steps.reshape(1), zeros, group,
                                          KINDS[dtype], out.reshape(-1))
    assert ok and out.tobytes() == want.tobytes()
    big = np.full((rows, groups), 1e300)
    assert not native.engine().group_dequantize(symbols * 0 + 7, big, None, group, KINDS[dtype], out.reshape(-1))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=50), st.integers(1, 12))
def test_side_steps_are_the_codes_floats(codes, mant):
    """side_step(n) = (2^mant + n mod 2^mant) * 2^(n // 2^mant - mant), as a float64 (0 or inf past its range)."""
    from zoocodec.methods.uniform import side_step

    want = []
    for n in codes:
        try:
            want.append(math.ldexp((1 << mant) + n % (1 << mant), n // (1 << mant) - mant))
        except OverflowError:
            want.append(math.inf)
    assert side_step(np.array(codes, dtype=np.int64), mant).tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-1100, 1100), st.integers(0, 2**10 - 1), st.integers(-(2**40), 2**40)),
                min_size=1, max_size=50), st.integers(3, 10), st.integers(1, 16))
def test_side_values_are_the_codes_floats_near_float64s_limits(groups, mant, bits):
    """Step codes whose exponents reach float64's subnormals and overflow (the native step leaves its fast
    path there), and the zero points of centre codes: the values exact arithmetic rounds to; the decoder's
    side_values gives the same, and refuses exactly the codes compress could not have written."""
    from fractions import Fraction

    from zoocodec.codecs import native
    from zoocodec.methods.uniform import MAX_EXPONENT, side_step, side_zero

    codes = np.array([e * (1 << mant) + r % (1 << mant) for e, r, _ in groups], dtype=np.int64)
    centres = np.array([c for _, _, c in groups], dtype=np.int64)
    want = []
    for n in codes.tolist():
        try:
            want.append(math.ldexp((1 << mant) + n % (1 << mant), n // (1 << mant) - mant))
        except OverflowError:
            want.append(math.inf)
    steps = side_step(codes, mant)
    assert steps.tolist() == want
    frac = mant - 2
    zeros = side_zero(centres, steps, bits, frac)
    for z, c, st_ in zip(zeros.tolist(), centres.tolist(), want, strict=True):  # (c - K) * step / 2^frac, rounded twice
        if math.isfinite(st_):
            exact = Fraction(float(c - ((1 << bits) - 1) * (1 << (frac - 1)))) * Fraction(st_)
            try:
                prod = float(exact)
            except OverflowError:
                prod = math.inf if exact > 0 else -math.inf
            assert z == prod / (1 << frac)
    got_steps, got_zeros, ok = native.engine().side_values(codes, centres, mant, bits, MAX_EXPONENT)
    assert got_steps.tobytes() == steps.tobytes() and got_zeros.tobytes() == zeros.tobytes()
    fine = (np.abs(codes >> mant) <= MAX_EXPONENT).all() and (steps > 0).all() and np.isfinite(steps).all() \
        and np.isfinite(zeros).all()
    assert ok == bool(fine)
