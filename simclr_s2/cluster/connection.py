"""Joining a Ray cluster for the length of one command, and what the cluster offers."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from simclr_s2.errors import UserError

log = logging.getLogger(__name__)

PROBE_S = 5.0  # how long a cluster address may take to accept a connection


def join(address: str, *, name: str = "ray_address", log_to_driver: bool = True,
         runtime_env: dict | None = None) -> bool:
    """Make this process a Ray driver: of the cluster at `address` (`auto`: RAY_ADDRESS, else the cluster
    this machine is a node of), or of one started here (`local`), with the job's `runtime_env`. A process
    already connected (a test session, a notebook, an outer command) keeps its cluster and job. Returns
    whether this call connected. `name` is the setting that gave `address`, for the error."""
    if ray.is_initialized():
        return False
    target = (os.environ.get("RAY_ADDRESS") or "auto") if address == "auto" else address  # "local": a new one
    _check_reachable(target, name)
    try:
        info = ray.init(address=target, logging_level=logging.WARNING, log_to_driver=log_to_driver,
                        runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{name}: cannot join a Ray cluster at {address}: {reason}; start one with "
                        f"`ray start --head` (docs/cluster.md), or use local") from None
    if info.dashboard_url:
        log.info("Ray dashboard: http://%s (tasks are named after what they run)", info.dashboard_url)
    return True


def _check_reachable(address: str, name: str) -> None:
    """One line at once for a host:port where nothing listens: Ray itself waits a minute, then aborts the
    process from its C++ core instead of raising."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_S).close()
    except OSError as error:
        raise UserError(f"{name}: nothing answers at {address} ({error.strerror or error}); is the cluster's "
                        "head node up (`ray status` there)?") from None


@contextmanager
def connected(address: str) -> Iterator[None]:
    """The body as a Ray driver (see `join`); a cluster started or joined here is left afterwards."""
    joined = join(address)
    try:
        yield
    finally:
        if joined:
            ray.shutdown()


def capacity(cpus: float, gpus: float) -> int:
    """How many tasks of `cpus` CPUs and `gpus` GPUs the cluster's nodes hold at once (at least 1). None
    fitting on any node is only a warning: an autoscaling cluster adds such a node when asked."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    per_node = [min(int(r.get("CPU", 0) // cpus), int(r.get("GPU", 0) // gpus) if gpus else 1 << 30)
                for r in nodes]
    if not any(per_node):
        log.warning("no node of the Ray cluster has %g CPUs and %g GPUs free for one task: tasks wait until "
                    "such a node joins", cpus, gpus)
    return max(1, sum(per_node))


def node_count() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))
