"""The fused native uniform quantizer gives the array path's symbols, reconstruction and
statistics bit for bit, whatever the thread count."""
import numpy as np
import pytest

from zoocodec.codecs.native import engine
from zoocodec.methods import TensorData, parse_spec, uniform as U
from zoocodec.methods.arrays import as_float64, bits_of, error_stats


def tensor(dtype: str, shape, seed: int = 0) -> TensorData:
    w = np.random.default_rng(seed).laplace(0, 0.02, shape).astype(np.float32)
    w.reshape(-1)[:: 97] = 0.0  # exact zeros, and weights that round to -0 below
    w.reshape(-1)[1:: 89] = -1e-9
    if dtype == "bfloat16":
        return TensorData("w", dtype, (w.view(np.uint32) >> 16).astype(np.uint16))
    return TensorData("w", dtype, w)


def reference_stats(t: TensorData, recon: np.ndarray):
    """np.sum / np.max over whole float64 copies: what error_stats promises."""
    x, r = as_float64(t.array.reshape(-1), t.dtype), as_float64(recon.reshape(-1), t.dtype)
    e = x - r
    n = x.size
    return float(np.sum(e**2) / n), float(np.max(np.abs(e))), float(np.sum(x * x) / n)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(64, 200), (1000,), (3, 5, 7), (300, 1100), (1, 1)])
@pytest.mark.parametrize("text", ["uniform:bits=8", "uniform:bits=4", "uniform:bits=16", "uniform:step=0.001",
                                  "uniform:step=1e-7", "uniform:bits=8,per_tensor=true"])
def test_native_equals_the_array_path(dtype, shape, text):
    t, spec = tensor(dtype, shape), parse_spec(text)
    q = spec.quantize(t)  # native
    assert q.stats is not None
    m = t.matrix(per_row=spec.step is None and not spec.per_tensor and t.array.ndim >= 2)
    symbols = np.empty(m.shape, dtype=q.symbols["symbols"].dtype)
    recon = np.empty(m.shape, dtype=t.array.dtype)
    spec._quantize_blocks(t, m, U.load_steps(q, t.array.shape, "uniform"), symbols, recon, np)
    assert np.array_equal(symbols.reshape(t.array.shape), q.symbols["symbols"])
    assert recon.tobytes() == q.recon.tobytes()  # -0 included
    mse, max_err, power = reference_stats(t, recon)
    assert (q.stats.mse, q.stats.max_err, q.stats.power) == (mse, max_err, power)


def test_symbol_widths_follow_the_range():
    t = tensor("float32", (16, 64))
    widths = {text: parse_spec(text).quantize(t).symbols["symbols"].dtype
              for text in ("uniform:bits=8", "uniform:bits=12", "uniform:step=1e-7")}
    assert widths == {"uniform:bits=8": np.int8, "uniform:bits=12": np.int16, "uniform:step=1e-7": np.int32}


@pytest.mark.parametrize("n", [0, 7, 8, 129, 32768, 32769, 300001])
def test_error_stats_sum_as_numpy_does_with_any_threads(n):
    g = np.random.default_rng(n)
    w = g.laplace(0, 0.02, n).astype(np.float32)
    r = (w * np.float32(1.01) + np.float32(1e-4)).astype(np.float32)
    t = TensorData("w", "float32", w)
    got = [engine().error_stats(bits_of(w), bits_of(r), 0, threads) for threads in (1, 2, 3)]
    assert got[0] == got[1] == got[2]
    if n:
        assert (error_stats(t, r).mse, error_stats(t, r).max_err, error_stats(t, r).power) == reference_stats(t, r)


def test_bad_arguments_are_refused():
    w = np.zeros(10, np.uint32)
    with pytest.raises(ValueError):
        engine().uniform_quantize(w, 0, np.ones(3), 3, np.zeros(10, np.int8), np.zeros(10, np.uint32))
    with pytest.raises(ValueError):
        engine().uniform_quantize(w, 7, np.ones(1), 10, np.zeros(10, np.int8), np.zeros(10, np.uint32))
    with pytest.raises(ValueError):
        engine().absmax_rows(w, 3, np.zeros(4, np.uint32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_all_finite_reads_the_bits(dtype):
    from zoocodec.methods.arrays import all_finite

    for bad in (None, np.nan, np.inf, -np.inf):
        w = np.random.default_rng(0).standard_normal(300001).astype(np.float32)
        if bad is not None:
            w[123457] = bad
        t = tensor(dtype, (1,))
        t.array = w if dtype == "float32" else (w.view(np.uint32) >> 16).astype(np.uint16)
        assert all_finite(t) == (bad is None)


@pytest.mark.parametrize("width", [8, 16])
def test_rans_add_codes_signed_symbols_as_their_indices(width):
    from zoocodec.codecs import native

    g = np.random.default_rng(width)
    s = np.rint(g.laplace(0, 9, 200001)).clip(-100, 100).astype(np.int8 if width == 8 else np.int16)
    lo, top = int(s.min()), int(s.max()) - int(s.min()) + 1
    unsigned = np.uint8 if width == 8 else np.uint16
    indices = (s.astype(np.int64) - lo).astype(unsigned)
    assert native.rans_encode(s.view(unsigned), top, add=-lo % (1 << width)) == native.rans_encode(indices, top)


def test_compress_leaves_the_reconstruction_out_and_code_rebuilds_it():
    t, spec = tensor("bfloat16", (64, 200)), parse_spec("uniform:bits=6")
    full = spec.quantize(t)
    lean = spec.quantize_many([t], np, recon=False)[0]
    assert lean.recon is None and lean.stats == full.stats
    enc = spec.code(t, lean, recon=True)
    assert enc.recon.tobytes() == full.recon.tobytes() and enc.stats == full.stats


@pytest.mark.parametrize("bits", [np.uint16, np.uint32])
@pytest.mark.parametrize("cols", [1, 7, 384, 1001])
def test_absmax_rows_is_the_largest_magnitude_bits(bits, cols):
    """The native row maxima (a vectorised copy where the CPU has AVX2) equal NumPy's, signs
    cleared, infinities and NaN bits included."""
    w = np.random.default_rng(cols).integers(0, np.iinfo(bits).max, (37, cols), dtype=np.uint64).astype(bits)
    w[3, 0] = bits(0x7F80 if bits == np.uint16 else 0x7F800000)  # +inf
    w[5, -1] = np.iinfo(bits).max  # a negative NaN
    out = np.zeros(37, bits)
    engine().absmax_rows(w.reshape(-1), cols, out)
    assert np.array_equal(out, (w & bits(np.iinfo(bits).max >> 1)).max(axis=1))


def test_rans_refuses_a_symbol_its_callers_table_lacks():
    from zoocodec.codecs import native

    symbols = np.array([0, 1, 2, 1] * 5000, np.uint8)
    assert native.rans_decode_freqs(native.rans_encode_freqs(symbols, np.array([1, 2, 1])), np.array([1, 2, 1]),
                                    symbols.size).tolist() == symbols.tolist()
    with pytest.raises(ValueError, match="frequency table does not hold"):
        native.rans_encode_freqs(symbols, np.array([1, 2, 0]))


def test_the_avx2_and_plain_copies_agree(tmp_path):
    """The quantizer's, the row maxima's and the byte rANS encoder's AVX2 copies (chosen at run
    time) give the bytes the plain copies give: a second process with ZOOCODEC_NO_AVX2 set
    computes the same (quantizer: one and several steps per 8 values, every symbol width, recon
    or not; encoder: substreams of 8 lanes in groups of 1-4 and shorter ones, tables of 8-16 bits,
    signed symbols read with an offset, byte planes)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from zoocodec.methods import TensorData, parse_spec\n"
        "from zoocodec.codecs.native import engine\n"
        "w = np.random.default_rng(3).laplace(0, 0.02, (97, 333)).astype(np.float32)\n"
        "w.reshape(-1)[::89] = -1e-9\n"
        "out = []\n"
        "bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)\n"
        "for t in (TensorData('w', 'float32', w), TensorData('w', 'bfloat16', bf16)):\n"
        "    for spec in ('uniform:bits=8', 'uniform:bits=12', 'uniform:step=1e-7', 'uniform:bits=4,per_tensor=1'):\n"
        "        for m in (t, TensorData('w', t.dtype, t.array[:, :7]), TensorData('w', t.dtype, t.array[:5])):\n"
        "            q = parse_spec(spec).quantize(m)\n"
        "            out += [q.symbols['symbols'].tobytes(), q.recon.tobytes(), repr(q.stats).encode()]\n"
        "            out.append(repr(parse_spec(spec)._quantize(m, np, recon=False).stats).encode())\n"
        "    top = np.zeros(97, np.uint32 if t.dtype == 'float32' else np.uint16)\n"
        "    engine().absmax_rows(t.array.reshape(-1).view(top.dtype), 333, top)\n"
        "    out.append(top.tobytes())\n"
        "g = np.random.default_rng(5)\n"
        "for n in (100, 4096, 65536, 65536 * 3 + 4100, 65536 * 9):\n"
        "    s = np.clip(np.rint(g.laplace(0, 9, n)), -127, 127).astype(np.int8)\n"
        "    for bits in (8, 9, 12, 16):\n"
        "        out.append(engine().rans_encode(s.view(np.uint8), 255, 65536, 2, bits, 127, b''))\n"
        "    out.append(engine().plane_encode(s.view(np.uint8), 12, 65536, 2))\n"
        "sys.stdout.buffer.write(b'|'.join(x.hex().encode() for x in out))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [subprocess.run([sys.executable, "-c", script], env={**env, **extra}, capture_output=True, check=True).stdout
            for extra in ({}, {"ZOOCODEC_NO_AVX2": "1"})]
    assert runs[0] == runs[1] and len(runs[0]) > 1000


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 5000), (300, 77), (2048, 64)])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("threads", [1, 0])
def test_rounded_counts_are_numpys(rows, cols, per_row, threads):
    """allocate's order-0 counts at a trial step: np.bincount of np.rint(w / step), ties (x.5) included."""
    g = np.random.default_rng(rows + cols)
    w = g.laplace(0, 1, (rows, cols))
    w.reshape(-1)[::7] = np.round(w.reshape(-1)[::7] * 2) / 2
    steps = g.uniform(0.01, 0.5, rows) if per_row else np.array([0.5])
    q = np.rint(w / steps[:, None]).astype(np.int64)
    lo, counts = engine().rounded_counts(w, steps, 1 << 22, threads)
    assert lo == q.min() and np.array_equal(counts, np.bincount((q - lo).ravel()))


def test_rounded_counts_decline_what_they_cannot_count():
    w = np.array([[1.0, -3.0, 2.0**60], [0.0, 1.0, 2.0]])
    assert engine().rounded_counts(w, np.array([1.0]), 1 << 22) is None  # a level past 2^51
    assert engine().rounded_counts(w[1:] * 1e6, np.array([1.0]), 1000) is None  # more levels than asked for
    assert engine().rounded_counts(np.array([[np.nan]]), np.array([1.0]), 10) is None
    assert engine().rounded_counts(np.array([[5.0]]), np.array([0.0]), 10) is None  # (inf)
    for bad in (np.nan, np.inf, -(2.0**60)):  # in the AVX2 lanes (runs of 4 and more) as in the scalar tail
        row = np.arange(9.0)
        row[5] = bad
        assert engine().rounded_counts(row[None], np.array([1.0]), 1 << 22) is None
    with pytest.raises(ValueError, match="one per row"):
        engine().rounded_counts(w, np.ones(3), 10)
