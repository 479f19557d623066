"""Small binary primitives shared by the coders' bitstreams: varints, a bounds-checked reader,
and the one framing of several substreams in a payload (count, lengths, then the bytes)."""
from __future__ import annotations

from zoocodec.errors import ContainerError


def put_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_svarint(out: bytearray, value: int) -> None:
    put_uvarint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))


def put_streams(out: bytearray, streams: list[bytes]) -> None:
    """Substreams: their count and byte lengths as varints, then their bytes in order."""
    put_uvarint(out, len(streams))
    for s in streams:
        put_uvarint(out, len(s))
    for s in streams:
        out += s


class Reader:
    """Reads a coder's bitstream; every overrun raises ContainerError, never IndexError."""

    def __init__(self, data: bytes | memoryview, what: str = "payload"):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def fail(self, why: str) -> ContainerError:
        return ContainerError(f"corrupt {self.what}: {why}")

    def uvarint(self, limit: int = 1 << 62) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise self.fail("varint too long")
        if value > limit:
            raise self.fail(f"value {value} above limit {limit}")
        return value

    def svarint(self) -> int:
        u = self.uvarint()
        return (u >> 1) if not u & 1 else -((u + 1) >> 1)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} bytes at {self.pos}, has {len(self.data) - self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def rest(self) -> memoryview:
        return self.take(len(self.data) - self.pos)

    def streams(self, count: int | None = None) -> list[memoryview]:
        """Substreams framed by put_streams; `count` is how many the caller expects (None: any)."""
        n = self.uvarint(limit=len(self.data))
        if count is not None and n != count:
            raise self.fail(f"{n} substreams, expected {count}")
        lengths = [self.uvarint(limit=len(self.data)) for _ in range(n)]
        return [self.take(length) for length in lengths]

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")
