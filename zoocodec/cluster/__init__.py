"""Ray bring-up: an embedded local Ray on loopback by default, or joining an existing cluster.

Two rules keep a laptop safe and the commands consistent:
- every Ray process zoocodec starts listens on 127.0.0.1 only (Ray reads
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 at import time and then uses the loopback address
  for the node, so this module imports Ray only after setting it);
- token authentication is on (RAY_AUTH_MODE=token, the token in ~/.ray/auth_token),
  the same mode for ray.init, `ray start` and `ray job submit`, which otherwise disagree.
An embedded Ray ends with the process that started it, even when that one is killed
(zoocodec.cluster.reaper).

Custom resources: `nvenc` on nodes whose GPU has a hardware encoder (detected with
zoocodec.codecs.nvdec when present), so hardware video encodes land only there.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from zoocodec.cluster import reaper
from zoocodec.errors import ZoocodecError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 10.0  # how long joining waits for the cluster's address to answer


def nvenc_available() -> bool:
    """True when this machine's GPU has an NVENC encoder (False without the video codecs)."""
    try:
        from zoocodec.codecs.nvdec import nvenc_available as probe
    except ImportError:
        return False
    try:
        return bool(probe())
    except Exception:  # a broken driver means no encoder, not a failed sweep
        return False


def detect_resources() -> dict[str, float]:
    """Custom Ray resources of this machine (GPUs and CPUs Ray counts itself)."""
    return {"nvenc": 1.0} if nvenc_available() else {}


def worker_env() -> dict[str, str]:
    """Environment variables workers need to resolve models like the driver does."""
    return {k: os.environ[k] for k in ("ZOOCODEC_ZOO", "HF_HUB_OFFLINE") if k in os.environ}


def runtime_env(py_modules: list[str] | None = None) -> dict | None:
    """The job's runtime environment: worker_env(), and `py_modules` (local folders or .py files,
    which Ray uploads by content and puts on every worker's path), or None when empty."""
    env: dict = {}
    if worker_env():
        env["env_vars"] = worker_env()
    if py_modules:
        env["py_modules"] = list(py_modules)
    return env or None


def _init(ray, py_modules: list[str] | None, **kwargs) -> None:
    """ray.init with runtime_env(py_modules); a module Ray cannot upload (too large, unreadable)
    is one line naming it."""
    try:
        ray.init(runtime_env=runtime_env(py_modules), **kwargs)
    except ray.exceptions.RuntimeEnvSetupError as e:
        why = " ".join(str(e).split())[:500] or type(e).__name__
        raise ZoocodecError(f"cannot ship {', '.join(py_modules or [])} to the Ray workers: {why}") from None


def _host_port(address: str) -> tuple[str, int | None]:
    host, _, port = address.split("://")[-1].rstrip("/").rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else (address.split("://")[-1], None)


def _is_loopback(address: str) -> bool:
    host = _host_port(address)[0]
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _would_bind_everywhere() -> bool:
    """What Ray reads from LOOPBACK_ENV at import (its default on Linux: every address)."""
    value = os.environ.get(LOOPBACK_ENV)
    return True if value is None else value.lower() in ("true", "1")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in `timeout` seconds with one line when nothing answers at HOST:PORT (Ray itself
    retries for minutes); `auto` and addresses without a port are left to Ray."""
    host, port = _host_port(address)
    if port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise ZoocodecError(f"cannot reach the Ray cluster at {address} ({why}; waited up to {timeout:g} s); "
                            "is `ray start --head` running there?") from None


@dataclass(frozen=True)
class Connection:
    where: str  # for people: which Ray this is
    embedded: bool  # started here for this call: its resources are all there will be


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None,
            py_modules: list[str] | None = None) -> Iterator[Connection]:
    """Use the Ray already initialised in this process, join `address` (or RAY_ADDRESS), or
    start an embedded local Ray bound to loopback.

    `py_modules` (local package folders or .py files) are shipped to the workers when this call
    starts or joins Ray; a Ray already initialised here keeps the runtime environment it was
    given. Only what this call started is shut down on exit.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if "ray" in sys.modules and "RAY_AUTH_MODE" not in os.environ:  # Ray read "disabled" at import
        raise ZoocodecError("Ray was imported before zoocodec could turn on token authentication, so this process "
                            "and the Ray it starts or joins would disagree; set RAY_AUTH_MODE=token in the "
                            "environment")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if not address:
        if "ray" not in sys.modules:
            os.environ.setdefault(LOOPBACK_ENV, "0")
        import ray

        if ray.is_initialized():
            yield Connection(f"the running Ray ({ray.get_runtime_context().gcs_address})", False)
            return
        if _would_bind_everywhere():
            raise ZoocodecError(f"an embedded Ray would listen on every network address ({LOOPBACK_ENV} is set, "
                                f"or Ray was imported before zoocodec); set {LOOPBACK_ENV}=0 in the environment, "
                                "or join a cluster with --address")
        watchdog = reaper.start()
        before = reaper.descendants(os.getpid())
        try:
            _init(ray, py_modules, num_cpus=num_cpus or os.cpu_count(), resources=detect_resources(),
                  include_dashboard=False, logging_level="WARNING", log_to_driver=False)
            reaper.watch(watchdog, {p: s for p, s in reaper.descendants(os.getpid()).items()
                                    if p not in before and reaper.is_ray(p)})
            if not _is_loopback(ray.get_runtime_context().gcs_address):  # Ray imported with other settings
                raise ZoocodecError(f"the embedded Ray listened on {ray.get_runtime_context().gcs_address}, not "
                                    f"loopback; set {LOOPBACK_ENV}=0 before anything imports Ray, or join a "
                                    "cluster with --address")
            yield Connection(f"embedded Ray ({ray.get_runtime_context().gcs_address}, "
                             f"{int(ray.cluster_resources().get('CPU', 0))} CPUs)", True)
        finally:
            ray.shutdown()
            reaper.release(watchdog)
        return
    check_reachable(address)
    if "ray" not in sys.modules and _is_loopback(address):
        os.environ.setdefault(LOOPBACK_ENV, "0")  # else Ray rewrites 127.0.0.1 to this host's network address
    import ray

    if ray.is_initialized():
        yield Connection(f"the running Ray ({ray.get_runtime_context().gcs_address})", False)
        return
    try:
        _init(ray, py_modules, address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ZoocodecError(f"cannot join the Ray cluster at {address}: {e}") from None
    try:
        yield Connection(f"Ray cluster at {address}", False)
    finally:
        ray.shutdown()
