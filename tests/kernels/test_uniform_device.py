"""The device-resident uniform quantizer (kernels/uniform.cu): its algorithm, transliterated to
NumPy leaf by leaf, gives the native CPU path's symbols and statistics bit for bit; on a GPU
the kernel itself is checked against the CPU (marker gpu); the .cu compiles for sm_90."""

import numpy as np
import pytest

from zoocodec.kernels import uniform as K
from zoocodec.methods import TensorData, parse_spec
from zoocodec.methods.uniform import load_steps


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 136, 1000, 32769, 300007])
def test_leaf_sums_added_up_the_tree_equal_np_sum(n):
    v = np.random.default_rng(n).laplace(0, 1, n)
    start, count, splits = K.leaves(n)
    assert count.sum() == n and (count <= K.PW_BLOCK).all()
    assert K.combine(K.leaf_sums(v, start, count), splits) == float(np.sum(v))


@pytest.mark.parametrize("n", [0, 1, 128, 129, 16383, 16384, 16385, 32776, 100003, 300007, (1 << 20) + 17])
def test_the_tree_cut_at_nodes_gives_np_sum(n):
    """pairwise_nodes' loop (transliterated) below nodes of NODE values, combine above: np.sum's float."""
    v = np.random.default_rng(n).laplace(0, 1, n) ** 3
    start, count, node_count, first, splits = K.tree(n)
    assert int(node_count.sum()) == n and (node_count <= K.NODE).all()
    assert first.size == 0 or first[-1] + K.leaf_count(int(node_count[-1])) == start.size
    assert K.tree_sums_emulated([v], n) == [float(np.sum(v))]


def cases():
    g = np.random.default_rng(5)
    w = g.laplace(0, 0.02, (300, 1100)).astype(np.float32)
    w[0, :7] = [0.0, -1e-9, 1e-9, -0.0, 0.3, -0.3, 0.0]
    for dtype in ("float32", "bfloat16"):
        a = w if dtype == "float32" else (w.view(np.uint32) >> 16).astype(np.uint16)
        for text in ("uniform:bits=8", "uniform:bits=12", "uniform:step=1e-6", "uniform:bits=4,per_tensor=true"):
            yield TensorData("w", dtype, a), parse_spec(text)


def flat_bits(t: TensorData) -> np.ndarray:
    a = np.ascontiguousarray(t.array).reshape(-1)
    return a.view(np.uint32) if t.dtype == "float32" else a


@pytest.mark.parametrize("t, spec", list(cases()))
def test_emulated_kernel_gives_the_cpu_symbols_and_statistics(t, spec):
    q = spec.quantize(t)  # the native CPU path
    steps = load_steps(q, t.array.shape, "uniform")
    cols = t.array.shape[1] if steps.size > 1 else t.array.size
    symbols, (err2, power, max_err) = K.quantize_emulated(flat_bits(t), t.dtype, steps, cols,
                                                          q.symbols["symbols"].dtype)
    assert np.array_equal(symbols, q.symbols["symbols"].reshape(-1))
    n = t.array.size
    assert (err2 / n, max_err, power / n) == (q.stats.mse, q.stats.max_err, q.stats.power)


@pytest.mark.gpu
@pytest.mark.parametrize("t, spec", list(cases()))
def test_device_path_equals_the_cpu(t, spec):
    cupy = pytest.importorskip("cupy")
    cpu = spec.quantize(t)
    gpu = spec.quantize_many([t], cupy, recon=True)[0]
    assert np.array_equal(cupy.asnumpy(gpu.symbols["symbols"]), cpu.symbols["symbols"])
    assert cupy.asnumpy(gpu.recon).tobytes() == cpu.recon.tobytes()
    assert gpu.stats == cpu.stats and gpu.side == cpu.side and gpu.arrays == cpu.arrays
