"""Ends an embedded Ray's processes when the process that started it ends, however it ends.

Ray's own fate sharing is not enough: when the driver is SIGKILLed, the GCS and the raylet
die with it, but the raylet's dashboard and runtime-env agents, which log that they are
exiting, ran on for 60-70 s more here (Ray 2.60; their last step reports to the dead GCS; see
also ray-project/ray#52385). So
`zoocodec.cluster.connect` starts this small process (no Ray, no torch) beside an embedded
Ray and tells it which processes Ray started; when the driver's end of the pipe closes
(a clean exit, an exception, SIGKILL), it sends SIGTERM to those still running, then SIGKILL.
Linux only (it reads /proc); elsewhere nothing is started.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 3.0  # between SIGTERM and SIGKILL


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 1: parent pid, 19: start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """When `pid` started, or None when it is gone (or a zombie)."""
    fields = _stat(pid)
    return fields[19] if fields and fields[0] != "Z" else None


def descendants(root: int) -> dict[int, str]:
    """Every process below `root`, with its start time (which tells a reused pid apart)."""
    parent, start = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (fields := _stat(int(d.name))):
            parent[int(d.name)], start[int(d.name)] = int(fields[1]), fields[19]
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return {p: start[p] for p in found}


def is_ray(pid: int) -> bool:
    """Whether `pid` runs Ray's code (its binaries, scripts, or a process titled ray::...)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmd.startswith(b"ray::") or b"/ray/" in cmd


def start() -> subprocess.Popen | None:
    """Start the reaper; its stdin is the pipe whose closing ends what it is told of."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "zoocodec.cluster.reaper"], stdin=subprocess.PIPE, text=True,
                            start_new_session=True,  # a Ctrl-C to the terminal's group does not stop it early
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch(reaper: subprocess.Popen | None, pids: dict[int, str]) -> None:
    """Tell the reaper about `pids` (pid: start time)."""
    if reaper is not None:
        reaper.stdin.writelines(f"{p} {s}\n" for p, s in pids.items())
        reaper.stdin.flush()


def release(reaper: subprocess.Popen | None) -> None:
    """The driver is done with Ray (after ray.shutdown): the reaper ends whatever is left."""
    if reaper is not None:
        with contextlib.suppress(OSError):
            reaper.stdin.close()


def main() -> None:
    pids = {}
    for line in sys.stdin:  # until the driver closes the pipe or dies
        pid, started = line.split()
        pids[int(pid)] = started

    def alive() -> list[int]:
        return [p for p, s in pids.items() if start_time(p) == s]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive():
            with contextlib.suppress(OSError):
                os.kill(p, sig)
        deadline = time.monotonic() + GRACE_S
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


if __name__ == "__main__":
    main()
