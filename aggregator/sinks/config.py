"""The `sinks` config section: `sinks.remote_write`, a list of remote-write destinations.

Example (`monitoring_config.json`)::

    "sinks": {"remote_write": [
        {"name": "prom", "url": "http://127.0.0.1:9090/api/v1/write",
         "bearer_token_file": "keys/prom.token", "tls_ca_path": "certs/prom-ca.crt",
         "queue_max_bytes": 1073741824}]}

The glue composes this section with the others (legion/cli/config.py); `validate()` checks it.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion.kernel.config import resolve_path, to_plain

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """One Prometheus remote-write 1.0 destination and its durable queue."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth_username: str | None = None
    basic_auth_password_file: str | None = None
    bearer_token_file: str | None = None
    tls_ca_path: str | None = None
    queue_path: str | None = None  # default: sinks/<name> beside storage.db_path
    queue_max_bytes: int = 1 << 30  # drop-oldest (counted) beyond this
    queue_sync_interval_ms: int = 1000  # fsync cadence; the checkpoint fsyncs too
    shards: int = 4
    max_samples_per_send: int = 5000
    timeout_secs: float = 30.0
    min_backoff_secs: float = 0.1
    max_backoff_secs: float = 30.0

    def resolved(self, base_dir: str | Path) -> RemoteWriteConfig:
        """This destination with its files resolved against `base_dir`."""
        def path(p: str | None) -> str | None:
            return str(resolve_path(base_dir, p)) if p else p  # unset stays unset
        return dataclasses.replace(
            self, basic_auth_password_file=path(self.basic_auth_password_file),
            bearer_token_file=path(self.bearer_token_file), tls_ca_path=path(self.tls_ca_path),
            queue_path=path(self.queue_path))


@dataclass(frozen=True, slots=True)
class SinksConfig:
    """Extra destinations besides the DuckDB store (which is always the first sink)."""

    remote_write: tuple[RemoteWriteConfig, ...] = ()

    def validate(self) -> list[str]:
        """Every problem of the section beyond types, with its key path."""
        return sinks_problems(to_plain(self))

    def resolved(self, base_dir: str | Path) -> SinksConfig:
        """This section with every destination's files resolved against `base_dir`."""
        return SinksConfig(tuple(rw.resolved(base_dir) for rw in self.remote_write))


def sinks_problems(values: Any) -> list[str]:
    """Checks beyond types on the plain (JSON) form of the `sinks` section, with key paths."""
    if not isinstance(values, dict):
        return []
    out: list[str] = []
    seen: set[str] = set()
    for i, rw in enumerate(values.get("remote_write") or ()):
        if not isinstance(rw, dict):
            continue
        p = f"sinks.remote_write[{i}]"
        name, url = rw.get("name"), rw.get("url")
        if isinstance(name, str):
            if not _NAME_RE.match(name):
                out.append(f"{p}.name: must match {_NAME_RE.pattern} (got {name!r})")
            elif name in seen:
                out.append(f"{p}.name: duplicate sink name {name!r}")
            seen.add(name)
        if isinstance(url, str) and not _is_http_url(url):
            out.append(f"{p}.url: must be an http:// or https:// URL with a host (got {url!r})")
        if rw.get("bearer_token_file") and (rw.get("basic_auth_username")
                                            or rw.get("basic_auth_password_file")):
            out.append(f"{p}: use bearer_token_file or basic_auth_*, not both")
        if bool(rw.get("basic_auth_username")) != bool(rw.get("basic_auth_password_file")):
            out.append(f"{p}: basic_auth_username and basic_auth_password_file go together")
        for key, ok, msg in _RULES:
            v = rw.get(key)
            if v is not None and not ok(v):
                out.append(f"{p}.{key}: {msg} (got {v!r})")
    return out


_RULES: list[tuple[str, Any, str]] = [
    ("queue_max_bytes", lambda v: v >= 1 << 20, "must be >= 1 MiB"),
    ("queue_sync_interval_ms", lambda v: v >= 0, "must be >= 0"),
    ("shards", lambda v: 1 <= v <= 64, "must be in 1..64"),
    ("max_samples_per_send", lambda v: v >= 1, "must be >= 1"),
    ("timeout_secs", lambda v: v > 0, "must be > 0"),
    ("min_backoff_secs", lambda v: v > 0, "must be > 0"),
    ("max_backoff_secs", lambda v: v > 0, "must be > 0"),
]


def _is_http_url(url: str) -> bool:
    """An http(s) URL naming a host (the sink connects to it)."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return url.startswith(("http://", "https://")) and bool(host)
