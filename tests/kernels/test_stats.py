"""Error statistics made on the device (kernels/stats.cu) for kmeans' device-resident path: the
kernel's arithmetic transliterated to NumPy gives arrays.error_stats' floats and the host's
reconstruction bits from the codebook lookups; on a GPU, kmeans' quantize_many on CuPy gives the
CPU's indices, codebooks, reconstruction and statistics (marker gpu); the .cu compiles for sm_90
(tests/kernels/test_cuda_sources.py)."""

import numpy as np
import pytest

from zoocodec.kernels.stats import error_stats_emulated
from zoocodec.methods import TensorData, parse_spec
from zoocodec.methods.arrays import error_stats
from zoocodec.methods.kmeans import float32, problems


def cases():
    g = np.random.default_rng(9)
    w = g.laplace(0, 0.02, (130, 517)).astype(np.float32)
    w[0, :4] = [0.0, -0.0, 1e-9, -0.4]
    for dtype in ("float32", "bfloat16"):
        a = w if dtype == "float32" else (w.view(np.uint32) >> 16).astype(np.uint16)
        for text in ("kmeans:k=16", "kmeans:k=4,per=channel", "kmeans:k=8,per=block,block=1000",
                     "kmeans:k=16,codebook=float16"):
            yield TensorData("w", dtype, a), parse_spec(text)


CASES = list(cases())
IDS = [f"{t.dtype}-{s}" for t, s in CASES]


def lookups(t: TensorData, spec, q) -> np.ndarray:
    """Each weight's codebook value as float32, problem by problem (what the device's
    take_along_axis gives)."""
    book = np.frombuffer(q.arrays["codebook"], dtype="<f2" if spec.codebook == "float16" else "<f4")
    book = book.astype(np.float32).reshape(-1, spec.k)
    sizes = [size for count, size in problems(t.array.shape, spec.per, spec.block) for _ in range(count)]
    problem = np.repeat(np.arange(len(sizes)), sizes)
    return book[problem, q.symbols["indices"].astype(np.int64)]


@pytest.mark.parametrize("t, spec", CASES, ids=IDS)
def test_emulated_kernel_gives_the_cpu_statistics_and_reconstruction(t, spec):
    q = spec.quantize(t)  # the host path
    stats, bits = error_stats_emulated(float32(t).ravel(), lookups(t, spec, q), t.dtype)
    assert stats == error_stats(t, q.recon)
    assert bits.tobytes() == np.ascontiguousarray(q.recon).tobytes()


@pytest.mark.parametrize("per", ["tensor", "channel", "block"])
def test_device_results_put_each_part_back_in_its_tensor(per):
    """kmeans' device-side assembly (_device_results), run on NumPy arrays: tensors whose
    problems fall into groups of different sizes get the host path's indices, codebooks,
    reconstruction and statistics."""
    from zoocodec.kernels import kmeans as K

    g = np.random.default_rng(4)
    spec = parse_spec(f"kmeans:k=8,per={per},block=700")
    ts = [TensorData(f"w{i}", "float32", g.laplace(0, 0.02, shape).astype(np.float32))
          for i, shape in enumerate([(40, 300), (7, 100), (33, 300)])]
    parts = []
    for i, t in enumerate(ts):
        x, start = float32(t).ravel(), 0
        for count, size in problems(t.array.shape, spec.per, spec.block):
            part = x[start : start + count * size].reshape(count, size)
            start += count * size
            parts.append((i, size, part, K.kmeanspp_init(part, spec.k, spec.seed)))
    results = {}
    for size in dict.fromkeys(p[1] for p in parts):
        group = [p for p in parts if p[1] == size]
        x = np.concatenate([p[2] for p in group])
        c = K.lloyd(x, np.concatenate([p[3] for p in group]), spec.iters)
        results[size] = (c, K.assign_any(x, c), x)
    got = spec._device_results(ts, parts, results, np, recon=True)
    for t, q in zip(ts, spec.quantize_many(ts), strict=True):
        d = got.pop(0)
        assert np.array_equal(d.symbols["indices"], q.symbols["indices"])
        assert d.symbols["indices"].dtype == q.symbols["indices"].dtype
        assert d.arrays == q.arrays and d.side == q.side
        assert d.recon.tobytes() == q.recon.tobytes()
        assert d.stats == error_stats(t, q.recon)


@pytest.mark.gpu
@pytest.mark.parametrize("t, spec", CASES, ids=IDS)
@pytest.mark.parametrize("recon", [True, False])
def test_device_kmeans_equals_the_cpu(t, spec, recon):
    cupy = pytest.importorskip("cupy")
    cpu = spec.quantize(t)
    gpu = spec.quantize_many([t], cupy, recon=recon)[0]
    assert np.array_equal(cupy.asnumpy(gpu.symbols["indices"]), cpu.symbols["indices"])
    assert gpu.symbols["indices"].shape == cpu.symbols["indices"].shape
    assert gpu.arrays == cpu.arrays and gpu.side == cpu.side
    assert gpu.stats == error_stats(t, cpu.recon)
    if recon:
        assert cupy.asnumpy(gpu.recon).tobytes() == cpu.recon.tobytes()
    else:
        assert gpu.recon is None
