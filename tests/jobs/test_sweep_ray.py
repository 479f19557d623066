"""Sweeps on a real embedded Ray: rows, resume, a failing item, a killed worker, a killed driver.

One embedded Ray (2 CPUs, loopback) serves the whole module; each test writes its own
results folder.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from zoocodec import cluster
from zoocodec.cluster import reaper
from zoocodec.jobs import results as res, run as runner, spec as sweep_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_address(ray_api):
    with cluster.connect(num_cpus=2):
        yield ray_api.get_runtime_context().gcs_address


def spec_file(tmp_path: Path, models: list[str], methods: list[str], name: str = "t") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nmodels: {models}\nmethods: {methods}\nmax_retries: 2\n")
    return p


def rows(out: Path) -> list[dict]:
    return res.Results(out).runs().to_pylist()


def assert_exactly_once(sweep: sweep_spec.Sweep) -> list[dict]:
    got = rows(sweep.out)
    counts = Counter(r["work_id"] for r in got)
    assert set(counts) == {i.work_id for i in sweep.items}
    assert max(counts.values()) == 1
    tensors = Counter(res.Results(sweep.out).tensors(columns=["work_id"])["work_id"].to_pylist())
    for r in got:  # every ok row has exactly its tensors, once
        if r["status"] == "ok":
            assert tensors[r["work_id"]] > 0
    return got


def test_sweep_writes_rows_and_rerun_skips(ray_address, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    spec = spec_file(tmp_path, ["mnist-cnn", str(broken)], ["lossless", "uniform:bits=4", "uniform:bits=8"])
    sweep = sweep_spec.load(spec, tmp_path / "out")
    first = runner.run(sweep)
    assert (first.ok, first.failed, first.skipped) == (3, 3, 0)
    got = assert_exactly_once(sweep)
    ok = {r["method"]: r for r in got if r["status"] == "ok"}
    assert all(r["model"] == "mnist-cnn" and r["weights"] == 390410 for r in ok.values())
    # more bits: more bytes and less distortion; lossless has no distortion at all
    b4, b8 = ok["uniform:bits=4,per_tensor=False,coder=ans"], ok["uniform:bits=8,per_tensor=False,coder=ans"]
    assert b4["bits_per_weight"] < b8["bits_per_weight"] and b4["sqnr_db"] < b8["sqnr_db"]
    assert ok["lossless:coder=float"]["sqnr_db"] is None and ok["lossless:coder=float"]["mse"] == 0
    assert all(r["ratio"] == pytest.approx(r["bytes_in"] / r["bytes_out"]) for r in ok.values())
    assert all(r["encode_s"] > 0 and r["decode_s"] > 0 and r["model_sha256"] for r in ok.values())
    failed = [r for r in got if r["status"] == "failed"]
    assert len(failed) == 3 and all("broken.safetensors" in r["error"] for r in failed)
    # the tensors table holds every tensor of the model per ok item, sizes adding up to the run's
    t = res.Results(sweep.out).tensors().to_pylist()
    for r in ok.values():
        mine = [x for x in t if x["work_id"] == r["work_id"]]
        assert sum(x["bytes_out"] for x in mine) <= r["bytes_out"]
        assert sum(x["weights"] for x in mine) == r["weights"]

    second = runner.run(sweep)  # finished items are skipped, failed ones are tried again
    assert (second.skipped, second.ok, second.failed) == (3, 0, 3)
    assert_exactly_once(sweep)


def test_readable_by_pandas_and_duckdb(ray_address, tmp_path):
    sweep = sweep_spec.load(spec_file(tmp_path, ["mnist-cnn"], ["uniform:bits=6"]), tmp_path / "out")
    runner.run(sweep)
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(sweep.out / "runs")
    assert list(df["status"]) == ["ok"]
    duckdb = pytest.importorskip("duckdb")
    n, total = duckdb.sql(
        f"SELECT count(*), sum(weights) FROM read_parquet('{sweep.out}/tensors/*/*.parquet')"
    ).fetchall()[0]
    assert total == 390410 and n == 10


def ray_workers_running(task: str = "ray::run_item") -> list[int]:
    """Pids of Ray workers executing our task (Ray sets the process title)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(task.encode()):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_killed_worker_is_retried_and_rows_appear_once(ray_address, tmp_path):
    sweep = sweep_spec.load(
        spec_file(tmp_path, ["effnet-lite0"], ["uniform:bits=4", "uniform:bits=6", "uniform:bits=8"]), tmp_path / "out"
    )
    killed = []

    def killer():
        deadline = time.time() + 60
        while not killed and time.time() < deadline:
            for pid in ray_workers_running():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    outcome = runner.run(sweep)
    t.join()
    assert killed, "no worker was seen running"
    assert (outcome.ok, outcome.failed) == (3, 0)
    assert all(r["status"] == "ok" for r in assert_exactly_once(sweep))


def test_killed_driver_then_rerun_completes_without_duplicates(ray_address, tmp_path):
    sweep = sweep_spec.load(spec_file(tmp_path, ["effnet-lite0"], [f"uniform:bits={b}" for b in range(4, 9)]),
                            tmp_path / "out")
    driver = subprocess.Popen([sys.executable, "-m", "zoocodec.cli", "sweep", str(sweep.source),
                               "--out", str(sweep.out), "--address", ray_address, "--no-report", "--max-parallel", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={k: v for k, v in os.environ.items() if k != cluster.LOOPBACK_ENV})
    deadline = time.time() + 90
    while time.time() < deadline and driver.poll() is None:
        if list((sweep.out / "runs").glob("*/*.parquet")):
            break
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {r["work_id"] for r in rows(sweep.out)}
    assert 0 < len(before) < len(sweep.items)
    outcome = runner.run(sweep)
    assert outcome.skipped == len(before) and outcome.ok == len(sweep.items) - len(before)
    assert all(r["status"] == "ok" for r in assert_exactly_once(sweep))


def test_two_sweeps_at_once_on_one_folder_run_each_item_once(ray_address, tmp_path):
    """Two drivers (threads here, on one Ray) share one results folder: each item runs once in all."""
    sweep = sweep_spec.load(spec_file(tmp_path, ["mnist-cnn"], [f"uniform:bits={b}" for b in range(3, 9)]),
                            tmp_path / "out")
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(runner.run(sweep, max_parallel=1))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("two sweeps at once:", [(o.ok, o.skipped) for o in outcomes])
    assert sum(o.ok for o in outcomes) == len(sweep.items) and not any(o.failed for o in outcomes)
    assert all(o.ok + o.skipped == len(sweep.items) for o in outcomes)
    assert all(r["status"] == "ok" for r in assert_exactly_once(sweep))
    assert not list(sweep.out.rglob(".*zoocodec-tmp*"))


@pytest.mark.slow
def test_two_sweep_processes_on_one_folder_run_each_item_once(ray_address, tmp_path):
    """A `zoocodec sweep` process and a sweep in this process, at once, on one --out."""
    sweep = sweep_spec.load(
        spec_file(tmp_path, ["mnist-cnn", "fmnist-cnn"], [f"uniform:bits={b}" for b in range(3, 9)]), tmp_path / "out"
    )
    first = subprocess.Popen([sys.executable, "-m", "zoocodec.cli", "sweep", str(sweep.source), "--out", str(sweep.out),
                              "--address", ray_address, "--no-report", "--max-parallel", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={k: v for k, v in os.environ.items() if k != cluster.LOOPBACK_ENV})
    deadline = time.time() + 90
    while time.time() < deadline and not list((sweep.out / ".claims").glob("*.lock")):
        time.sleep(0.05)
    second = runner.run(sweep, max_parallel=1)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    ok, failed, skipped = map(int, re.search(r"(\d+) ok, (\d+) failed, (\d+) already done", err).groups())
    print(
        f"two sweep processes: the CLI ran {ok}, skipped {skipped}; this one ran {second.ok}, skipped {second.skipped}"
    )
    assert ok + second.ok == len(sweep.items) and failed == second.failed == 0
    assert ok > 0 and second.ok > 0  # they did run at the same time
    assert ok + skipped == second.ok + second.skipped == len(sweep.items)
    assert all(r["status"] == "ok" for r in assert_exactly_once(sweep))
    assert not list(sweep.out.rglob(".*zoocodec-tmp*"))


def test_embedded_ray_listens_on_loopback_only(ray_address):
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("no `ss` here to list listening sockets")
    assert ray_address.startswith("127.0.0.1:")
    mine = set(reaper.descendants(os.getpid()))
    listening = []
    for line in subprocess.run([ss, "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & mine:
            listening.append(line.split()[3])
    assert listening, "found no listening sockets of the embedded Ray"
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for a in listening), listening
