"""Atomic publication of output files: write to a temp file, then rename into place."""
from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Give `tmp` the permissions a new file would get, then rename it over `out`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, Path(out))
