"""Ports for the servers tests start (tests/ports.py): below the ephemeral range, one holder at a time, never one
that something listens on."""

from __future__ import annotations

import socket
from pathlib import Path

from ports import claim, claimed_port, port_range, release

from simclr_s2.server.config import HOST


def test_a_claimed_port_is_below_the_ephemeral_range_and_held_until_released():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    with claimed_port() as port:
        assert port in port_range() and port < low
        assert not claim(port)  # another suite's claim of it fails while this one holds it
    assert claim(port)
    release([port])


def test_a_port_something_listens_on_is_not_claimed():
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not claim(port)
