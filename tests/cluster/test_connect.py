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
from zoocodec.cluster import reaper
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


def test_ray_imported_before_auth_is_set_is_refused_with_one_line():
    pytest.importorskip("ray")
    code = ("import ray\nfrom zoocodec import cluster\n"
            "try:\n    cluster.connect().__enter__()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    env = script_env()
    env.pop("RAY_AUTH_MODE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ZoocodecError Ray was imported before zoocodec could turn on token"), out.stderr


DRIVER = """
import time
from zoocodec import cluster
with cluster.connect(num_cpus=1):
    print("up", flush=True)
    time.sleep(600)
"""


WATCHED = """
import subprocess, time
from zoocodec.cluster import reaper
watchdog = reaper.start()
child = subprocess.Popen(["sleep", "600"], start_new_session=True)
reaper.watch(watchdog, {child.pid: reaper.start_time(child.pid)})
print(child.pid, flush=True)
time.sleep(600)
"""


def gone_within(pids: dict[int, str], seconds: float) -> list[int]:
    """Which of `pids` (pid: start time) still run after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := [p for p, s in pids.items() if reaper.start_time(p) == s]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_the_reaper_ends_what_it_watches_when_its_driver_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", WATCHED], env=script_env(), stdout=subprocess.PIPE, text=True)
    try:
        child = int(driver.stdout.readline())
        watched = {child: reaper.start_time(child)}
        assert gone_within(watched, 0.5) == [child]  # in a session of its own: nothing else would end it
    finally:
        driver.kill()
        driver.wait()
    assert not gone_within(watched, 10)


@pytest.mark.ray
@pytest.mark.slow
def test_killing_the_driver_ends_its_embedded_ray():
    """SIGKILL of the driver ends every process of its embedded Ray, the agents included (without the
    reaper the dashboard and runtime-env agents outlived it by about a minute)."""
    pytest.importorskip("ray")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=script_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "up"
        ray_pids = {p: s for p, s in reaper.descendants(driver.pid).items() if reaper.is_ray(p)}
        titles = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0] for p in ray_pids}
        assert {b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"} <= titles, titles
    finally:
        driver.kill()
        driver.wait()
    left = gone_within(ray_pids, 30)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in left]
