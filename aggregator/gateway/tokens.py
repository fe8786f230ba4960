"""API tokens: one per user, stored only as SHA-256 hashes in a JSON file (mode 0600).

A token is 32 random bytes (`secrets.token_urlsafe`) behind the prefix `lgn_`; it is shown once,
when it is made. The file is rewritten atomically and re-read when its mtime changes, so
`legionctl init` (writing the file directly) and the running gateway agree without a restart.

    store = TokenStore(Path("tokens.json"))
    token = store.add("admin", "admin")      # print once; only the hash is kept
    store.verify(token)                      # -> Principal(name="admin", role="admin", ...)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion.kernel.errors import AuthError, ConfigError

PERMISSIONS: dict[str, tuple[str, ...]] = {
    "admin": ("read", "write", "configure", "delete"),
    "operator": ("read", "write"),
    "viewer": ("read",),
}
"""The seed's role table: role -> the actions it may perform."""

ROLES = tuple(PERMISSIONS)
TOKEN_PREFIX = "lgn_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user: name, role and the permissions the role grants."""

    name: str
    role: str

    @property
    def permissions(self) -> tuple[str, ...]:
        """The actions this principal may perform."""
        return PERMISSIONS.get(self.role, ())

    def can(self, action: str) -> bool:
        """True when the role grants `action` (the seed's `check_permission`)."""
        return action in self.permissions


def check_permission(user_role: str, action: str) -> bool:
    """The seed's helper: may `user_role` perform `action`?"""
    return action in PERMISSIONS.get(user_role, ())


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (tokens are 256-bit random, so no salt or KDF is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Users and their hashed tokens in one JSON file; thread-safe; add/list/revoke/verify."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = os.fspath(self.path)  # `os.stat` of a str: a Path's stat costs more
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._mtime_ns: int | None = None
        self._reload(force=True)

    # -- public API --------------------------------------------------------------------------
    def add(self, name: str, role: str) -> str:
        """Create user `name` with `role`; return the new token (the only time it is visible)."""
        if not _NAME_RE.match(name or ""):
            raise ValueError(f"invalid user name {name!r}: use 1-64 of [A-Za-z0-9_.@-]")
        if role not in PERMISSIONS:
            raise ValueError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._reload()
            if name in self._users:
                raise AuthError(f"user {name!r} already exists (revoke it first)")
            self._users[name] = {"name": name, "role": role, "token_sha256": hash_token(token),
                                 "created_ms": int(time.time() * 1000)}
            self._save()
        return token

    def list(self) -> list[dict[str, Any]]:
        """Users as `{name, role, created_ms}` dicts (never the hashes), sorted by name."""
        with self._lock:
            self._reload()
            return [{"name": u["name"], "role": u["role"], "created_ms": u["created_ms"]}
                    for u in sorted(self._users.values(), key=lambda u: u["name"])]

    def revoke(self, name: str) -> bool:
        """Remove user `name`; False when unknown. Refuses to remove the last admin."""
        with self._lock:
            self._reload()
            user = self._users.get(name)
            if user is None:
                return False
            admins = [u for u in self._users.values() if u["role"] == "admin"]
            if user["role"] == "admin" and len(admins) == 1:
                raise AuthError(f"refusing to revoke {name!r}: it is the last admin")
            del self._users[name]
            self._save()
            return True

    def verify(self, token: str | None) -> Principal | None:
        """The principal owning `token`, or None. Compares every hash in constant time."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        digest = hash_token(token)
        with self._lock:
            self._reload()
            found: dict[str, Any] | None = None
            for u in self._users.values():
                if hmac.compare_digest(digest, u["token_sha256"]):
                    found = u
        return None if found is None else Principal(found["name"], found["role"])

    def __len__(self) -> int:
        with self._lock:
            self._reload()
            return len(self._users)

    # -- file handling -------------------------------------------------------------------------
    def _reload(self, force: bool = False) -> None:
        try:
            mtime = os.stat(self._file).st_mtime_ns
        except FileNotFoundError:
            self._users, self._mtime_ns = {}, None
            return
        except OSError as exc:
            raise ConfigError([f"aggregator.tokens_path: {self.path}: {exc}"]) from exc
        if not force and mtime == self._mtime_ns:
            return
        try:
            raw = json.loads(self.path.read_text())
            users = {u["name"]: {"name": str(u["name"]), "role": str(u["role"]),
                                 "token_sha256": str(u["token_sha256"]),
                                 "created_ms": int(u.get("created_ms", 0))}
                     for u in raw["users"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError([f"aggregator.tokens_path: {self.path}: unreadable token file "
                               f"({exc})"]) from exc
        bad = [n for n, u in users.items() if u["role"] not in PERMISSIONS]
        if bad:
            raise ConfigError([f"aggregator.tokens_path: {self.path}: unknown role for {bad}"])
        self._users, self._mtime_ns = users, mtime

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        data = {"version": _FILE_VERSION, "users": list(self._users.values())}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._mtime_ns = self.path.stat().st_mtime_ns
