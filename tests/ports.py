"""Ports for the servers tests start (the tracking stacks, `mlflow ui`, `mlflow models serve`): taken below the
kernel's ephemeral range and claimed machine-wide, so neither an outgoing connection nor another suite running
at the same time takes one between the moment it is picked and the moment its server binds it. Picking by
binding port 0 gives an ephemeral port, which any connection may take next: with two suites at once an mlflow
server was refused its port that way."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from simclr_s2.server.config import StackError
from simclr_s2.server.preflight import check_port_free

CLAIMS = Path(tempfile.gettempdir()) / "simclr-s2-test-ports"  # one empty file a port held, for every suite here


def port_range() -> range:
    """The ports below the kernel's ephemeral range (from 10000)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(10000, low)


def claim(port: int) -> bool:
    """Hold `port` if nothing listens on it and no other test session on the machine holds it: its claim file
    is made with O_EXCL, so of two suites picking it at once one gets it. A claim a killed session left keeps
    its port out of use: one of thousands."""
    CLAIMS.mkdir(exist_ok=True)
    try:
        os.close(os.open(CLAIMS / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    try:
        check_port_free(port, "a test server")  # the stack's own check: the port binds on its host
    except StackError:
        release([port])
        return False
    return True


def release(ports: Iterable[int]) -> None:
    for port in ports:
        (CLAIMS / str(port)).unlink(missing_ok=True)


def claim_any(tries: int = 200) -> int:
    """A random port of `port_range`, claimed."""
    found = next((port for port in random.sample(port_range(), tries) if claim(port)), None)
    if found is None:
        raise RuntimeError(f"no free port in {tries} tries below the ephemeral range")
    return found


@contextmanager
def claimed_port() -> Iterator[int]:
    """A claimed port, released when the block ends."""
    port = claim_any()
    try:
        yield port
    finally:
        release([port])
