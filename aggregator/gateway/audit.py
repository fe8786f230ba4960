"""Audit log: one JSON line per write action (who, what, when, outcome), file mode 0600."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from legion.aggregator.gateway.timefmt import iso_ms


class AuditLog:
    """Append-only JSON-lines audit trail; thread-safe; each record is flushed and fsynced."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, *, user: str | None, role: str | None, action: str, target: str,
               outcome: str, status: int, remote: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one record and return it."""
        now = int(time.time() * 1000)
        entry: dict[str, Any] = {"ts": iso_ms(now), "ts_ms": now, "user": user, "role": role,
                                 "action": action, "target": target, "outcome": outcome,
                                 "status": status, "remote": remote}
        if details:
            entry["details"] = details
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def read(self) -> list[dict[str, Any]]:
        """All records (for tests and `legionctl`); missing file -> []."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
