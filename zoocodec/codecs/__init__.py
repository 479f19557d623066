"""Coders: integer symbols -> bytes and back, and lossless coders of raw float bits.

Symbol coders are looked up by the `coder` name a method spec carries; each is a pair
of plain functions encode(symbols) -> bytes and decode(bytes, count) -> int64 symbols.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zoocodec.codecs import ans, context, video
from zoocodec.errors import SpecError

SymbolEncoder = Callable[[np.ndarray], bytes]
SymbolDecoder = Callable[[bytes | memoryview, int], np.ndarray]

SYMBOL_CODERS: dict[str, tuple[SymbolEncoder, SymbolDecoder]] = {
    "ans": (ans.encode, ans.decode),
    "ctx": (context.encode, context.decode),
    "video-h264": video.coder("h264"),
    "video-hevc": video.coder("hevc"),
}


def symbol_coder(name: str) -> tuple[SymbolEncoder, SymbolDecoder]:
    if name not in SYMBOL_CODERS:
        raise SpecError(f"unknown coder {name!r} (known: {', '.join(sorted(SYMBOL_CODERS))})")
    return SYMBOL_CODERS[name]
