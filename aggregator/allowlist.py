"""The Curve allowlist: a directory of agent public certificates, each bound to one node.

ZAP (ZeroMQ's authentication protocol) asks `KeyRegistry.callback` at every handshake; the
directory is rescanned when its listing or any file's mtime changes, so adding or removing a key
takes effect without a restart. There is no allow-any path, and an empty allowlist refuses to
start (pyzmq would only log a failed load and then let nobody, or everybody, in).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from legion.kernel.curve import read_node_binding
from legion.kernel.errors import TransportError

log = logging.getLogger("legion.aggregator.allowlist")

class KeyRegistry:
    """Thread-safe map of authorized public keys (z85) to the node each is bound to."""

    def __init__(self, directory: Path,
                 on_denied: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.on_denied = on_denied  # told the reason of each refused handshake
        self._lock = threading.Lock()
        self._fingerprint: tuple[tuple[str, int], ...] | None = None
        self._keys: dict[bytes, str] = {}
        self.refresh()
        if not self._keys:
            raise TransportError(
                f"no authorized agent keys in {directory}: refusing to start "
                "(add one with `legionctl keys add-agent NODE --config F`)")

    def refresh(self) -> bool:
        """Rescan the directory if it changed; return True when the key set changed."""
        try:
            files = sorted(self.directory.glob("*.key"))
            fingerprint = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        except OSError as exc:
            log.warning("event=allowlist_scan_failed dir=%s error=%s", self.directory, exc)
            return False
        if fingerprint == self._fingerprint:
            return False
        keys: dict[bytes, str] = {}
        for f in files:
            try:
                public, node = read_node_binding(f)
            except (TransportError, OSError) as exc:
                log.warning("event=bad_certificate file=%s error=%s", f, exc)
                continue
            if node is None:
                log.warning("event=certificate_without_node file=%s", f)
                continue
            keys[public] = node
        with self._lock:
            changed = keys != self._keys
            self._keys = keys
            self._fingerprint = fingerprint
        if changed:
            log.info("event=allowlist_loaded keys=%d dir=%s", len(keys), self.directory)
        return changed

    def node_for(self, public_z85: bytes) -> str | None:
        """The node a key is bound to, or None when the key is not (or no longer) authorized."""
        with self._lock:
            return self._keys.get(public_z85)

    def nodes(self) -> dict[bytes, str]:
        """A copy of the current key → node map."""
        with self._lock:
            return dict(self._keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials-provider hook: is this client key allowed right now?"""
        self.refresh()
        allowed = self.node_for(key) is not None
        if not allowed and self.on_denied is not None:
            self.on_denied("unknown_key")
        return allowed

def start_authenticator(ctx: zmq.Context[zmq.Socket[Any]],
                        registry: KeyRegistry) -> ThreadAuthenticator:
    """Start the ZAP handler for `ctx`, answering from `registry` (User-Id = the z85 key)."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("legion.aggregator.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=registry)
    return auth
