"""The original model's outputs kept in the zoo cache, so a later evaluation of the same weights on
the same inputs skips running it: one key (a hash of the weights' contents and what else decides
the outputs), one reader that ignores a damaged or foreign file, one writer that stores it whole
or not at all. evaluate.py (zoo tasks) and lm.py (causal LMs) keep theirs here."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch


def path(kind: str, about: str, weights: dict[str, torch.Tensor], *extra: bytes) -> Path:
    """The cache file of outputs `kind` for these weights: `about` names everything else the outputs
    depend on (versions, device type, task), `extra` the inputs' bytes where they are not named."""
    from zoocodec.pipeline import zoo

    h = hashlib.sha256(about.encode())
    add_tensors(h, weights)
    for data in extra:
        h.update(data)
    return zoo.cache_dir() / kind / f"{h.hexdigest()[:32]}.safetensors"


def add_tensors(h, weights: Mapping[str, torch.Tensor]) -> None:
    """Feed hash `h` each tensor by name order: its name, dtype, shape and bytes."""
    for name in sorted(weights):
        w = weights[name].detach().contiguous().cpu()
        h.update(f"{name} {w.dtype} {tuple(w.shape)}".encode())
        h.update(w.reshape(-1).view(torch.uint8).numpy())


def read(file: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, ...] | None:
    """The tensors `names` stored in `file`, or None (absent, unreadable, or one of them missing)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        kept = load_file(file)
        return tuple(kept[n] for n in names)
    except (OSError, SafetensorError, KeyError):
        return None


def write(file: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Stored whole or not at all (a temporary file renamed into place); a cache that cannot be written is skipped."""
    from safetensors.torch import save_file

    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, tmp)
        os.replace(tmp, file)
    except OSError:
        tmp.unlink(missing_ok=True)
