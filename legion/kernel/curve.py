"""CurveZMQ key material and the libzmq safety check, shared by every component.

Keys are zcert files (pyzmq's `zmq.auth` format): `NAME.key` holds the public key and metadata,
`NAME.key_secret` both keys (mode 0600). An agent's public certificate carries `node = "NAME"` in
its metadata: that binding, not the payload, decides which node a key may speak for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from legion.kernel.errors import TransportError

MIN_LIBZMQ = (4, 3, 2)  # CVE-2019-13132: remote code execution in CURVE before 4.3.2


def require_curve() -> None:
    """Refuse to run on a libzmq older than 4.3.2 or one built without CURVE."""
    version = tuple(int(x) for x in zmq.zmq_version().split(".")[:3])
    if version < MIN_LIBZMQ:
        raise TransportError(
            f"libzmq {zmq.zmq_version()} is older than 4.3.2 (CVE-2019-13132); upgrade pyzmq")
    if not zmq.has("curve"):
        raise TransportError("libzmq was built without CURVE support; encryption is mandatory")


def create_keypair(directory: Path, name: str, node: str | None = None) -> tuple[Path, Path]:
    """Create NAME.key / NAME.key_secret (zcert format) in `directory`; bind to `node` if given.

    Written here rather than by `zmq.auth.create_certificates`, which puts metadata only into
    the secret file, while the binding must travel with the public certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    meta = f'    node = "{node}"\n' if node else ""
    body = f"metadata\n{meta}curve\n    public-key = \"{public.decode()}\"\n"
    pub_path, sec_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    _write_private(pub_path, "#   ZeroMQ CURVE Public Certificate (Legion Monitor)\n" + body, 0o644)
    _write_private(sec_path, "#   ZeroMQ CURVE **Secret** Certificate (Legion Monitor)\n" + body
                   + f"    secret-key = \"{secret.decode()}\"\n", 0o600)
    return pub_path, sec_path


def _write_private(path: Path, text: str, mode: int) -> None:
    # created with its final mode, so a secret is never readable by others, even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def load_public(path: Path) -> bytes:
    """Public key (z85) from a .key or .key_secret file."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read public key {path}: {exc}") from exc
    return public


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a .key_secret file."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read secret key {path}: {exc}") from exc
    if not secret:
        raise TransportError(f"{path} holds no secret key")
    return public, secret


_NODE_META = re.compile(r'^\s*node\s*=\s*"([^"]*)"\s*$', re.MULTILINE)


def read_node_binding(path: Path) -> tuple[bytes, str | None]:
    """(public key, bound node name or None) of a public certificate file."""
    public = load_public(path)
    m = _NODE_META.search(path.read_text(errors="replace"))
    return public, (m.group(1) if m else None)


def client_socket(ctx: zmq.Context[zmq.Socket[Any]], kind: int, server_public: bytes,
                  keypair: tuple[bytes, bytes], heartbeat_ms: int = 2000) -> zmq.Socket[Any]:
    """A socket set up as a Curve client of `server_public` (connect it afterwards)."""
    require_curve()
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_serverkey = server_public
    _keepalive(sock, heartbeat_ms)
    return sock


def server_socket(ctx: zmq.Context[zmq.Socket[Any]], kind: int, keypair: tuple[bytes, bytes],
                  heartbeat_ms: int = 2000) -> zmq.Socket[Any]:
    """A socket set up as a Curve server (bind it afterwards; ZAP decides who may connect)."""
    require_curve()
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_server = True
    _keepalive(sock, heartbeat_ms)
    return sock


def _keepalive(sock: zmq.Socket[Any], heartbeat_ms: int = 2000) -> None:
    # TCP keepalive plus ZMTP heartbeats: a peer that vanished is noticed in seconds, not hours.
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
    sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms * 3)
    sock.setsockopt(zmq.HEARTBEAT_TTL, heartbeat_ms * 3)
    sock.setsockopt(zmq.LINGER, 0)
