"""Helpers shared by the tests: the float-array strategy, the exact round trip, the CLI runner, forgery."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import zstandard
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.container import ALIGN, TRAILER_MAGIC, TRAILER_SIZE
from zoocodec.methods import Encoded, TensorData, parse_spec

floats = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9),
    elements=st.floats(-100, 100, width=16),
)


def roundtrip(text: str, t: TensorData) -> tuple[Encoded, np.ndarray]:
    """Encode and decode `t`; the decoder must return byte for byte what the encoder reported.

    Returns the Encoded and the decoded values as float64.
    """
    spec = parse_spec(text)
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()
    return enc, TensorData(t.name, t.dtype, back).float64()


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `zoocodec ARGS` in this process: (exit status, stdout, stderr)."""
    import sys

    from zoocodec.cli import main

    monkeypatch.setattr(sys, "argv", ["zoocodec", *map(str, args)])
    try:
        code = main()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


class Forge:
    """A real container taken apart so a test can rewrite its header and payloads the way an
    attacker would: every checksum (segment CRC32s, header CRC32, SHA-256) recomputed."""

    def __init__(self, data: bytes):
        offset, length, _, _ = struct.unpack_from("<QQII", data, len(data) - TRAILER_SIZE)
        self.body = bytearray(data[:offset])
        self.header = json.loads(zstandard.ZstdDecompressor().decompress(data[offset:offset + length]))

    def add(self, payload: bytes) -> list[int]:
        """Append a payload; returns its [offset, length, crc32] for the header."""
        self.body += bytes(-len(self.body) % ALIGN)
        seg = [len(self.body), len(payload), zlib.crc32(payload)]
        self.body += payload
        return seg

    def attach(self, name: str, content: bytes) -> None:
        self.header["files"][name] = self.add(zstandard.ZstdCompressor().compress(content))

    def to_bytes(self, header_frame: bytes | None = None, json_text: bytes | None = None) -> bytes:
        """The file; `header_frame` replaces the compressed header (e.g. a zstd bomb), `json_text` its text."""
        body = bytearray(self.body) + bytes(-len(self.body) % ALIGN)
        if header_frame is None:
            text = json_text or json.dumps(self.header, sort_keys=True).encode()
            header_frame = zstandard.ZstdCompressor().compress(text)
        offset = len(body)
        body += header_frame + bytes(-len(header_frame) % ALIGN)
        body += struct.pack("<QQII", offset, len(header_frame), zlib.crc32(header_frame), 0) + TRAILER_MAGIC
        return bytes(body + hashlib.sha256(body).digest())

    def write(self, path, header_frame: bytes | None = None):
        path.write_bytes(self.to_bytes(header_frame))
        return path


REPO = Path(__file__).resolve().parent.parent


def console_script() -> list[str]:
    """The installed `zoocodec` command beside this interpreter (else `python -m zoocodec.cli`)."""
    script = Path(sys.executable).parent / "zoocodec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "zoocodec.cli"]


def script_env(**extra: str) -> dict[str, str]:
    """The environment for the console script: this checkout's zoocodec first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


def run_script(*args, cwd=None, timeout: float = 300, **env: str):
    """Run the real console script as a user would: a CompletedProcess with text output."""
    return subprocess.run([*console_script(), *map(str, args)], cwd=cwd, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)
