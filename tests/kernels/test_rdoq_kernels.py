"""The rdoq/dq CUDA kernels (kernels/rdoq.cu): their algorithm, transliterated to NumPy on the
arrays the kernels are given, decides exactly the levels of the CPU path (codecs/native/rdoq.cpp),
on every call the methods make on real weights (several bit widths, lambdas, coders, stacked same-shape groups);
on a GPU the kernels themselves are checked against the CPU (marker gpu); the .cu compiles for sm_90."""
import re
from pathlib import Path

import numpy as np
import pytest

from zoocodec.kernels import rdoq as R
from zoocodec.methods import TensorData, parse_spec
from zoocodec.pipeline.core import load

SPECS = ["dq:bits=4,coder=ans", "dq:bits=6,coder=ctx", "dq:bits=8,coder=ctx,lam=0.5", "dq:bits=6,coder=cabac",
         "dq:step=0.004,coder=cabac,lam=0.05", "rdoq:bits=4,coder=ans,lam=0.3", "rdoq:bits=6,coder=ctx",
         "rdoq:bits=8,coder=cabac,lam=0.5"]


def weights(mnist_path) -> list[list[TensorData]]:
    """Groups of tensors quantized together: mnist-cnn's matrices alone, and three random
    Laplacian matrices of one shape (tall, and wide: dq walks their columns) stacked."""
    real = [t for t in load(mnist_path).tensors() if t.array.ndim >= 2]
    g = np.random.default_rng(3)
    groups = [[t] for t in real]
    for shape in ((96, 40), (24, 130)):
        groups.append([TensorData(f"r{i}", "float32", (g.laplace(0, 0.03, shape) * g.uniform(0.3, 3, (shape[0], 1)))
                                  .astype(np.float32)) for i in range(3)])
    return groups


def recorded_calls(monkeypatch, spec, group):
    """Every (function, args, CPU result) the method's quantize_many makes of decide / dq_trellis."""
    calls = []
    for name in ("decide", "dq_trellis"):
        real = getattr(R, name)

        def spy(*args, _real=real, _name=name):
            out = _real(*args)
            calls.append((_name, args[:5], out))
            return out

        monkeypatch.setattr(R, name, spy)
    spec.quantize_many(group)
    monkeypatch.undo()
    return calls


@pytest.mark.parametrize("text", SPECS)
def test_emulated_kernels_decide_the_cpu_levels(monkeypatch, mnist_path, text):
    spec = parse_spec(text)
    seen = 0
    for group in weights(mnist_path):
        for name, (x, ctx, origin, bits, lam), cpu in recorded_calls(monkeypatch, spec, group):
            emulate = R.decide_emulated if name == "decide" else R.dq_trellis_emulated
            assert np.array_equal(emulate(x, ctx, origin, bits, lam), cpu), (text, name, x.shape)
            seen += 1
    assert seen >= 2 * len(weights(mnist_path))  # at least the first pass and one refit per group


def test_emulated_trellis_with_rates_per_state_and_ties():
    """Four state tables that differ, integer-valued inputs (ties between candidates and
    between predecessors everywhere), a level outside the table, an empty matrix."""
    g = np.random.default_rng(1)
    x = np.rint(g.laplace(0, 3, (50, 70))) / 2
    x[0, :5] = [40.0, -40.0, 0.5, -0.5, 0.0]
    ctx = g.integers(0, 3, x.shape)
    bits = g.uniform(0, 6, (3, 4, 21)).round(1)
    bits[:, :, 10] = -0.0  # -log2(1) is -0.0
    for lam in (0.0, 0.15, 1.0):
        assert np.array_equal(R.dq_trellis_emulated(x, ctx, -10, bits, lam), R.dq_trellis(x, ctx, -10, bits, lam, np))
        assert np.array_equal(R.dq_trellis_emulated(x, ctx, -10, bits[:, :1], lam),
                              R.dq_trellis(x, ctx, -10, bits[:, 0], lam, np))
        assert np.array_equal(R.decide_emulated(x, ctx, -10, bits[:, 0], lam),
                              R.decide(x, ctx, -10, bits[:, 0], lam, np))
    empty = np.zeros((4, 0))
    assert R.dq_trellis_emulated(empty, empty.astype(int), 0, bits, 0.1).shape == (4, 0)


def test_kernel_predecessors_are_the_state_machines():
    """pred_state / pred_parity (the .cu's and the emulation's) list, for every next state, the
    (state, parity) pairs of NEXT_STATE that lead there, in dq_trellis's order."""
    preds = [[(s, p) for s in range(4) for p in (0, 1) if R.NEXT_STATE[s][p] == t] for t in range(4)]
    assert preds == [[(R.pred_state(t, i), R.pred_parity(t, i)) for i in (0, 1)] for t in range(4)]
    src = Path(R.__file__).with_name("rdoq.cu").read_text()
    assert "return 2 * (t & 1) + i;" in src and "return i ^ (t >> 1);" in src
    assert re.search(r"__dadd_rn\(__dmul_rn\(d, d\), __dmul_rn\(lam, rate\)\)", src)  # no FMA


@pytest.mark.gpu
@pytest.mark.parametrize("text", SPECS)
def test_device_kernels_decide_the_cpu_levels(mnist_path, text):
    """quantize_many on CuPy (the kernels) gives the CPU's symbols, group by group."""
    cupy = pytest.importorskip("cupy")
    from zoocodec.kernels.backend import gpu_available

    if not gpu_available():
        pytest.skip("no CUDA GPU")
    spec = parse_spec(text)
    for group in weights(mnist_path):
        for cpu, gpu in zip(spec.quantize_many(group), spec.quantize_many(group, cupy), strict=True):
            assert np.array_equal(cpu.symbols["symbols"], cupy.asnumpy(gpu.symbols["symbols"]))
            assert np.asarray(cpu.recon).tobytes() == cupy.asnumpy(gpu.recon).tobytes()
