"""zoocodec: compress the weights of trained neural networks, and measure what it costs.

    import zoocodec
    report = zoocodec.compress("minilm", "minilm.zc", "uniform:step=0.002")
    tensors = zoocodec.decompress("minilm.zc")        # dict[str, torch.Tensor]
    tensors = zoocodec.load("minilm.zc", device="cuda")  # decoded straight into GPU memory
    info = zoocodec.inspect("minilm.zc")

The API is loaded on first use, so `import zoocodec` (and `zoocodec --help`) loads no
torch, Ray or CuPy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"  # pyproject.toml's version (a test keeps them equal)

__all__ = ["Archive", "Report", "compress", "decompress", "inspect", "load", "load_into", "__version__"]

if TYPE_CHECKING:
    from zoocodec.pipeline.core import Archive, Report, compress, decompress, inspect, load_into


def __getattr__(name: str):
    if name in ("Archive", "Report", "compress", "decompress", "inspect", "load_into"):
        from zoocodec.pipeline import core

        return getattr(core, name)
    raise AttributeError(f"module 'zoocodec' has no attribute {name!r}")


def load(path, device="cpu"):
    """Every tensor of a .zc as torch tensors on `device` (cpu, gpu, cuda:N, auto)."""
    from zoocodec.pipeline.core import decompress

    return decompress(path, device=device)
