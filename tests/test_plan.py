"""The decode plan: fused native decoding equals each method's own decode, bit for bit."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import zoocodec
from zoocodec.codecs import ans, context, native
from zoocodec.codecs.cabac import Cabac, check_stream
from zoocodec.errors import ContainerError
from zoocodec.header import TensorEntry
from zoocodec.methods import parse_spec
from zoocodec.methods.arrays import from_float64
from zoocodec.plan import KINDS, Affine, decode


def own_decode(a: zoocodec.Archive, name: str) -> np.ndarray:
    return a.decode(name, lambda spec, side, segs, shape, dtype: spec.decode(side, segs, shape, dtype))


def spy_passes(monkeypatch) -> list[list]:
    """Each native pass plan.Stream starts, as the list of its jobs' (job tuple, status) in order."""
    real, passes = native.engine().Pass, []

    class Spy:
        def __init__(self, threads, mapped, overlap):
            self.real, self.jobs = real(threads, mapped, overlap), []
            passes.append(self.jobs)

        def submit(self, jobs, payloads):
            self.jobs.extend(jobs)
            return self.real.submit(jobs, payloads)

        def wait(self):
            bad, results = self.real.wait()
            self.jobs[:] = [(job, status) for job, (status, _) in zip(self.jobs, results, strict=True)]
            return bad, results

    monkeypatch.setattr(native.engine(), "Pass", Spy)
    return passes


def mixed_model() -> dict[str, torch.Tensor]:
    g = np.random.default_rng(0)
    def w(*s):
        return (g.laplace(0, 0.02, s) * g.uniform(0.2, 3, (s[0],) + (1,) * (len(s) - 1))).astype(np.float32)

    return {"f32": torch.from_numpy(w(300, 500)), "f16": torch.from_numpy(w(64, 1000).astype(np.float16)),
            "bf16": torch.from_numpy(w(70, 3, 9)).to(torch.bfloat16), "conv": torch.from_numpy(w(16, 8, 3, 3)),
            "zero": torch.zeros(40, 200), "tall": torch.from_numpy(w(5000, 1)), "empty": torch.zeros(0, 30)}


@pytest.mark.parametrize("spec", ["uniform:bits=8", "uniform:bits=2", "uniform:bits=4,per_tensor=true",
                                  "uniform:bits=12", "uniform:bits=16", "uniform:step=0.001", "kmeans:k=16",
                                  "kmeans:k=8,per=channel", "kmeans:k=4,per=block,block=1000",
                                  "kmeans:k=256,codebook=float16", "rdoq:step=0.004,coder=ans",
                                  "rdoq:bits=6,coder=ans", "dq:step=0.004,coder=ans", "dq:bits=6,coder=ans",
                                  "uniform:step=0.004,coder=ctx", "uniform:bits=10,coder=ctx",
                                  "rdoq:step=0.004,coder=ctx",
                                  "dq:step=0.004,coder=ctx", "dq:bits=6,coder=ctx", "kmeans:k=16,coder=ctx",
                                  "uniform:bits=4,group=32", "uniform:bits=4,group=32,zero=true,coder=ctx",
                                  "uniform:bits=3,group=16,zero=true,side=5,coder=ctx", "dq:step=0.004,coder=cabac",
                                  "dq:bits=6,coder=cabac", "rdoq:step=0.004,coder=cabac", "uniform:bits=8,coder=cabac",
                                  "uniform:step=0.00001,coder=cabac", "kmeans:k=16,coder=cabac",
                                  "uniform:bits=4,group=32,zero=true,coder=cabac"])
def test_fused_decode_equals_the_methods_own(tmp_path, spec, monkeypatch):
    out = tmp_path / "m.zc"
    zoocodec.compress(mixed_model(), out, spec, min_size=10)
    passes = spy_passes(monkeypatch)
    with zoocodec.Archive(out) as a:
        batch = a.read_many(a.names())
        for name in a.names():
            want = own_decode(a, name)
            assert batch[name].dtype == want.dtype and batch[name].shape == want.shape
            assert np.array_equal(batch[name].view(np.uint8), want.view(np.uint8)), name
    taken = [status for jobs in passes for job, status in jobs if len(job) != 4]  # (not float planes)
    assert taken.count(0) >= 2, taken  # decoded natively (packed frames, small or flat, are left to ans.py)


def ctx_symbols(draw_rows, cols, kind, spread, seed):
    """Symbols shaped as the context coder's layouts meet them: row scales, column scales, both, or the
    min-max groups of GGUF's Q4_1 (levels 0..15, each group of 32 holding both ends)."""
    g = np.random.default_rng(seed)
    if kind == "groups":
        q = g.integers(1, 15, (draw_rows, cols))
        for r in range(draw_rows):
            for c0 in range(0, cols, 32):
                n = min(32, cols - c0)
                if n >= 2:
                    lo, hi = g.choice(n, 2, replace=False)
                    q[r, c0 + lo], q[r, c0 + hi] = 0, 15
        return q
    scale = np.ones((draw_rows, cols))
    if kind in ("rows", "both"):
        scale = scale * g.uniform(0.05, 3, (draw_rows, 1))
    if kind in ("cols", "both"):
        scale = scale * g.uniform(0.05, 3, (1, cols))
    return np.rint(g.laplace(0, spread, (draw_rows, cols)) * scale).astype(np.int64)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 400), cols=st.integers(1, 700), kind=st.sampled_from(["rows", "cols", "both", "groups"]),
       spread=st.sampled_from([0.3, 4.0, 60.0]), seed=st.integers(0, 2**32 - 1), threads=st.sampled_from([1, 2]))
def test_ctx_payloads_decode_on_the_pass_as_context_py_decodes_them(rows, cols, kind, spread, seed, threads):
    """Every layout (and order-0) of the context coder, alphabets narrow and wider than a byte, over
    several of the pass's blocks: the same symbols as context.py's own decoder."""
    q = ctx_symbols(rows, cols, kind, spread, seed)
    data = context.encode(q)
    e = TensorEntry("t", q.shape, "float32", parse_spec("uniform:step=1,coder=ctx"), {}, {})
    got, left = decode([(e, Affine("symbols", np.ones(1)), data)], threads)
    if left:  # (order-0 symbols in a packed frame, small or flat: ans.py's)
        assert data[0] == context.ORDER0 and data[1] == ans.PACKED
        return
    assert np.array_equal(got["t"].astype(np.int64), context.decode(data, q.size).reshape(q.shape))


def many_groups(rows: int = 1100, cols: int = 1000, group: int = 16) -> np.ndarray:
    """Q4_1-style levels 0..15 whose every group of `group` along a row holds both ends at random places:
    69,300 groups (more than a task of the pass fills, its rows ending off a task's edge), each row's last
    group 8 places long; group-ends side arrays that large are rANS frames, decoded by the pass."""
    g = np.random.default_rng(7)
    q = g.integers(1, 15, (rows, cols))
    starts = np.arange(cols) // group * group
    n = np.minimum(group, cols - starts)
    keys = g.random((rows, -(-cols // group), group)).argsort(axis=2)[:, np.arange(cols) // group]
    lo_at, hi_at = keys[..., 0] % n, keys[..., 1] % n
    hi_at = np.where(hi_at == lo_at, (lo_at + 1) % n, hi_at)
    q[np.arange(cols) - starts == lo_at], q[np.arange(cols) - starts == hi_at] = 0, 15
    return q


@pytest.mark.parametrize("threads", [1, 2])
def test_group_ends_of_many_groups_decode_on_the_pass(threads):
    q = many_groups()
    model = context.fit_ends(q, 16)
    data = context.encode_with(model, q)
    e = TensorEntry("t", q.shape, "float32", parse_spec("uniform:step=1,coder=ctx"), {}, {})
    got, left = decode([(e, Affine("symbols", np.ones(1)), data)], threads)
    assert not left and np.array_equal(got["t"].astype(np.int64), q)
    assert np.array_equal(context.decode(data, q.size).reshape(q.shape), q)


@pytest.mark.parametrize(("forge", "error"), [
    ("shared", "share a position"), ("outside", "outside the group"), ("past a row's end", "outside the group")])
@pytest.mark.parametrize("row", [0, 1099])
@pytest.mark.parametrize("side", ["first_lo", "first_hi"])
def test_forged_group_ends_are_refused(forge, error, row, side):
    """A group's place of its lowest or highest level past the group, past the end of a row's last group
    (8 places), or shared by both: refused, in either of the pass's ranges of groups."""
    q = many_groups()
    model = context.fit_ends(q, 16)
    ends = {"first_lo": model.first_lo.copy(), "first_hi": model.first_hi.copy()}
    other = "first_hi" if side == "first_lo" else "first_lo"
    at = (row, 62) if forge == "past a row's end" else (row, 10)
    ends[side][at] = {"shared": ends[other][at], "outside": 17, "past a row's end": 9}[forge]
    data = context.encode_with(context.Ends(16, model.lo, model.hi, ends["first_lo"], ends["first_hi"]), q)
    e = TensorEntry("t", q.shape, "float32", parse_spec("uniform:step=1,coder=ctx"), {}, {})
    for threads in (1, 2):
        with pytest.raises(ContainerError, match=f"corrupt context-coded payload: a group's .*{error}"):
            decode([(e, Affine("symbols", np.ones(1)), data)], threads)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 4), cut=st.integers(0, 40))
def test_a_damaged_ctx_payload_is_refused_or_decodes_as_context_py_does(seed, flips, cut):
    """Hostile payloads: the pass refuses (one ContainerError) what context.py refuses, never reads past a
    stream, and where both accept a damaged payload they agree."""
    g = np.random.default_rng(seed)
    q = ctx_symbols(int(g.integers(2, 150)), int(g.integers(2, 200)), ["rows", "cols", "both", "groups"][seed % 4], 4.0,
                    seed)
    data = bytearray(context.encode(q))
    for _ in range(flips):
        data[int(g.integers(0, len(data)))] ^= int(g.integers(1, 256))
    data = bytes(data[: len(data) - cut] if cut < len(data) else data)
    e = TensorEntry("t", q.shape, "float32", parse_spec("uniform:step=1,coder=ctx"), {}, {})
    try:
        want = context.decode(data, q.size)
    except ContainerError:
        want = None
    try:
        got, left = decode([(e, Affine("symbols", np.ones(1)), data)])
    except ContainerError as err:
        assert want is None, err
        assert "corrupt context-coded payload" in str(err)
        return
    if not left:  # (left: a frame only context.py reads, a packed one say)
        assert want is not None and np.array_equal(got["t"].ravel().astype(np.int64), want)


def coded(k: np.ndarray, coder: str, by_column: bool | None = None, substream: int = 1 << 16) -> bytes:
    """Levels k as coder `coder` writes them (cabac: the walk matrix of a dq along rows, or columns when
    `by_column`; no trellis when None)."""
    if coder == "cabac":
        return Cabac(substream=substream).encode(k, None if by_column is None else 0 if by_column else 1)
    return context.encode(k) if coder == "ctx" else ans.encode(k)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 300), cols=st.integers(1, 300), per_row=st.booleans(),
       coder=st.sampled_from(["ans", "ctx", "cabac"]),
       dtype=st.sampled_from(["float32", "float16", "bfloat16"]), seed=st.integers(0, 2**32 - 1))
def test_trellis_jobs_walk_as_the_dq_state_machine(rows, cols, per_row, coder, dtype, seed):
    """dq levels decoded on the pass, then walked along rows or columns (the shorter side), equal to the
    state machine's walk (kernels/rdoq.dq_dequantize) times each row's step, rounded as NumPy rounds."""
    from zoocodec.kernels.rdoq import dq_dequantize
    from zoocodec.plan import Trellis

    g = np.random.default_rng(seed)
    k = np.rint(g.laplace(0, 3, (rows, cols)) * g.uniform(0.1, 2, (rows, 1))).astype(np.int64)
    steps = g.uniform(1e-3, 0.1, rows if per_row else 1)
    by_column = cols > rows
    substream = int(g.integers(1, 3 * rows * cols + 1))
    data = coded(k, coder, by_column, substream)
    e = TensorEntry("t", k.shape, dtype, parse_spec(f"dq:step=0.01,coder={coder}"), {}, {})
    got, left = decode([(e, Trellis("symbols", steps, rows, cols, by_column), data)], 2)
    if left:  # (a packed frame, small or flat: ans.py's; a cabac stream cut mid-walk: the method's own decode)
        if coder == "cabac":
            assert substream < (rows if by_column else cols)
        else:
            assert data[coder == "ctx"] == ans.PACKED
        return
    want = from_float64(dq_dequantize(k, np, by_column) * steps[:, None], dtype)
    assert np.array_equal(got["t"].view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("rows", "cols", "scale"), [(300, 37, 60.0), (500, 7, 3.0), (128, 128, 3.0), (3000, 3, 3.0)])
def test_row_walks_of_byte_and_16_bit_levels(dtype, rows, cols, scale):
    """Row walks of byte and 16-bit levels (spans of 46 to 1,155), rows of 3 to 128 levels, per-row
    steps, as the state machine walks them."""
    from zoocodec.kernels.rdoq import dq_dequantize
    from zoocodec.plan import Trellis

    g = np.random.default_rng(rows * cols)
    k = np.rint(g.laplace(0, scale, (rows, cols))).astype(np.int64)
    steps = g.uniform(1e-3, 0.1, rows)
    e = TensorEntry("t", k.shape, dtype, parse_spec("dq:step=0.01,coder=ans"), {}, {})
    got, left = decode([(e, Trellis("symbols", steps, rows, cols, False), ans.encode(k))], 2)
    assert not left
    want = from_float64(dq_dequantize(k, np, False) * steps[:, None], dtype)
    assert np.array_equal(got["t"].view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rounding_into_each_dtype_is_numpys(dtype):
    """Steps that put products on float16 subnormals, near the largest value, and bfloat16 ties: the
    native conversion of each float64 product equals methods/arrays.from_float64; steps whose
    products overflow the dtype (which compress never writes) are refused as corrupt."""
    g = np.random.default_rng(3)
    symbols = g.integers(-300, 300, 60_000)
    for step in (2.0 ** -24 / 3, 6.1e-5 / 7, 0.1, 1 / 3, 300.0, 1e30, 3.4e38 / 200, 3.4e38 / 400, 2.0 ** -140):
        rows = np.array([step, step * 1.0000001, step / 3], dtype=np.float64)
        s = symbols.reshape(3, -1)
        with np.errstate(over="ignore"):
            want = from_float64(s.astype(np.float64) * rows[:, None], dtype)
        e = TensorEntry("t", s.shape, dtype, parse_spec("uniform"), {}, {})
        values = (want.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else want  # (bf16: bits)
        if not np.isfinite(values).all():
            with pytest.raises(ContainerError, match=f"outside the {dtype} range"):
                decode([(e, Affine("symbols", rows), ans.encode(s))])
            continue
        got, left = decode([(e, Affine("symbols", rows), ans.encode(s))])
        assert not left
        assert np.array_equal(got["t"].view(np.uint8), want.view(np.uint8)), step


def test_codebook_index_out_of_range_is_refused():
    """A forged index stream that points past the codebook: ContainerError, not a read outside it."""
    from zoocodec.plan import Lookup

    e = TensorEntry("t", (2, 600), "float16", parse_spec("kmeans:k=4"), {}, {})
    book = np.linspace(-1, 1, 8)
    with pytest.raises(ContainerError, match="codebook index 4 out of range 0..3"):
        decode([(e, Lookup("indices", book, 4, 600), ans.encode(np.arange(1200) % 5))])
    with pytest.raises(ContainerError, match="out of range"):
        decode([(e, Lookup("indices", book, 4, 600), ans.encode(np.arange(1200) % 4 - 1))])
    got, _ = decode([(e, Lookup("indices", book, 4, 600), ans.encode(np.arange(1200) % 4))])
    want = from_float64(book[(np.arange(1200) // 600) * 4 + np.arange(1200) % 4], "float16")
    assert np.array_equal(got["t"].ravel().view(np.uint16), want.view(np.uint16))


def test_damaged_stream_is_named(tmp_path):
    out = tmp_path / "m.zc"
    zoocodec.compress(mixed_model(), out, "uniform:bits=8", min_size=10)
    with zoocodec.Archive(out) as a:
        e = a.plan["f32"]
        payload = bytearray(a.container.segment("f32", e.segments["symbols"]))
        steps = e.spec.fused(e.side, {"steps": a.container.segment("s", e.segments["steps"])},
                                               e.shape, e.dtype)
    payload[len(payload) // 2] ^= 0x55
    with pytest.raises(ContainerError, match="tensor 'f32': corrupt entropy-coded payload"):
        decode([(e, steps, bytes(payload))])


def test_the_frame_parser_reads_what_ans_wrote():
    g = np.random.default_rng(4)
    s = np.rint(g.laplace(0, 20, 200_000)).astype(np.int64)
    data = ans.encode(s)
    lo, L, constant, freq, chunk, offsets, lengths = native.engine().ans_frame(data, s.size)
    assert lo == s.min() and 1 <= L <= 16 and freq.sum() == 1 << L and chunk == native.SUBSTREAM
    assert len(offsets) == len(lengths) == -(-s.size // chunk) and offsets[-1] + lengths[-1] == len(data)
    assert native.engine().ans_frame(ans._packed(s), s.size) is None
    with pytest.raises(native.engine().CorruptStream):
        native.engine().ans_frame(data[:-3], s.size)
    assert set(KINDS) == {"float32", "float16", "bfloat16"}


def test_a_missing_stream_is_named_not_a_crash(tmp_path):
    """Found by the container fuzzer: side info naming a stream whose payload is gone."""
    from support import Forge

    zoocodec.compress(mixed_model(), tmp_path / "m.zc", "uniform:bits=8", min_size=10)
    f = Forge((tmp_path / "m.zc").read_bytes())
    t = next(t for t in f.header["tensors"] if t["name"] == "f32")
    t["segments"]["renamed"] = t["segments"].pop("symbols")
    f.write(tmp_path / "bad.zc")
    with zoocodec.Archive(tmp_path / "bad.zc") as a, pytest.raises(ContainerError, match="'f32'.*'symbols' is missing"):
        a.read_many(a.names())


def _zstd_model(n: int) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """A float32 matrix of n values whose low byte plane zstd codes best (a repeating pattern: no
    order-0 gain), and a small tensor beside it."""
    g = np.random.default_rng(7)
    bits = (g.laplace(0, 0.03, n).astype(np.float32).view(np.uint32) & ~np.uint32(0xFF)) | (
        np.arange(n, dtype=np.uint32) % 251)
    w = bits.view(np.float32).reshape(-1, 64)
    return w, {"w": torch.from_numpy(w), "b": torch.from_numpy(w[0].copy())}


def _zstd_plane_at(payload) -> int:
    """Where the first zstd plane's bytes start in a float-plane payload (asserting it has one)."""
    from zoocodec.codecs import floatplanes
    from zoocodec.codecs.wire import Reader

    r = Reader(payload, "x")
    r.uvarint(), r.byte()
    for _ in range(4):
        mode, size = r.byte(), r.uvarint()
        if mode == floatplanes.ZSTD:
            return r.pos
        r.take(size)
    raise AssertionError("no zstd plane")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [300 * 64, (1 << 20) + 4096])
def test_zstd_planes_are_inflated_on_the_one_native_pass(tmp_path, monkeypatch, threads, n):
    """A lossless tensor with a zstd-coded plane decodes on the same native pass as the rest (its
    plane inflated there, inflate.cpp), bit for bit; damage to that plane is one ContainerError
    naming the tensor and zstd, after which the file still closes."""
    from zoocodec import plan

    w, model = _zstd_model(n)
    zoocodec.compress(model, tmp_path / "m.zc", "lossless", min_size=1 << 62)
    passes = spy_passes(monkeypatch)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        e = a.plan["w"]
        payload = bytearray(a.container.segment(e.where, e.segments["data"]))
        got = a.read_many(["w", "b"], threads=threads)
    assert got["w"].tobytes() == w.tobytes() and got["b"].tobytes() == w[0].tobytes()
    assert len(passes) == 1 and [status for _, status in passes[0]] == [0, 0]
    payload[_zstd_plane_at(payload)] ^= 0xFF  # the zstd frame's magic number
    job = plan.fused_job(e.spec, e, {"data": bytes(payload)})
    with pytest.raises(ContainerError, match="tensor 'w': corrupt float payload: zstd plane: "):
        plan.decode([(e, job, memoryview(bytes(payload)))], threads=threads)


def test_a_zstd_plane_of_the_wrong_size_is_corrupt():
    """A zstd frame that inflates to more or fewer bytes than its plane holds is refused, and nothing is
    written past the output (the native decoder inflates into exactly the plane)."""
    import zstandard

    from zoocodec.codecs.wire import put_uvarint

    n = 5000
    for size in (n - 1, n + 1):
        frame = bytearray()
        put_uvarint(frame, n)
        frame.append(2)
        for plane in (np.zeros(size, np.uint8), np.ones(n, np.uint8)):
            body = zstandard.ZstdCompressor().compress(plane.tobytes())
            frame.append(2)
            put_uvarint(frame, len(body))
            frame += body
        out = np.full(n + 8, 7, np.uint16)
        [(status, error)] = native.engine().decode_fused([(bytes(frame), n, 2, out[:n])], 2)
        assert status == 2 and "zstd plane" in error, error
        assert (out[n:] == 7).all()


def test_a_freed_output_block_serves_the_next_load_only_once_free(tmp_path):
    """The last freed block is reused by the next batch of about its size; one still referenced
    by a tensor never is (native/plan_bind.cpp's output_block)."""
    g = np.random.default_rng(3)
    models = [{"w": torch.from_numpy(g.laplace(0, 0.03, (1024, 2048)).astype(np.float32))} for _ in range(2)]
    for i, m in enumerate(models):
        zoocodec.compress(m, tmp_path / f"{i}.zc", "lossless", min_size=0)
    first = zoocodec.load(tmp_path / "0.zc")["w"]
    second = zoocodec.load(tmp_path / "1.zc")["w"]  # the first still lives: a block of its own
    assert first.data_ptr() != second.data_ptr()
    assert torch.equal(first, models[0]["w"]) and torch.equal(second, models[1]["w"])
    address = first.data_ptr()
    del first
    again = zoocodec.load(tmp_path / "1.zc")["w"]
    assert again.data_ptr() == address and torch.equal(again, models[1]["w"]) and torch.equal(second, again)


@pytest.mark.parametrize("threads", [1, 2])
def test_damage_is_named_as_a_crc_mismatch_by_the_pass_that_checks_it(tmp_path, monkeypatch, threads):
    """Chunk checksums are checked on the decoding pass (each payload just before its tasks): a byte
    flipped in a fused payload, in a side segment a method reads before the pass (uniform's
    per-row steps) or in a payload its own decode reads (dq) is one ContainerError naming that
    payload as corrupt, before any decoding error."""
    monkeypatch.setenv("ZOOCODEC_THREADS", str(threads))
    model = mixed_model()
    zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=8", overrides={"conv": "dq:step=0.004,coder=ans"},
                      min_size=10)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        segments = {(n, k): s for n in ("f32", "conv") for k, s in a.plan[n].segments.items()}
    assert ("f32", "steps") in segments and ("f32", "symbols") in segments
    data = (tmp_path / "m.zc").read_bytes()
    for (name, _), seg in segments.items():
        bad = bytearray(data)
        bad[seg.offset + seg.length // 2] ^= 0x40
        (tmp_path / "bad.zc").write_bytes(bytes(bad))
        with pytest.raises(ContainerError, match=rf"payload of tensor '{name}' is corrupt \(checksum mismatch\)"):
            zoocodec.load(tmp_path / "bad.zc")


def _freed_and_taken_again(nbytes: int) -> np.ndarray:
    """An output block of `nbytes`, 7 written on each of its pages, freed, then the next block of that
    size (asserted to be the same memory)."""
    eng = native.engine()
    block = eng.output_block(nbytes)
    block[::4096] = 7
    address = block.__array_interface__["data"][0]
    del block
    block = eng.output_block(nbytes)
    assert block.__array_interface__["data"][0] == address
    return block


def test_an_output_block_is_kept_for_the_next_and_a_declined_slot_given_back():
    """The last freed output block is the next one of its size: what its caller wrote is still
    there, so its pages were not faulted in again; discard gives the whole pages inside an array
    back, and they read as zeros."""
    block = _freed_and_taken_again(24 << 20)
    assert (block[::4096] == 7).all()
    slot = block[5000 : 5000 + 3 * 4096]
    slot[:] = 9
    native.engine().discard(slot)
    assert (slot[:3192] == 9).all() and (slot[3192 : 3192 + 8192] == 0).all() and (slot[3192 + 8192 :] == 9).all()


def test_a_large_output_block_is_kept_lazily_freed():
    """A freed block over 64 MiB is kept too, its pages the kernel's to take back (MADV_FREE): each
    page of the next block of its size holds what was written or zeros."""
    block = _freed_and_taken_again(80 << 20)
    assert set(np.unique(block[::4096]).tolist()) <= {0, 7}  # (0: a page the kernel took back)
    assert (block[::4096] == 7).mean() > 0.5  # (it takes them when memory runs short)


def test_a_load_of_several_batches_reuses_the_last_loads_memory(tmp_path, monkeypatch):
    """Every batch of a load decodes into one output block, so loading the model again after
    dropping it reuses the whole of it (no page faulted in and zeroed anew)."""
    from zoocodec import plan

    g = np.random.default_rng(5)
    model = {f"w{i}": torch.from_numpy(g.normal(0, 0.02, (1024, 1280)).astype(np.float32)) for i in range(3)}
    zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=8", min_size=0)
    batches, seen = plan.batches, []
    monkeypatch.setattr(plan, "batches", lambda items: seen.append(batches(items, 5 << 20)) or seen[-1])
    first = zoocodec.load(tmp_path / "m.zc")
    where = {n: t.data_ptr() for n, t in first.items()}
    assert [len(b) for b in seen[0]] == [1, 1, 1]  # (a batch per tensor)
    del first
    again = zoocodec.load(tmp_path / "m.zc")
    assert {n: t.data_ptr() for n, t in again.items()} == where


def many_tensors(n: int = 24) -> dict[str, torch.Tensor]:
    g = np.random.default_rng(11)
    return {f"t{i:02d}": torch.from_numpy(g.laplace(0, 0.02, (40 + 13 * i, 96)).astype(np.float32))
            for i in range(n)}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("spec", ["uniform:bits=8", "lossless"])
def test_a_stream_of_many_parts_decodes_what_one_pass_does(tmp_path, monkeypatch, threads, spec):
    """plan.Stream hands its jobs to the native pass a part at a time (here a tensor or two each)
    while the next are built, and the caller joins the pass when it waits: the same bits as each
    method's own decode, at 1, 2 and 3 threads, with the torch views made while it runs."""
    from zoocodec import plan

    monkeypatch.setattr(plan, "PART_BYTES", 30_000)
    model = many_tensors()
    zoocodec.compress(model, tmp_path / "m.zc", spec, min_size=0)
    passes = spy_passes(monkeypatch)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        got = a.read_many(a.names(), threads=threads, convert=lambda array, e: torch.from_numpy(array))
        for name in a.names():
            assert np.array_equal(got[name].numpy().view(np.uint8), own_decode(a, name).view(np.uint8)), name
    assert len(passes) == 1 and [status for _, status in passes[0]] == [0] * len(model)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("count", [1, 6])
def test_float_planes_of_several_substreams_decode_alike_split_or_grouped(tmp_path, monkeypatch, threads, count):
    """A float-plane job of 3 substreams (150,000 bf16 values) is split across the threads when the pass
    holds fewer groups than threads (one tensor) and kept whole when it holds enough (six): the same bits
    as the method's own decode either way."""
    g = np.random.default_rng(5)
    model = {f"t{i}": torch.from_numpy(g.laplace(0, 0.02, (375, 400)).astype(np.float32)).to(torch.bfloat16)
             for i in range(count)}
    zoocodec.compress(model, tmp_path / "m.zc", "lossless", min_size=0)
    passes = spy_passes(monkeypatch)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        got = a.read_many(a.names(), threads=threads, convert=lambda array, e: torch.from_numpy(array))
        for name in a.names():
            assert np.array_equal(got[name].numpy().view(np.uint8), own_decode(a, name).view(np.uint8)), name
            assert torch.equal(got[name].view(torch.int16), model[name].view(torch.int16)), name
    assert [status for p in passes for _, status in p] == [0] * count  # (the native pass decoded each)


@pytest.mark.parametrize("threads", [1, 2])
def test_damage_in_a_later_part_is_named_and_the_file_closes(tmp_path, monkeypatch, threads):
    """A byte flipped in a tensor decoded by a later part of the pass: one ContainerError naming
    it as corrupt; and a method's side info found damaged while the pass already runs on earlier
    parts: that error, after which the pass has ended (the mapping closes: no view is left)."""
    from zoocodec import plan

    monkeypatch.setattr(plan, "PART_BYTES", 30_000)
    monkeypatch.setenv("ZOOCODEC_THREADS", str(threads))
    zoocodec.compress(many_tensors(), tmp_path / "m.zc", "uniform:bits=8", min_size=0)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        seg = a.plan["t03"].segments["symbols"]  # (a small one: built late, largest first)
    data = (tmp_path / "m.zc").read_bytes()
    bad = bytearray(data)
    bad[seg.offset + seg.length // 2] ^= 0x40
    (tmp_path / "bad.zc").write_bytes(bytes(bad))
    with pytest.raises(ContainerError, match=r"payload of tensor 't03' is corrupt \(checksum mismatch\)"):
        zoocodec.load(tmp_path / "bad.zc")
    real = plan.fused_job

    def late_damage(spec, e, segments, gpu=False):
        if e.name == "t01":
            raise ContainerError("uniform: damaged steps")
        return real(spec, e, segments, gpu)

    monkeypatch.setattr(plan, "fused_job", late_damage)
    a = zoocodec.Archive(tmp_path / "m.zc")
    with pytest.raises(ContainerError, match="damaged steps"):
        a.read_many(a.names())
    a.container.close()  # (BufferError if the pass still held a view of the mapping)


def test_a_pass_left_without_waiting_ends_alone():
    """A native Pass whose caller never waits (an exception on its way) finishes its parts on its
    own thread when it is freed; waiting twice gives the results once."""
    eng = native.engine()
    g = np.random.default_rng(5)
    s = g.integers(-50, 50, (64, 1000))
    data, steps = ans.encode(s), np.full(64, 0.5)
    for threads, overlap in ((1, True), (2, True), (4, True), (2, False)):
        p = eng.Pass(threads, False, overlap)
        outs = [np.empty(s.size, np.float32) for _ in range(3)]
        for out in outs:
            p.submit([(data, s.size, steps, 1000, 0, KINDS["float32"], out)], [])
        bad, results = p.wait()
        assert bad == -1 and results == [(0, "")] * 3 and p.wait() == (-1, [])
        assert all(np.array_equal(out, (s * 0.5).astype(np.float32).ravel()) for out in outs)
        p = eng.Pass(threads, False, overlap)
        p.submit([(data, s.size, steps, 1000, 0, KINDS["float32"], np.empty(s.size, np.float32))], [])
        del p


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_group_whose_values_pass_the_dtype_is_refused_by_the_pass(dtype):
    """Group-wise steps (checked value by value, 8 at a time with AVX2): one group's step times its levels
    past the dtype's range is named, not written as infinities; the same steps a group lower decode."""
    from zoocodec.plan import Grouped

    rows, cols, group = 3, 64, 32
    levels = np.arange(rows * cols).reshape(rows, cols) % 16
    big = {"float32": 3e37, "float16": 5e3, "bfloat16": 3e37}[dtype]
    steps = np.full(rows * 2, 0.5)
    e = TensorEntry("t", (rows, cols), dtype, parse_spec("uniform:bits=4,group=32,zero=true,coder=ctx"), {}, {})
    job = lambda s: Grouped("symbols", group, rows, cols, lambda: (s, np.zeros(rows * 2)), ())  # noqa: E731
    got, _ = decode([(e, job(steps), context.encode(levels))])
    want = from_float64(levels * 0.5, dtype)
    assert np.array_equal(got["t"].view(np.uint8), want.view(np.uint8))
    steps[3] = big
    with pytest.raises(ContainerError, match=f"context-coded payload: a group's values lie outside the {dtype}"):
        decode([(e, job(steps), context.encode(levels))])


@pytest.mark.parametrize(("threads", "ints"), [(1, np.int64), (2, np.int64), (2, np.int16)])
def test_coded_side_values_decode_on_the_pass_as_side_values_gives_them(threads, ints):
    """uniform:side=M: the pass computes each group's step and zero from its codes (int64, or as narrow as
    they decoded) as it writes the group, the values native side_values gives (the GPU decoder's, and the
    method's own); a step code past the largest exponent, or one whose step is not finite, is refused as
    side_values refuses it."""
    from zoocodec.methods.uniform import MAX_EXPONENT
    from zoocodec.plan import Grouped

    rows, cols, group, mant, bits = 70, 1000, 16, 5, 4
    groups = rows * -(-cols // group)
    g = np.random.default_rng(3)
    levels = g.integers(0, 16, (rows, cols))
    codes = ((g.integers(-12, -2, groups) + mant) << mant | g.integers(0, 1 << mant, groups)).astype(np.int64)
    centres = g.integers(0, 1 << (bits + mant - 2), groups).astype(np.int64)
    steps, zeros, ok = native.engine().side_values(codes, centres, mant, bits, MAX_EXPONENT)
    assert ok
    e = TensorEntry("t", (rows, cols), "bfloat16", parse_spec("uniform:bits=4,group=16,zero=true,side=5,coder=ctx"),
                    {}, {})
    job = lambda c: Grouped("symbols", group, rows, cols, None, (),  # noqa: E731
                            lambda: (c.astype(ints), centres.astype(ints), mant, bits, MAX_EXPONENT))
    got, _ = decode([(e, job(codes), context.encode(levels))], threads)
    spread = np.repeat(np.arange(groups).reshape(rows, -1), group, axis=1)[:, :cols]
    want = from_float64(levels * steps[spread] + zeros[spread], "bfloat16")
    assert np.array_equal(got["t"].view(np.uint8), want.view(np.uint8))
    for bad in ((MAX_EXPONENT + 1) << mant, (-MAX_EXPONENT - 1) << mant, 1030 << mant) if ints == np.int64 else ():
        forged = codes.copy()
        forged[groups - 5] = bad
        assert not native.engine().side_values(forged, centres, mant, bits, MAX_EXPONENT)[2]
        with pytest.raises(ContainerError, match="group step codes or centres give steps or zero points out of range"):
            decode([(e, job(forged), context.encode(levels))], threads)


@pytest.mark.parametrize("coder", ["ans", "ctx"])
def test_trellis_levels_past_int32_are_left_to_the_methods_own_decode(coder):
    """The pass walks int32 levels; a (forged or extreme) stream of levels beyond them is not taken, so the
    method's own decode, which wraps as NumPy's int64 does, decides."""
    from zoocodec.plan import Trellis

    k = np.random.default_rng(0).integers(-3, 4, (40, 30)) + (1 << 40)
    e = TensorEntry("t", k.shape, "float32", parse_spec(f"dq:step=0.01,coder={coder}"), {}, {})
    data = context.encode(k) if coder == "ctx" else ans.encode(k)
    got, left = decode([(e, Trellis("symbols", np.array([0.01]), 40, 30, False), data)])
    assert left == ["t"] and "t" not in got


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 200), cols=st.integers(1, 400), spread=st.sampled_from([0.3, 4.0, 60.0, 3e4]),
       substream=st.sampled_from([7, 300, 1 << 16]), seed=st.integers(0, 2**32 - 1), threads=st.sampled_from([1, 2]))
def test_cabac_streams_decode_on_the_pass_as_the_coder_decodes_them(rows, cols, spread, substream, seed, threads):
    """cabac levels of every width (bytes, 16-bit offsets, and beyond: int32 levels) over one or many
    substreams, per-row steps: the values of the coder's own levels."""
    g = np.random.default_rng(seed)
    k = np.rint(g.laplace(0, spread, (rows, cols)) * g.uniform(0.1, 2, (rows, 1))).astype(np.int64)
    steps = g.uniform(0.5, 2, rows)
    data = coded(k, "cabac", substream=substream)
    e = TensorEntry("t", k.shape, "float32", parse_spec("rdoq:step=1,coder=cabac"), {}, {})
    got, left = decode([(e, Affine("symbols", steps), data)], threads)
    assert not left
    want = from_float64(Cabac().decode(data, k.shape) * steps[:, None], "float32")
    assert np.array_equal(got["t"].view(np.uint32), want.view(np.uint32))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 4), cut=st.integers(0, 40))
def test_a_damaged_cabac_stream_is_refused_or_decodes_as_the_coder_does(seed, flips, cut):
    """Hostile streams: the pass refuses (one ContainerError) what the coder refuses, and where both
    accept a damaged stream they agree (a stream of other rows than the shape's view the load never
    hands to the pass: plan.fused_job)."""
    g = np.random.default_rng(seed)
    shape = int(g.integers(2, 150)), int(g.integers(2, 200))
    k = np.rint(g.laplace(0, 4, shape)).astype(np.int64)
    data = bytearray(coded(k, "cabac", substream=int(g.integers(50, 5000))))
    for _ in range(flips):
        data[int(g.integers(0, len(data)))] ^= int(g.integers(1, 256))
    data = bytes(data[: len(data) - cut] if cut < len(data) else data)
    e = TensorEntry("t", shape, "float32", parse_spec("rdoq:step=1,coder=cabac"), {}, {})
    try:
        want = Cabac().decode(data, shape)
    except ContainerError:
        want = None
    try:
        got, left = decode([(e, Affine("symbols", np.ones(1)), data)])
    except ContainerError as err:
        assert want is None and "corrupt cabac-coded payload" in str(err), err
        return
    try:
        check_stream(data, shape, None)
    except ContainerError:
        return
    assert not left and want is not None and np.array_equal(got["t"].astype(np.int64), want)


def test_cabac_values_past_the_dtype_and_streams_not_the_jobs_are_named():
    """Per-row steps whose levels leave the dtype's range, a dq walk past it, a codebook index past
    the codebook, and a stream whose walks are not the job's: one ContainerError each, never infinities."""
    from zoocodec.plan import Lookup, Trellis

    k = np.arange(-600, 600).reshape(2, 600) % 7 - 3
    e = TensorEntry("t", k.shape, "float16", parse_spec("rdoq:step=1,coder=cabac"), {}, {})
    with pytest.raises(ContainerError, match="cabac-coded payload: symbols times the step of row 1 lie outside"):
        decode([(e, Affine("symbols", np.array([1.0, 3e4])), coded(k, "cabac"))])
    with pytest.raises(ContainerError, match="cabac-coded payload: dq levels times their steps lie outside"):
        decode([(e, Trellis("symbols", np.array([2e4]), 2, 600, True), coded(k, "cabac", True))])
    with pytest.raises(ContainerError, match="cabac-coded payload: codebook index -1 out of range"):
        decode([(e, Lookup("indices", np.linspace(-1, 1, 8), 4, 600), coded(k, "cabac"))])
    with pytest.raises(ContainerError, match="cabac-coded payload: a codebook value lies outside the float16"):
        decode([(e, Lookup("indices", np.array([0, 1, 2, 1e6] * 2, dtype=float), 4, 600), coded(k % 4, "cabac"))])
    with pytest.raises(ContainerError, match="the stream's walks are not the job's"):
        decode([(e, Trellis("symbols", np.ones(1), 2, 600, True), coded(k, "cabac", False))])
    with pytest.raises(ContainerError, match="the stream's trellis is not the job's"):
        decode([(e, Affine("symbols", np.ones(1)), coded(k, "cabac", True))])


def test_cabac_substreams_longer_than_a_threads_buffer_are_left_to_the_coder():
    """A stream cut into substreams of over 2^20 levels (the `substream` parameter allows 2^30) would need a
    buffer that large per thread: the method's own decode takes it, and decodes the same levels."""
    k = np.random.default_rng(1).integers(-3, 4, (1 << 21) + 5)
    e = TensorEntry("t", k.shape, "float32", parse_spec("rdoq:step=1,coder=cabac"), {}, {})
    data = coded(k, "cabac", substream=1 << 21)
    got, left = decode([(e, Affine("symbols", np.ones(1)), data)])
    assert left == ["t"] and "t" not in got
    assert np.array_equal(Cabac().decode(data, k.shape), k)
