"""The native chunk checksum (native/checksum.cpp: xxHash's XXH3-64, vendored) is the one every
XXH3-64 implementation computes, on every vector path the dispatcher may pick: lengths across
each of XXH3's input-size branches and the long-input stripes, at aligned and unaligned starts."""
import numpy as np
import pytest

from zoocodec.codecs import native

xxhash = pytest.importorskip("xxhash")  # (the dev extra; absent on the GPU image)


def test_xxh3_of_nothing_is_the_published_value():
    assert native.engine().xxh3(b"") == 0x2D06800538D394C2  # (xxHash's own sanity vector, seed 0)


def test_xxh3_equals_the_pypi_xxhash_modules_at_every_length_and_offset():
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for n in [*range(0, 600), 1023, 1024, 1025, 4095, 4096 + 17]:
        for at in (0, 3):  # (unaligned starts too)
            assert native.engine().xxh3(data[at : at + n]) == xxhash.xxh3_64_intdigest(data[at : at + n]), (n, at)


def test_xxh3_of_a_large_buffer():
    data = np.random.default_rng(1).integers(0, 256, (3 << 20) + 77, dtype=np.uint8)
    assert native.engine().xxh3(data) == xxhash.xxh3_64_intdigest(data.tobytes())
    assert native.engine().xxh3(memoryview(data.tobytes())[5:]) == xxhash.xxh3_64_intdigest(data.tobytes()[5:])


def test_first_bad_names_the_first_payload_with_a_wrong_chunk():
    g = np.random.default_rng(2)
    payloads = [g.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 5000, 70_000, 4096)]
    chunk = 4096

    def checks(ps):
        return [(p, chunk, [xxhash.xxh3_64_intdigest(p[at : at + chunk]) for at in range(0, len(p), chunk)])
                for p in ps]

    good = checks(payloads)
    assert native.engine().first_bad(good, 2) == -1
    for i in (1, 2, 3):
        bad = list(good)
        damaged = bytearray(payloads[i])
        damaged[-1] ^= 1
        bad[i] = (bytes(damaged), chunk, good[i][2])
        assert native.engine().first_bad(bad, 2) == i
    with pytest.raises(ValueError):  # (not one checksum a chunk)
        native.engine().first_bad([(payloads[1], chunk, [0])], 2)
    high = (payloads[1], chunk, [good[1][2][0], (1 << 64) - 1])  # (any 64-bit value is taken, and differs)
    assert native.engine().first_bad([high], 2) == 0
