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
from collections.abc import Collection
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


def free_ports(n: int, host: str = "127.0.0.1", avoid: Collection[int] = ()) -> list[int]:
    """`n` distinct TCP ports on `host`, outside the ephemeral range and not in `avoid`, each
    free a moment ago. Ports for one setup are picked together: none is bound until later, so
    separate picks could hand out the same port twice (a CI run lost the demo test to its ingest
    port drawn equal to the web port it had been given)."""
    hi = ephemeral_start()
    lo = LOWEST if hi > LOWEST + 1_000 else 1_024
    rng = random.SystemRandom()
    taken = set(avoid)
    out: list[int] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        port = rng.randrange(lo, hi)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        taken.add(port)
        out.append(port)
    if len(out) < n:
        raise OSError(f"no {n} free ports on {host} in {lo}-{hi - 1}")
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port on `host`, outside the ephemeral range, that was free a moment ago."""
    return free_ports(1, host)[0]
