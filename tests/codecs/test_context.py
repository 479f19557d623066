"""The context coder: exact, deterministic, below order-0 entropy on real weights, robust to damage."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import ans, context, native
from zoocodec.codecs.base import order0_bits
from zoocodec.errors import ContainerError
from zoocodec.pipeline.core import load

FFN = "encoder.layer.2.output.dense.weight"  # minilm's


def weights(path, name: str) -> np.ndarray:
    return next(t for t in load(path).tensors() if t.name == name).float64()


def real_symbols(path, name: str, step: float) -> np.ndarray:
    return np.rint(weights(path, name) / step).astype(np.int64)


@pytest.fixture(scope="module")
def mnist_fc(mnist_path):
    return real_symbols(mnist_path, "fc_layers.0.weight", 2.0**-5.5)


@pytest.fixture(scope="module")
def minilm_ffn(minilm_path):
    return real_symbols(minilm_path, FFN, 2.0**-7)


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
                  elements=st.integers(-(2**20), 2**20)))
@settings(max_examples=150, deadline=None)
def test_round_trip_any_integers(s):
    coded = context.encode(s)
    assert np.array_equal(context.decode(coded, s.size), s.ravel())


def test_round_trip_structured_matrix_uses_contexts():
    g = np.random.default_rng(0)  # rows and columns of very different scales, like trained layers
    s = np.rint(g.laplace(0, 1, (200, 300)) * np.geomspace(0.2, 20, 200)[:, None]).astype(np.int64)
    coded = context.encode(s)
    assert coded[0] == context.CTX
    assert np.array_equal(context.decode(coded, s.size), s.ravel())
    assert 8 * len(coded) < 0.9 * order0_bits(s)


@pytest.mark.parametrize("layout", [context.COLS, context.ROWS | context.COLS])
def test_rows_placed_whole_and_cut_by_blocks(layout):
    """Contexts along columns: rows inside a 2^16-element block are placed by their row class's column order,
    rows a block boundary cuts symbol by symbol; both give the encoder's symbols back."""
    g = np.random.default_rng(5)
    rows, cols = 300, 700  # (65,536 is not a multiple of 700)
    scale = np.geomspace(0.3, 30, cols)[None, :] * (np.geomspace(0.5, 8, rows)[:, None] if layout & context.ROWS else 1)
    s = np.rint(g.laplace(0, 1, (rows, cols)) * scale).astype(np.int64)
    coded = context.encode_with(context.fit(s, layout, 8), s)
    assert np.array_equal(context.decode(coded, s.size), s.ravel())


@pytest.mark.parametrize("which", ["mnist_fc", "minilm_ffn"])
def test_real_weights_below_their_order0_entropy(which, request):
    s = request.getfixturevalue(which)
    coded = context.encode(s)
    assert np.array_equal(context.decode(coded, s.size), s.ravel())
    assert coded[0] == context.CTX
    # everything counted: tables, row/column classes, ANS streams; against the ideal order-0 size
    assert 8 * len(coded) < order0_bits(s)
    assert len(coded) < len(ans.encode(s))


def min_max_groups(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """The levels of `uniform:bits=B,group=G,zero=true` (min-max groups along the rows)."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group)
    lo, hi = g.min(axis=2, keepdims=True), g.max(axis=2, keepdims=True)
    return np.rint((g - lo) / ((hi - lo) / (2**bits - 1))).astype(np.int64).reshape(rows, cols)


@pytest.mark.parametrize("bits,group", [(4, 32), (3, 64), (2, 128)])
def test_min_max_groups_code_their_ends_once(minilm_path, bits, group):
    """Every min-max group holds its lowest and highest level: the group-ends layout codes where, and no
    symbol before them pays for a level it cannot be."""
    s = min_max_groups(weights(minilm_path, FFN), bits, group)
    coded = context.encode(s)
    assert coded[0] == context.ENDS
    assert np.array_equal(context.decode(coded, s.size), s.ravel())
    assert len(coded) < len(ans.encode(s))
    model = context.Ctx().model(s)
    assert model.model.group <= group  # a finer group can price lower where the ends are common levels
    assert abs(model.bits(s) - 8 * len(coded)) < 0.01 * 8 * len(coded)


def test_context_tables_take_the_ans_coders_precision(minilm_path):
    """A context's table is the one `ans` writes for the same counts (native.rans_normalise): 4-bit levels
    get at most 2^12 slots, whose decoding table fits a first-level cache, where 2^16 did not."""
    s = min_max_groups(weights(minilm_path, FFN), 4, 32)
    model = context.fit_ends(s, 32)
    ctx = model.contexts(*s.shape)
    free = ctx != context.KNOWN
    tables = [t for t in context._tables(s[free], ctx[free], context.KNOWN) if t is not None]
    assert tables
    for _, freqs, counts in tables:
        expected, bits = native.rans_normalise(counts)
        assert np.array_equal(freqs, expected) and bits <= 12 and freqs.sum() == 1 << bits
    coded = context.encode_with(model, s)
    assert np.array_equal(context.decode(coded, s.size), s.ravel())


@given(st.integers(1, 6), st.integers(1, 90), st.sampled_from(context.GROUPS), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_group_ends_round_trip(rows, cols, group, seed):
    """Any group size against any row length (a short last group), groups without an end included: the
    decoder's contexts are the encoder's (Ends.contexts), and the positions the side info gives hold the
    levels it sets there."""
    g = np.random.default_rng(seed)
    s = g.integers(-3, 5, (rows, cols))
    s[:, ::group] = -3
    s[:, 1::group] = 4
    s[g.random((rows, cols)) < 0.05] = 0  # some groups lose an end
    if s.min() < s.max():  # (a constant matrix has no ends to place: the encoder codes it order-0)
        coded = context.encode_with(context.fit_ends(s, group), s)
        assert np.array_equal(context.decode(coded, s.size), s.ravel())
    assert np.array_equal(context.decode(context.encode(s), s.size), s.ravel())


def test_deterministic_bytes(mnist_fc):
    assert context.encode(mnist_fc) == context.encode(mnist_fc.copy())


def test_never_much_larger_than_order0():
    for s in (np.zeros(0, np.int64), np.full(5000, 7), np.arange(-50, 50).repeat(3).reshape(3, 100),
              np.random.default_rng(1).integers(-3, 4, 4096)):
        assert len(context.encode(s)) <= len(ans.encode(s)) + 1


def test_rate_tables_price_what_the_coder_sees(mnist_fc):
    model = context.Ctx().model(mnist_fc)
    table = model.rates(mnist_fc)
    m = context.matrix_view(mnist_fc)
    ideal = table.stateless[table.ctx, m - table.origin].sum()
    assert ideal < order0_bits(mnist_fc)  # contexts lower the ideal rate
    coded = 8 * len(context.encode(mnist_fc))
    assert coded < 1.05 * ideal  # the coder is within tables of it
    assert abs(model.bits(mnist_fc) - coded) < 0.01 * coded  # the model's estimate includes the tables


@pytest.fixture(scope="module")
def grouped(minilm_path):
    return min_max_groups(weights(minilm_path, FFN), 4, 32)


@pytest.mark.parametrize("which", ["mnist_fc", "grouped"])
def test_damage_raises_container_error(which, request):
    symbols = request.getfixturevalue(which)
    coded = context.encode(symbols)
    n = symbols.size
    with pytest.raises(ContainerError):
        context.decode(coded, n + 1)
    for cut in range(0, len(coded), max(1, len(coded) // 41)):
        with pytest.raises(ContainerError):
            context.decode(coded[:cut], n)
    with pytest.raises(ContainerError):
        context.decode(coded + b"\0", n)
    with pytest.raises(ContainerError):
        context.decode(bytes([9]) + coded[1:], n)
    g = np.random.default_rng(2)
    for pos in g.integers(0, 64, 60):  # header and tables: an error or n symbols, never a crash
        bad = bytearray(coded)
        bad[pos] ^= int(g.integers(1, 256))
        try:
            out = context.decode(bytes(bad), n)
        except ContainerError:
            continue
        assert out.shape == (n,)


@given(st.integers(1, 7), st.integers(1, 40), st.sampled_from([1, 2, 3]), st.integers(-600, 600),
       st.integers(1, 1 << 20), st.integers(1, 64), st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_the_decoders_contexts_are_the_models(rows, cols, layout, lo, width, bins, seed):
    """Symbols coded under any classes (within the codec's +-256), origin, bin width and count decode to
    themselves: the decoder's contexts (native/ctx_frame.cpp) are the encoder's (Model.contexts)."""
    g = np.random.default_rng(seed)
    rc = g.integers(-256, 257, rows) if layout & context.ROWS else np.zeros(0, np.int64)
    cc = g.integers(-256, 257, cols) if layout & context.COLS else np.zeros(0, np.int64)
    s = g.integers(-5, 6, (rows, cols)) * (1 + np.arange(rows)[:, None] % 3)
    coded = context.encode_with(context.Model(layout, rc, cc, lo, width, bins), s)
    assert np.array_equal(context.decode(coded, s.size), s.ravel())


def test_classes_out_of_the_codecs_range_are_refused():
    s = np.arange(60).reshape(6, 10) % 7
    coded = context.encode_with(context.Model(context.ROWS, np.array([0, 1, 2, 3, 4, 257]), np.zeros(0, np.int64),
                                              0, 4, 2), s)
    with pytest.raises(ContainerError, match="activity class out of range"):
        context.decode(coded, s.size)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30),
       st.sampled_from([context.ROWS, context.COLS, context.ROWS | context.COLS]), st.sampled_from(context.BINS),
       st.integers(0, 2**32 - 1))
def test_a_model_fits_and_gives_contexts_as_its_formulas_say(rows, cols, layout, bins, seed):
    """fit's percentiles come from the classes' histograms and contexts() from each pair of classes: the
    same as NumPy's percentile of every position's class sum, and the context formula at each position."""
    g = np.random.default_rng(seed)
    m = np.rint(g.laplace(0, 3, (rows, cols)) * g.uniform(0.1, 9, (rows, 1)) * g.uniform(0.1, 9, (1, cols)))
    model = context.fit(m.astype(np.int64), layout, bins)
    v = np.broadcast_to((model.row_classes[:, None] if layout & context.ROWS else 0)
                        + (model.col_classes[None, :] if layout & context.COLS else 0), m.shape)
    lo, hi = (int(x) for x in np.percentile(v, [2, 98], method="nearest"))
    assert (model.lo, model.width) == (lo, max(hi - lo, 1))
    assert np.array_equal(model.contexts(rows, cols), np.clip(((v - lo) * bins) // model.width, 0, bins - 1))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40),
       st.sampled_from([context.ROWS, context.COLS, context.ROWS | context.COLS]), st.sampled_from(context.BINS),
       st.integers(0, 2**32 - 1))
def test_native_counts_by_context_are_the_bincount_of_the_contexts(rows, cols, layout, bins, seed):
    g = np.random.default_rng(seed)
    m = np.rint(g.laplace(0, 3, (rows, cols)) * g.uniform(0.1, 9, (rows, 1))).astype(np.int64)
    model = context.fit(m, layout, bins)
    lo, size = int(m.min()), int(m.max() - m.min()) + 1
    want = np.bincount((model.contexts(rows, cols) * size + m - lo).ravel(), minlength=bins * size)
    assert np.array_equal(model.counts(m, lo, size), want.reshape(bins, size))
    classes = context.matrix_classes(m)  # best_model's one pass for every candidate: the same counts
    each = context.fit(m, layout, bins, classes)
    assert np.array_equal(context.ClassCounts.of(m, classes, lo, size).counts(each), each.counts(m, lo, size))


def test_native_counts_refuse_what_is_out_of_range():
    eng, m = native.engine(), np.array([[0, 1], [2, 3]], np.int64)
    r, c, pair = np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((1, 1), np.int64)
    out = np.empty((2, 4), np.int64)
    eng.ctx_count_levels(m, r, c, pair, 0, out)
    assert out.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0]]
    for bad in ((m, r + 1, c, pair, 0), (m, r, c - 1, pair, 0), (m, r, c, pair + 2, 0), (m, r, c, pair, 1)):
        with pytest.raises(ValueError, match="count_levels"):
            eng.ctx_count_levels(*bad, out)
