"""Paths and outputs: names from files confined to their folder; atomic publication."""
from __future__ import annotations

import os
from pathlib import Path

MAX_NAME = 255  # bytes in one path component on common file systems


def plain_relpath(name: object) -> str | None:
    """Why `name` is not a plain relative path ('a/b.json': '/'-separated, every part a real name), or None.

    Names that come from a file (a container header, a Hugging Face index) and become
    paths must pass this, so that joining them to a folder stays inside the folder.
    """
    if not isinstance(name, str):
        return "is not a string"
    if not name:
        return "is empty"
    if "\x00" in name or "\\" in name or any(ord(c) < 32 for c in name):
        return "holds a NUL, a backslash or a control character"
    if name.startswith("/"):
        return "is absolute"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"has a {part!r} part" if part else "has an empty part"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME:
            return "has a part longer than 255 bytes"
    return None


def inside(folder: Path, name: str) -> Path:
    """`folder / name` after checking that it resolves (links included) inside `folder`."""
    root = folder.resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{name!r} leads outside {folder}")
    return root / name


def publish(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Give `tmp` the permissions a new file would get, then rename it over `out`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, Path(out))
