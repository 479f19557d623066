"""Coders: integer symbols -> bytes and back (codecs/base.py has the contract).

Importing this package registers every built-in coder: `ans`, `ctx`, `cabac`, `video-h264`,
`video-hevc`, `flags` (0/1 masks), and the bit-exact byte coders `float`, `zstd`, `raw`.
"""
from zoocodec.codecs import ans, cabac, context, flags, lossless, video  # noqa: F401  (registration)
from zoocodec.codecs.base import CODERS, CoderSpec, EntropyModel, RateTable, coder_from_dict, parse_coder

__all__ = ["CODERS", "CoderSpec", "EntropyModel", "RateTable", "coder_from_dict", "parse_coder"]
