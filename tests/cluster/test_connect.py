"""Joining and starting Ray: public Ray API only, loopback only, unreachable addresses fail fast."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import script_env
from zoocodec import cluster
from zoocodec.errors import ZoocodecError

ROOT = Path(__file__).resolve().parents[2]


def test_no_private_ray_modules():
    users = [str(p.relative_to(ROOT)) for p in (ROOT / "zoocodec").rglob("*.py") if "ray._private" in p.read_text()]
    assert users == []


def test_check_reachable_fails_fast_and_passes_a_listening_port():
    start = time.monotonic()
    with pytest.raises(ZoocodecError, match=r"cannot reach the Ray cluster at 127.0.0.1:1 .*waited up to 2 s"):
        cluster.check_reachable("127.0.0.1:1", timeout=2)
    assert time.monotonic() - start < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        cluster.check_reachable(f"ray://127.0.0.1:{s.getsockname()[1]}")
    cluster.check_reachable("auto")  # no port: left to Ray


def test_embedded_ray_refuses_to_listen_on_every_address():
    pytest.importorskip("ray")
    code = ("from zoocodec import cluster\n"
            "try:\n    cluster.connect().__enter__()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=script_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1"),
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ZoocodecError an embedded Ray would listen on every network address"), out.stderr
