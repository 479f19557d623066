"""The native CRC32 (native/crc32.cpp) is zlib's, on every path: table, 128-bit and 512-bit folding."""
import zlib

import numpy as np
import pytest

from zoocodec.codecs import native


@pytest.mark.parametrize("start", [0, 0xDEADBEEF])
def test_crc32_equals_zlibs_at_every_length_and_offset(start):
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for n in [*range(0, 600), 1023, 1024, 4095, 4096 + 17]:
        for at in (0, 3):  # (unaligned starts too)
            assert native.engine().crc32(data[at : at + n], start) == zlib.crc32(data[at : at + n], start), (n, at)


def test_crc32_of_a_large_buffer_continues_as_zlibs():
    data = np.random.default_rng(1).integers(0, 256, (3 << 20) + 77, dtype=np.uint8).tobytes()
    first = native.engine().crc32(data[: 1 << 20])
    assert native.engine().crc32(data[1 << 20 :], first) == zlib.crc32(data)


def test_first_bad_names_the_first_payload_with_a_wrong_chunk():
    g = np.random.default_rng(2)
    payloads = [g.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 5000, 70_000, 4096)]
    chunk = 4096

    def checks(ps):
        return [(p, chunk, [zlib.crc32(p[at : at + chunk]) for at in range(0, len(p), chunk)]) for p in ps]

    good = checks(payloads)
    assert native.engine().first_bad(good, 2) == -1
    for i in (1, 2, 3):
        bad = list(good)
        damaged = bytearray(payloads[i])
        damaged[-1] ^= 1
        bad[i] = (bytes(damaged), chunk, good[i][2])
        assert native.engine().first_bad(bad, 2) == i
    with pytest.raises(ValueError):  # (not one CRC a chunk)
        native.engine().first_bad([(payloads[1], chunk, [0])], 2)
