"""Picking a free loopback TCP port for a process that will bind it later (tests, the demo,
benches).

A port the kernel hands out for `bind(0)` comes from its ephemeral range, the same range it
draws the local port of every outgoing connection from: between the pick and the later bind,
any client socket on the host (an agent connecting, a status poll) may take it, and the bind
fails with "already in use" (it did, once in a CI run). So the pick is made below that range,
where only a process that binds that very port can collide.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000
"""Ports are picked from here up to the start of the ephemeral range."""
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host`, outside the ephemeral range, that was free a moment ago."""
    hi = ephemeral_start()
    lo = LOWEST if hi > LOWEST + 1_000 else 1_024
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(lo, hi)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded host: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])
