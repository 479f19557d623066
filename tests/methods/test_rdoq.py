"""RDOQ: exact round trips, lam=0 is plain rounding, lower D + lam*R than rounding on real weights."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import zoocodec
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import rdoq as R
from zoocodec.methods import TensorData, parse_spec, spec_from_dict
from zoocodec.methods.rdoq import DQ, RDOQ
from zoocodec.pipeline.core import load
from zoocodec.tuning.allocate import allocate


def tensor(path, name: str) -> TensorData:
    return next(t for t in load(path).tensors() if t.name == name)


@pytest.fixture(scope="module")
def fc(mnist_path):
    return tensor(mnist_path, "fc_layers.0.weight")


@pytest.fixture(scope="module")
def attn(minilm_path):
    return tensor(minilm_path, "encoder.layer.1.attention.output.dense.weight")


def round_trip(spec: RDOQ, t: TensorData) -> tuple[np.ndarray, int]:
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.tobytes() == enc.recon.tobytes()
    return back, sum(len(v) for v in enc.segments.values())


@pytest.mark.parametrize("text", ["rdoq:step=0.02,coder=ans", "rdoq:step=0.02,coder=ctx,lam=0.3,iters=3",
                                  "rdoq:bits=4", "rdoq:step=0.01,group_steps=none", "dq:step=0.01,coder=ctx",
                                  "dq:step=0.01,lam=0,coder=ans", "dq:step=0.01,axis=0,coder=cabac",
                                  "dq:step=0.01,axis=1,lam=0,coder=ctx"])
def test_round_trip_is_exact_and_levels_are_multiples_of_the_step(fc, text):
    spec = parse_spec(text)
    back, _ = round_trip(spec, fc)
    steps = spec.row_steps(fc.float64())
    levels = back.astype(np.float64) / steps[:, None]
    assert np.allclose(levels, np.rint(levels), atol=1e-3)
    assert spec_from_dict(spec.to_dict()) == spec


def test_lam_zero_is_uniform_rounding(fc):
    back, _ = round_trip(RDOQ(step=0.02, lam=0.0), fc)
    assert np.array_equal(back, parse_spec("uniform:step=0.02").encode(fc).recon)


@pytest.mark.parametrize("cls", [RDOQ, DQ])
def test_dtypes_and_small_shapes(cls):
    g = np.random.default_rng(0)
    for dtype in ("float32", "float16"):
        for shape in [(0,), (7,), (3, 5), (4, 2, 3, 3), (1, 1)]:
            w = g.laplace(0, 0.1, shape).astype(dtype)
            back, _ = round_trip(cls(step=0.05, lam=0.5), TensorData("w", dtype, w))
            # rdoq moves a level at most one step; dq's two quantizers are spaced two steps
            bound = 0.05 * (1 if cls is RDOQ else 2) + 1e-3
            assert back.shape == shape and np.all(np.abs(back.astype(np.float64) - w) <= bound)


def sqnr_and_bits(t: TensorData, spec) -> tuple[float, int]:
    back, nbytes = round_trip(spec, t)
    w = t.float64()
    return 10 * np.log10((w**2).sum() / ((w - back.astype(np.float64)) ** 2).sum()), 8 * nbytes


@pytest.mark.parametrize("which", ["fc", "attn"])
def test_dq_beats_plain_rounding_at_equal_distortion(which, request):
    t = request.getfixturevalue(which)
    step = float(np.sqrt(np.mean(t.float64() ** 2))) / 8
    dq_sqnr, dq_bits = sqnr_and_bits(t, DQ(step=step, coder="ans"))
    lo, hi = step, 4 * step  # the coarsest uniform step that still reaches dq's SQNR
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sqnr_and_bits(t, RDOQ(step=mid, iters=0, coder="ans"))[0] >= dq_sqnr else (lo, mid)
    uniform_sqnr, uniform_bits = sqnr_and_bits(t, RDOQ(step=lo, iters=0, coder="ans"))
    assert uniform_sqnr >= dq_sqnr
    assert dq_bits < 0.97 * uniform_bits


def dlr(t: TensorData, spec: RDOQ) -> float:
    """D + lam*R in step^2 units, R the real coded bits (tables and side info included)."""
    back, nbytes = round_trip(spec, t)
    d = (((t.float64() - back.astype(np.float64)) / spec.step) ** 2).sum()
    return d + spec.lam * 8 * nbytes


@pytest.mark.parametrize("coder", ["ans", "ctx"])
@pytest.mark.parametrize("which, step", [("fc", 2.0**-4), ("attn", 2.0**-5)])
def test_beats_plain_rounding_in_d_plus_lam_r(which, step, coder, request):
    t = request.getfixturevalue(which)
    lam = 0.3
    rdoq = dlr(t, RDOQ(step=step, lam=lam, coder=coder))
    rounding = dlr(t, RDOQ(step=step, lam=lam, iters=0, coder=coder))  # iters=0: nearest levels, same coder
    assert rdoq < 0.995 * rounding


def test_ctx_rate_model_is_used_with_ctx_coder(fc):
    _, ans_bytes = round_trip(RDOQ(step=2.0**-4, lam=0.3, coder="ans"), fc)
    _, ctx_bytes = round_trip(RDOQ(step=2.0**-4, lam=0.3, coder="ctx"), fc)
    assert ctx_bytes < ans_bytes


def test_group_steps_from_allocation_round_trip(mnist_path, tmp_path):
    plan = allocate(mnist_path, base_step=0.02, method="rdoq:lam=0.2",
                    sensitivities={"fc_layers.0.weight": [1.0, 4.0, 16.0, 64.0]})
    spec = plan["fc_layers.0.weight"]
    assert spec.group_steps and len(spec.group_steps) == 4 and spec.group_steps[0] > spec.group_steps[-1]
    zoocodec.compress(mnist_path, tmp_path / "m.zc", plan=plan)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        back = a.read("fc_layers.0.weight").astype(np.float64)
    w = tensor(mnist_path, "fc_layers.0.weight").float64()
    err = np.abs(back - w).max(axis=1)
    assert err[:64].max() > err[-64:].max()  # the sensitive rows get the finer step


def test_damaged_steps_raise_container_error(fc):
    spec = RDOQ(bits=6)
    enc = spec.encode(fc)
    with pytest.raises(ContainerError):
        spec.decode({}, {"symbols": enc.segments["symbols"], "steps": b"\0\0\0\0"}, fc.array.shape, fc.dtype)
    with pytest.raises(ContainerError):
        spec.decode({}, {"symbols": enc.segments["symbols"]}, fc.array.shape, fc.dtype)


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("shape", [(48, 20), (20, 48)])
def test_dq_walks_along_its_axis(shape, axis):
    """axis=0: each column is a walk, 1: each row, unset: the shorter side; the header keeps the unset axis out."""
    w = np.random.default_rng(1).normal(0, 0.1, shape).astype(np.float32)
    spec = DQ(step=0.02, lam=0.0, axis=axis)
    columns = shape[1] > shape[0] if axis is None else axis == 0
    assert spec.trellis("symbols", shape) == (0 if columns else 1)
    enc = spec.encode(TensorData("w", "float32", w))
    levels = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, shape, "float32") / 0.02
    k = np.rint(levels)
    walked = R.dq_trellis((w / 0.02).T if columns else w / 0.02, np.zeros(shape[::-1] if columns else shape,
                          dtype=np.int64), 0, np.zeros((1, 1, 1)), 0.0, np)
    assert np.array_equal(k, R.dq_dequantize(walked, np).T if columns else R.dq_dequantize(walked, np))
    assert ("axis" in spec.to_dict()) is (axis is not None) and spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("coder", ["ans", "ctx", "cabac"])
def test_a_file_of_either_walk_decodes_on_the_native_pass(coder, tmp_path):
    """Tall, wide and square matrices walked by columns and by rows: decompress and load (the native decoding
    pass, its dq walks side by side) give the method's own reconstruction."""
    import torch

    g = np.random.default_rng(2)
    w = {k: torch.from_numpy(g.normal(0, 0.1, s).astype(np.float32)) for k, s in
         (("tall", (300, 40)), ("wide", (40, 300)), ("square", (64, 64)))}
    for axis in (0, 1):
        plan = {k: parse_spec(f"dq:step=0.02,axis={axis},lam=0.1,coder={coder}") for k in w}
        out = tmp_path / f"m{axis}.zc"
        zoocodec.compress(w, out, plan=plan)
        decoded, loaded = zoocodec.decompress(out), zoocodec.load(out)
        for k, t in w.items():
            own = plan[k].encode(TensorData(k, "float32", t.numpy())).recon
            assert np.array_equal(decoded[k].numpy(), own) and np.array_equal(loaded[k].numpy(), own), (axis, k)


@pytest.mark.parametrize("text", ["rdoq:step=0.1,bits=4", "rdoq:step=-1", "rdoq:lam=-0.1", "rdoq:iters=11",
                                  "rdoq:coder=nope", "rdoq:bits=1", "dq:axis=2", "dq:axis=-1"])
def test_bad_parameters(text):
    with pytest.raises(SpecError):
        parse_spec(text)


@pytest.mark.gpu
def test_gpu_kernel_gives_the_cpu_symbols(fc):
    cupy = pytest.importorskip("cupy")
    from zoocodec.codecs import context
    from zoocodec.kernels import get_xp
    from zoocodec.kernels.backend import gpu_available

    if not gpu_available():  # CuPy installed, no GPU
        pytest.skip("no CUDA GPU")

    xp = get_xp("gpu")
    x = context.matrix_view(fc.float64()) / 2.0**-5
    q = np.rint(x).astype(np.int64)
    table = context.entropy_model(q).rates(q)
    ctx, origin, bits = table.ctx, table.origin, table.stateless
    cpu = R.decide(x, ctx, origin, bits, 0.3, np)
    gpu = R.decide(xp.asarray(x), xp.asarray(ctx), origin, xp.asarray(bits), 0.3, xp)
    assert isinstance(gpu, cupy.ndarray)
    assert np.array_equal(cpu, gpu.get())
    cpu = R.dq_trellis(x, ctx, origin, bits, 0.3, np)
    gpu = R.dq_trellis(xp.asarray(x), xp.asarray(ctx), origin, xp.asarray(bits), 0.3, xp)
    assert np.array_equal(cpu, gpu.get())
    assert np.array_equal(R.dq_dequantize(cpu, np), R.dq_dequantize(gpu, xp).get())


def test_trellis_takes_rates_per_state(fc):
    """A model may price levels by the dq state they are coded in (bits[context, state, level]):
    four equal state tables give the stateless choice; a state that makes non-zero levels
    expensive changes it."""
    from zoocodec.codecs import context

    x = context.matrix_view(fc.float64())[:64] / 0.01
    q = np.rint(x).astype(np.int64)
    table = context.Ctx().model(q).rates(q)
    plain = R.dq_trellis(x, table.ctx, table.origin, table.stateless, 0.3, np)
    four = np.repeat(table.bits, 4, axis=1)
    assert np.array_equal(R.dq_trellis(x, table.ctx, table.origin, four, 0.3, np), plain)
    costly = four.copy()
    costly[:, 2:, :] += 4.0  # the Q1 states: every level there costs four more bits
    costly[:, 2:, -table.origin] -= 4.0  # except zero
    other = R.dq_trellis(x, table.ctx, table.origin, costly, 0.3, np)
    assert not np.array_equal(other, plain)
    assert np.abs(R.dq_dequantize(other, np) - x).max() < 4  # still a valid walk of the same machine


def _walk(k: np.ndarray) -> np.ndarray:
    """The dq state machine written out: each row from state 0 (kernels/rdoq.NEXT_STATE)."""
    out = np.empty(k.shape, dtype=np.float64)
    for r in range(k.shape[0]):
        state = 0
        for c in range(k.shape[1]):
            v = int(k[r, c])
            out[r, c] = float(2 * v if state < 2 else 2 * v - (v > 0) + (v < 0))
            state = R.NEXT_STATE[state][v & 1]
    return out


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
                  elements=st.integers(-(2**40), 2**40)), st.booleans())
@settings(max_examples=120, deadline=None)
def test_native_dq_walk_is_the_state_machine(k, by_column):
    """dq_dequantize on the CPU (the native walk) reconstructs what the state machine gives, walking rows
    or columns."""
    got = R.dq_dequantize(k, np, by_column)
    want = _walk(k.T).T if by_column else _walk(k)
    assert got.dtype == np.float64 and np.array_equal(got, want)
