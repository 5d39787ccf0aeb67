"""Checks that turn a taken port or a missing Python package into a one-line error before anything
starts or stops, instead of a half-started stack and a traceback."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys
from types import ModuleType

from simclr_s2.server.config import HOST, StackError


def check_port_free(port: int, who: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise StackError(f"port {port} on {HOST}, wanted by {who}, is already in use") from None


def check_module(module: str, package: str) -> None:
    """Whether a package is installed, without paying for its import (mlflow takes seconds)."""
    if importlib.util.find_spec(module) is None:
        raise StackError(f"{sys.executable} cannot import {module}: pip install {package}")


def require(module: str, package: str) -> ModuleType:
    """Import a package when a step needs it, so commands that never touch it (stop, -h) run without it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StackError(
            f"Python package {package} is missing from {sys.executable}: pip install {package}"
        ) from None
