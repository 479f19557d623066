"""`ray start --head` on loopback + `ray job submit --working-dir . -- zoocodec sweep ...`.

Only the Ray processes of this head (found by its temp dir or GCS port, and their children) are
stopped at the end;
`ray stop` would end every Ray on the machine.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_pids(*marks: str) -> list[int]:
    """Processes whose command line holds one of `marks`, and all their descendants (the dashboard and
    runtime-env agents rename themselves and keep only their parent as a trace)."""
    cmd, parent = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd[int(d.name)] = (d / "cmdline").read_bytes()
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = {p for p, c in cmd.items() if any(m.encode() in c for m in marks)}
    while grown := {p for p, pp in parent.items() if pp in found} - found:
        found |= grown
    return sorted(found)


@pytest.fixture
def head():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'zoocodec[ray]')")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="zcr", dir="/tmp")
    # The job's entrypoint `zoocodec` is found on the head's PATH: put this interpreter's bin first,
    # as an activated virtualenv would (pytest is often run as .venv/bin/python without activating).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    port, dash = free_port(), free_port()
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats",
                    f"--temp-dir={temp}"], env=env, check=True, capture_output=True, timeout=180)
    try:
        yield ray_bin, f"http://127.0.0.1:{dash}", env
    finally:
        marks = (temp, f"127.0.0.1:{port}")
        for pid in head_pids(*marks):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for pid in head_pids(*marks):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_runs_a_sweep_on_the_head(head, tmp_path, mnist_path):
    ray_bin, address, env = head
    work = tmp_path / "work"  # the working dir Ray uploads: the package and the spec
    shutil.copytree(ROOT / "zoocodec", work / "zoocodec", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "job.yaml").write_text("name: job\nmodels: [mnist-cnn]\nmethods: ['uniform:bits=6', lossless]\n")
    out = tmp_path / "out"
    deadline = time.time() + 120
    while True:  # the head's dashboard agent takes a while to accept jobs on a busy machine
        done = subprocess.run([ray_bin, "job", "submit", "--address", address, "--working-dir", ".", "--",
                               "zoocodec", "sweep", "job.yaml", "--out", str(out), "--no-report"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=400)
        if "No available agent" not in done.stderr or time.time() > deadline:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout.lower()
    rows = pq.read_table(out / "runs").to_pylist()
    assert sorted(r["status"] for r in rows) == ["ok", "ok"]
    assert "Ray cluster at" in done.stdout or "running Ray" in done.stdout
