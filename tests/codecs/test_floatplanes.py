import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import floatplanes, native
from zoocodec.errors import ContainerError


@given(hnp.arrays(st.sampled_from([np.float32, np.float16, np.uint16]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=20)))
@settings(max_examples=150, deadline=None)
def test_bit_exact_round_trip(a):
    coded = floatplanes.encode(a)
    back = floatplanes.decode(coded, a.size, a.dtype)
    assert back.tobytes() == a.tobytes()  # NaN payloads and signed zeros included


def test_trained_like_weights_compress():
    w = np.random.default_rng(0).laplace(0, 0.03, 200_000).astype(np.float32)
    coded = floatplanes.encode(w)
    assert len(coded) < 0.9 * w.nbytes


def test_truncated_payload_raises():
    w = np.random.default_rng(0).laplace(0, 0.03, 10_000).astype(np.float32)
    coded = floatplanes.encode(w)
    for cut in (0, 3, len(coded) // 3, len(coded) - 1):
        with pytest.raises(ContainerError):
            floatplanes.decode(coded[:cut], w.size, w.dtype)


def _exponents(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fp32 weights, their exponent plane): the plane the vector decoder takes."""
    w = np.random.default_rng(seed).laplace(0, 0.03, n).astype(np.float32)
    return w, native.engine().float_split(w.view(np.uint32), 1)[0]


def _raw_planes(w: np.ndarray) -> list:
    return [(floatplanes.RAW, p) for p in native.engine().float_split(w.view(np.uint32), 1)[1:]]


@pytest.mark.parametrize("n", [4096 * 8 + 5, 3 * 65536 + 4095, 9 * 65536 + 8])
@pytest.mark.parametrize("threads", [1, 2])
def test_vector_rans_planes_equal_the_scalar_decoder(n, threads):
    """Exponent planes of 8-lane substreams under a 12-bit table decode on the AVX2 path in groups
    of substreams (a short last one leaves the group); the scalar rANS decoder is the reference."""
    w, plane = _exponents(n)
    stream = native.rans_encode(plane, 256, max_bits=12)
    assert np.array_equal(native.rans_decode(stream, n, threads=1), plane)
    bits = native.engine().float_merge(n, 4, [(floatplanes.ORDER0, stream), *_raw_planes(w)], threads)
    assert bits.tobytes() == w.tobytes()
    assert floatplanes.decode(floatplanes.encode(w), n, w.dtype, threads=threads).tobytes() == w.tobytes()


@pytest.mark.parametrize("bits", [13, 14, 16])
def test_planes_of_finer_tables_decode(bits):
    """Streams with more than 12 probability bits (the encoder wrote up to 14 before) take the
    vector decoder's 8-byte table entries (rans_avx2.cpp)."""
    w, plane = _exponents(5 * 65536 + 100, seed=1)
    stream = native.rans_encode(plane, 256, max_bits=bits)
    back = native.engine().float_merge(w.size, 4, [(floatplanes.ORDER0, stream), *_raw_planes(w)], 2)
    assert back.tobytes() == w.tobytes()


def test_damaged_vector_streams_fail_like_the_scalar_decoder():
    """Bytes flipped anywhere in a stream the vector path decodes: the merge raises exactly when
    the scalar decoder does, and otherwise yields the same symbols (fuzz/ replays the rest)."""
    n = 2 * 65536 + 4100
    w, plane = _exponents(n, seed=2)
    stream = bytearray(native.rans_encode(plane, 256, max_bits=12))
    eng, rng = native.engine(), np.random.default_rng(3)
    raw = _raw_planes(w)
    for _ in range(150):
        bad = bytearray(stream)
        for at in rng.integers(len(stream) // 2 if rng.random() < 0.5 else 0, len(stream), rng.integers(1, 4)):
            bad[at] ^= 1 << int(rng.integers(8))
        try:
            want = native.rans_decode(bytes(bad), n, threads=1)
        except ContainerError:
            want = None
        try:
            got = eng.float_split(eng.float_merge(n, 4, [(floatplanes.ORDER0, bytes(bad)), *raw], 2), 1)[0]
        except eng.CorruptStream:
            got = None
        assert (want is None) == (got is None)
        assert want is None or np.array_equal(want, got)


@pytest.mark.parametrize("n", [0, 1, 50, 4095, 5000, 70_000, 300_000])
@pytest.mark.parametrize("plane", [0, 2])
def test_rans_size_estimate_is_the_stream_size(n, plane):
    """The encoder decides from rans_size without coding: the stream's framing exactly plus the
    body's ideal length under the table the encoder picks (each substream's final states carry
    up to 16 bytes more)."""
    w = np.random.default_rng(n).laplace(0, 0.03, n).astype(np.float32)
    p = native.engine().float_split(w.view(np.uint32), 1)[plane]
    est = native.engine().rans_size(native.engine().byte_histogram(p), floatplanes.PRECISION, native.SUBSTREAM)
    real = len(native.rans_encode(p, 256, max_bits=floatplanes.PRECISION))
    assert abs(est - real) <= 16 * (1 + -(-n // native.SUBSTREAM))
    floor = native.engine().rans_size(native.engine().byte_histogram(p), floatplanes.PRECISION, native.SUBSTREAM, 0)
    assert floor <= real  # the bound the encoder stops at (at_least=0: always the bound)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 4096, 4103, 65536, 65536 * 5 + 4096 + 5])
@pytest.mark.parametrize("kind", ["exponent", "mantissa", "constant", "rare", "two-level"])
@pytest.mark.parametrize("threads", [1, 2])
def test_plane_encoder_writes_the_rans_encoders_bytes(n, kind, threads):
    """plane_encode (8 lanes a vector, 4 substreams together, quotients in single precision
    corrected by the remainder) writes exactly the stream of the scalar rans_encode."""
    g = np.random.default_rng(n)
    planes = native.engine().float_split(g.laplace(0, 0.03, n).astype(np.float32).view(np.uint32), 1)
    plane = {"exponent": planes[0], "mantissa": planes[3], "constant": np.full(n, 7, np.uint8),
             "rare": (g.random(n) < 0.01).astype(np.uint8) * 200,  # a coarse table: the scalar path
             "two-level": np.where(g.random(n) < 0.3, 3, 250).astype(np.uint8)}[kind]
    for bits in (12, 14):
        want = native.rans_encode(plane, 256, threads=threads, max_bits=bits)
        assert native.engine().plane_encode(plane, bits, native.SUBSTREAM, threads) == want


@pytest.mark.parametrize("coded", [(0,), (1,), (0, 2), (0, 1, 2, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_any_planes_rans_coded_merge_bit_exact(coded, threads):
    """The decoder writes values straight from its registers when only the top plane is coded;
    any other mix of coded and raw planes goes through the plane buffers."""
    w, _ = _exponents(3 * 65536 + 4100, seed=4)
    planes = native.engine().float_split(w.view(np.uint32), 1)
    parts = [(floatplanes.ORDER0, native.rans_encode(p, 256, max_bits=12)) if k in coded else (floatplanes.RAW, p)
             for k, p in enumerate(planes)]
    assert native.engine().float_merge(w.size, 4, parts, threads).tobytes() == w.tobytes()


@pytest.mark.parametrize("n", [4096 + 3, 2 * 65536 + 4100, 5 * 65536])
@pytest.mark.parametrize("threads", [1, 2])
def test_two_byte_values_from_the_vector_decoder(n, threads):
    """fp16/bf16: the exponent plane decoded with the low byte merged in the decoder's registers."""
    w = np.random.default_rng(n).laplace(0, 0.03, n).astype(np.float16)
    planes = native.engine().float_split(w.view(np.uint16), 1)
    parts = [(floatplanes.ORDER0, native.rans_encode(planes[0], 256, max_bits=12)), (floatplanes.RAW, planes[1])]
    assert native.engine().float_merge(n, 2, parts, threads).tobytes() == w.tobytes()
    assert floatplanes.decode(floatplanes.encode(w), n, w.dtype, threads=threads).tobytes() == w.tobytes()


# ---- Huffman planes (float coder version 2, native/huffman.h) ----------------------------------

def _modes(coded: bytes, n: int, width: int) -> list[int]:
    """The plane modes of a float-plane frame."""
    from zoocodec.codecs.wire import Reader

    r = Reader(coded, "frame")
    assert r.uvarint() == n and r.byte() == width
    modes = []
    for _ in range(width):
        modes.append(r.byte())
        r.take(r.uvarint())
    return modes


def _huffman(plane: np.ndarray, chunk: int = native.SUBSTREAM) -> bytes:
    eng = native.engine()
    return eng.huff_encode(plane, eng.huff_lengths(eng.byte_histogram(plane)), chunk)


@pytest.mark.parametrize("dtype, n", [(np.float16, 70_000), (np.float32, 150_000), ("bfloat16", 3 * 65536 + 17)])
def test_huffman_planes_round_trip_through_every_decoder(dtype, n):
    """Exponent planes of a substream or more take Huffman; the frame parser (GPU, per-tensor
    path) and the batched native decoder (plan.cpp) give the same bits."""
    w = np.random.default_rng(1).laplace(0, 0.03, n).astype(np.float32)
    w = (w.view(np.uint32) >> 16).astype(np.uint16) if dtype == "bfloat16" else w.astype(dtype)
    coded = floatplanes.encode(w, huffman=True)
    assert _modes(coded, n, w.itemsize)[0] == floatplanes.HUFFMAN
    assert floatplanes.decode(coded, n, w.dtype).tobytes() == w.tobytes()
    out = np.empty(n, dtype=np.uint16 if w.itemsize == 2 else np.uint32)
    [(status, error)] = native.engine().decode_fused([(coded, n, w.itemsize, out)], 2)
    assert (status, error) == (0, "") and out.tobytes() == w.tobytes()


def test_huffman_only_where_it_pays():
    """Small planes, and planes where Huffman would cost over 2% more than rANS, keep rANS; without
    `huffman` the frame is the version 1 bytes."""
    g = np.random.default_rng(2)
    small = g.laplace(0, 0.03, 60_000).astype(np.float16)
    assert _modes(floatplanes.encode(small, huffman=True), small.size, 2)[0] == floatplanes.ORDER0
    skewed = np.where(g.random(200_000) < 0.97, 0.0, g.laplace(0, 0.03, 200_000)).astype(np.float16)
    assert _modes(floatplanes.encode(skewed, huffman=True), skewed.size, 2)[0] == floatplanes.ORDER0
    w = g.laplace(0, 0.03, 100_000).astype(np.float16)
    assert floatplanes.encode(w) == floatplanes.encode(w, huffman=False)
    assert _modes(floatplanes.encode(w), w.size, 2)[0] == floatplanes.ORDER0


def test_a_plane_that_codes_under_one_percent_below_raw_stays_raw():
    """No coder takes a plane it would shrink by less than 1% (floatplanes.GATE: its decoding
    would cost as much as a plane's that halves); a little more skew and the plane is coded."""
    g = np.random.default_rng(3)
    n = 200_000

    def values(p0: float) -> np.ndarray:  # fp16 bits whose top plane is 0 with p0 more chance
        top = np.where(g.random(n) < p0, 0, g.integers(0, 256, n)).astype(np.uint16)
        r = top << 8 | g.integers(0, 256, n).astype(np.uint16)
        return (r >> 1 | (r & 1) << 15).astype(np.uint16).view(np.float16)  # (the split rotates left by one)

    slight, more = values(0.03), values(0.06)  # order-0 entropy 0.8% and 2% under 8 bits
    assert _modes(floatplanes.encode(slight, huffman=True), n, 2) == [floatplanes.RAW] * 2
    assert _modes(floatplanes.encode(more, huffman=True), n, 2)[0] in (floatplanes.HUFFMAN, floatplanes.ORDER0)


def test_planes_are_cut_into_substreams_a_decoder_group_takes_whole():
    """A plane over one substream is cut into equal substreams, 4 or a multiple of 8 of them (a
    decoder task advances 8, Huffman's 4 at a time); a 576 x 576 matrix decodes the same."""
    for n in (1, 1 << 16, (1 << 16) + 1, 192 * 576, 576 * 576, 576 * 1536, 49152 * 576):
        chunk = floatplanes.substream(n)
        subs = -(-n // chunk)
        assert chunk <= native.SUBSTREAM and (subs in (1, 4) or subs % 8 == 0), n
        assert n <= native.SUBSTREAM or subs * chunk - n < subs, n  # (equal, but for rounding)
    w = np.random.default_rng(4).laplace(0, 0.03, 576 * 576).astype(np.float32)
    bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)
    assert floatplanes.decode(floatplanes.encode(bf16, huffman=True), bf16.size, bf16.dtype).tobytes() == bf16.tobytes()


def test_huffman_lengths_are_limited_and_complete():
    eng = native.engine()
    counts = np.zeros(256, dtype=np.uint64)
    counts[:40] = 2 ** np.arange(40, dtype=np.uint64)  # unlimited Huffman: codes of up to 39 bits
    lengths = eng.huff_lengths(counts).astype(np.int64)
    assert lengths.max() == 12 and (lengths[:40] > 0).all() and (lengths[40:] == 0).all()
    assert sum(2.0 ** -lengths[:40]) == 1.0  # a complete code
    assert not eng.huff_lengths(np.eye(1, 256, 7, dtype=np.uint64)[0]).any()  # one symbol: no code
    s = np.repeat(np.arange(40, dtype=np.uint8), np.minimum(2 ** np.arange(40), 3000))
    assert np.array_equal(eng.huff_decode(_huffman(s, 1000), s.size), s)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
@pytest.mark.parametrize("threads", [1, 2])
def test_huffman_substreams_decode_alike(chunk, threads):
    """Substreams of any length (groups of 4 in registers, shorter last ones leaving the group)."""
    s = np.minimum(np.random.default_rng(chunk).geometric(0.4, 9 * 4096 + 123) - 1, 30).astype(np.uint8)
    stream = _huffman(s, chunk)
    assert np.array_equal(native.engine().huff_decode(stream, s.size, threads), s)


def test_damaged_huffman_streams_raise():
    """Every damage raises CorruptStream, never a crash: wrong count, truncation, an incomplete
    or over-long code, flipped bits, bytes left over, non-zero padding."""
    eng = native.engine()
    _, plane = _exponents(3 * 4096 + 5)
    stream = bytearray(_huffman(plane, 4096))
    assert np.array_equal(eng.huff_decode(bytes(stream), plane.size), plane)
    head = 3 + 2 + 128  # n (3 bytes), chunk (2), the lengths
    bad = [bytes(stream[:cut]) for cut in (0, 4, head, head + 2, len(stream) - 1)]
    lengths = stream[5 : 5 + 128]
    top = next(i for i, b in enumerate(lengths) if b & 0xF)  # a present symbol: its length changed
    for v in ((lengths[top] & 0xF0) | 0xD, lengths[top] ^ 1):  # 13 bits, or one bit shorter/longer
        bad.append(bytes(stream[:5 + top]) + bytes([v]) + bytes(stream[6 + top:]))
    bad.append(bytes(stream) + b"\0")
    for data in bad:
        with pytest.raises(eng.CorruptStream):
            eng.huff_decode(data, plane.size)
    for k in range(40):  # a flipped bit in the bodies: an error, or other symbols, never a crash
        s = bytearray(stream)
        s[np.random.default_rng(k).integers(head, len(s))] ^= 1 << k % 8
        try:
            assert eng.huff_decode(bytes(s), plane.size).size == plane.size
        except eng.CorruptStream:
            pass
    with pytest.raises(eng.CorruptStream):
        eng.huff_decode(bytes(stream), plane.size + 1)
    with pytest.raises(ContainerError, match="corrupt float payload"):
        frame = bytearray()
        from zoocodec.codecs.wire import put_uvarint

        put_uvarint(frame, plane.size)
        frame += bytes([4, floatplanes.HUFFMAN])
        put_uvarint(frame, len(stream) - 1)
        frame += stream[:-1]
        for _ in range(3):
            frame += bytes([floatplanes.RAW])
            put_uvarint(frame, plane.size)
            frame += bytes(plane.size)
        floatplanes.decode(bytes(frame), plane.size, np.float32)


def test_huffman_beside_zstd_planes_decodes_in_the_second_pass():
    """A frame with a zstd plane goes through floatplanes.frame and a second native pass; its
    Huffman plane stays coded for that pass."""
    import zstandard

    from zoocodec.codecs.wire import put_uvarint

    w = np.random.default_rng(7).laplace(0, 0.03, 70_000).astype(np.float32)
    planes = native.engine().float_split(w.view(np.uint32), 1)
    frame = bytearray()
    put_uvarint(frame, w.size)
    frame.append(4)
    for mode, body in ((floatplanes.HUFFMAN, _huffman(planes[0])),
                       (floatplanes.ZSTD, zstandard.ZstdCompressor().compress(planes[1].tobytes())),
                       (floatplanes.RAW, planes[2].tobytes()), (floatplanes.RAW, planes[3].tobytes())):
        frame.append(mode)
        put_uvarint(frame, len(body))
        frame += body
    assert [m for m, _ in floatplanes.frame(bytes(frame), w.size, w.dtype, huffman=True)] == [3, 0, 0, 0]
    assert floatplanes.decode(bytes(frame), w.size, w.dtype).tobytes() == w.tobytes()
    from zoocodec import plan
    from zoocodec.header import TensorEntry
    from zoocodec.methods import parse_spec

    e = TensorEntry("w", (w.size,), "float32", parse_spec("lossless"), {"symbols": {"data": [w.size]}}, {})
    arrays, left = plan.decode([(e, plan.Planes("data"), bytes(frame))], 2)
    assert left == [] and arrays["w"].tobytes() == w.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n", [4095, 4096, 5003, 3 * 65536 + 7, 9 * 65536 + 33])
def test_long_merges_stream_the_same_values(dtype, n):
    """Merges of 4 KB or more store past the cache, 32 values a step (native/floatplanes.cpp's
    merge_streamed), between an unaligned head and tail merged as before: the same values, by
    every plane coder and with raw low planes."""
    g = np.random.default_rng(n)
    v = g.laplace(0, 0.02, n).astype(dtype)
    low = v.view(np.uint32 if dtype == np.float32 else np.uint16)
    for values in (v, (low & ~low.dtype.type(0xFF)).view(dtype)):  # (a zero low plane: codes to a constant)
        for huffman in (False, True):
            coded = floatplanes.encode(values, threads=2, huffman=huffman)
            for threads in (1, 2):
                assert floatplanes.decode(coded, n, np.dtype(dtype), threads).tobytes() == values.tobytes()
