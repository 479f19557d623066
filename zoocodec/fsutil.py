"""Paths and outputs: names from files confined to their folder; outputs whole or not at all.

Every output (a .zc file, a model file or folder, a results table, a report) is written
under a temp name beside its target and renamed into place, so a reader sees the old
output or the new one, never a part. A folder replaces an existing one by an atomic swap
(renameat2 RENAME_EXCHANGE; two renames where the file system lacks it). Temp names say
whose they are, `.NAME.zoocodec-tmp-HOST-PID-N`, so the next run on that path removes what
a killed run left and nothing that a live run is writing.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from zoocodec.errors import ZoocodecError

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


def check_output(path: Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written there (one line; missing folders are made)."""
    if folder and (path.is_symlink() or (path.exists() and not path.is_dir())):
        raise ZoocodecError(f"{path}: exists and is not a folder (a link is not followed)")
    if not folder and path.is_dir():
        raise ZoocodecError(f"{path}: is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ZoocodecError(f"{path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ZoocodecError(f"{path}: {parent} is not writable")


TMP, OLD = ".zoocodec-tmp-", ".zoocodec-old-"
_counter = itertools.count()


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace("/", "_") or "host"


def temp_path(out: Path, kind: str = TMP) -> Path:
    """A name beside `out` that says whose it is: .NAME.zoocodec-tmp-HOST-PID-N."""
    return out.parent / f".{out.name}{kind}{_host()}-{os.getpid()}-{next(_counter)}"


def _owner_dead(litter: Path, kind: str) -> bool:
    """Whether the process that made this temp name (on this host) has ended."""
    host, _, rest = litter.name.rpartition(kind)[2].rpartition("-")[0].rpartition("-")
    if host != _host() or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_litter(out: Path) -> None:
    """Remove the temp outputs a killed run left beside `out`; restore a folder a swap left aside."""
    if not out.parent.is_dir():
        return
    for kind in (TMP, OLD):
        for p in out.parent.glob(f".{_glob_escape(out.name)}{kind}*"):
            if not _owner_dead(p, kind):
                continue
            if kind == OLD and not out.exists() and not out.is_symlink():
                os.replace(p, out)  # killed between the two renames of a swap: the old output is the whole one
            elif p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def remove_litter_in(folder: Path) -> None:
    """remove_litter for every output in `folder` and its subfolders (a results folder)."""
    if folder.is_dir():
        for p in folder.rglob(f".*{TMP}*"):
            name = p.name[1:].split(TMP)[0]
            remove_litter(p.parent / name)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _prepare(out: Path, folder: bool) -> None:
    check_output(out, folder)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZoocodecError(f"{out}: cannot make its folder ({e.strerror})") from None
    remove_litter(out)


def _set_mode(path: Path, folder: bool) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def atomic_file(out: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a temp path beside `out`; on success it is flushed to disk and renamed over `out`."""
    return _atomic(Path(out), folder=False)


def atomic_folder(out: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield an empty temp folder beside `out`; on success it replaces `out` in one step."""
    return _atomic(Path(out), folder=True)


@contextlib.contextmanager
def _atomic(out: Path, folder: bool) -> Iterator[Path]:
    """A temp output beside `out`, published on success and removed whatever happens."""
    _prepare(out, folder)
    tmp = temp_path(out)
    try:
        with _as_output_error(out):
            if folder:
                tmp.mkdir()
            yield tmp
            _publish(tmp, out, folder)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)  # a failed write, or the old folder after a swap
        else:
            tmp.unlink(missing_ok=True)


def _publish(tmp: Path, out: Path, folder: bool) -> None:
    """Flush `tmp` to disk and put it in place of `out` (an existing folder by an atomic swap)."""
    for p in sorted(tmp.rglob("*"), reverse=True) if folder else ():
        _fsync(p)
    _set_mode(tmp, folder)
    _fsync(tmp)
    if folder and out.is_dir():
        _swap(tmp, out)  # tmp now holds the old output
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def _as_output_error(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise ZoocodecError(f"{out}: cannot write it ({e.strerror or e})") from None


def _swap(new: Path, out: Path) -> None:
    """Exchange two folders atomically; without renameat2, move the old one aside first."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    if (
        renameat2 is not None
        and renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(out), rename_exchange) == 0
    ):
        return
    if renameat2 is not None and ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(out))
    aside = temp_path(out, OLD)
    os.replace(out, aside)
    os.replace(new, out)
    os.replace(aside, new)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """An exclusive lock on `path` (made if missing), as an open descriptor to close to let go of it, or
    None when another holder has it. The kernel drops it when its holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
