"""The alert journal: alert state, transitions, incidents, silences, notification attempts and
the notification log, in the store's DuckDB file (tables `alert_*`, schema v3).

Writes go through `Store.cursor()` under one lock (the engine thread and the notifier threads
share it); each write is its own short transaction, so a kill -9 loses at most the write in
flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class Journal:
    """Reads and writes the `alert_*` tables through a `Store`."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.errors = 0

    def _run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock, self.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                for sql, params in statements:
                    cur.execute(sql, list(params))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.store.cursor() as cur:
            return list(cur.execute(sql, list(params)).fetchall())

    # ---- alert state and transitions ------------------------------------------------------
    def save_alerts(self, docs: Iterable[Mapping[str, Any]],
                    events: Iterable[tuple[int, str, str, str, str, float | None,
                                           Mapping[str, str]]],
                    now_ms: int) -> None:
        """Upsert alert documents (by fingerprint) and append transitions, in one transaction
        (bulk statements: a round that changes a thousand alerts is a handful of statements)."""
        docs = list(docs)
        events = list(events)
        if not docs and not events:
            return
        with self._lock, self.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                if docs:
                    cur.execute("DELETE FROM alert_state WHERE list_contains(?, fingerprint)",
                                [[d["fingerprint"] for d in docs]])
                    rows = [[d["fingerprint"], d["id"], d["rule_id"], d["state"],
                             json.dumps(d, default=str), now_ms]
                            for d in docs if d["state"] != "inactive"]
                    if rows:
                        cur.executemany("INSERT INTO alert_state VALUES (?, ?, ?, ?, ?, ?)", rows)
                if events:
                    cur.executemany("INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    [[ts, aid, rule, frm, to, value,
                                      json.dumps(dict(labels), sort_keys=True)]
                                     for ts, aid, rule, frm, to, value, labels in events])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def load_alerts(self) -> list[dict[str, Any]]:
        """Every stored alert document (pending, firing, recently resolved)."""
        return [json.loads(r[0]) for r in self._rows("SELECT doc FROM alert_state")]

    def events(self, since_ms: int | None = None, alert_id: str | None = None,
               limit: int = 500) -> list[dict[str, Any]]:
        """Transitions, newest first."""
        sql = "SELECT * FROM alert_events WHERE ts_ms >= ?"
        params: list[Any] = [since_ms or 0]
        if alert_id:
            sql += " AND alert_id = ?"
            params.append(alert_id)
        rows = self._rows(sql + " ORDER BY ts_ms DESC, rowid DESC LIMIT ?", [*params, limit])
        return [{"ts_ms": r[0], "alert_id": r[1], "rule_id": r[2], "from": r[3], "to": r[4],
                 "value": r[5], "labels": json.loads(r[6])} for r in rows]

    def firing_history(self, alert_id: str, since_ms: int,
                       self_resolve_ms: int = 300_000) -> tuple[int, int]:
        """(firings, firings that resolved by themselves within `self_resolve_ms`, without an
        acknowledgement) of one alert since `since_ms`, from its stored transitions."""
        rows = self._rows("SELECT ts_ms, to_state FROM alert_events WHERE alert_id = ? "
                          "AND ts_ms >= ? ORDER BY ts_ms, rowid", [alert_id, since_ms])
        fired = selfres = 0
        fired_at: int | None = None
        for ts, to in rows:
            if to == "firing":
                fired, fired_at = fired + 1, ts
            elif to == "acknowledged":
                fired_at = None
            elif to == "resolved" and fired_at is not None:
                selfres += ts - fired_at <= self_resolve_ms
                fired_at = None
        return fired, selfres

    # ---- incidents ------------------------------------------------------------------------
    def open_incident(self, incident_id: str, group_key: str, receiver: str, opened_ms: int,
                      alert_ids: Iterable[str]) -> None:
        """Record a new incident (one notification group becoming active)."""
        self._run([("INSERT INTO alert_incidents VALUES (?, ?, ?, ?, NULL, ?)",
                    [incident_id, group_key, receiver, opened_ms, json.dumps(sorted(alert_ids))])])

    def update_incident(self, incident_id: str, alert_ids: Iterable[str],
                        closed_ms: int | None = None) -> None:
        """Update an incident's alerts, and close it when `closed_ms` is given."""
        self._run([("UPDATE alert_incidents SET alerts = ?, closed_ms = ? WHERE id = ?",
                    [json.dumps(sorted(alert_ids)), closed_ms, incident_id])])

    def incidents(self, open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        """Incidents, newest first."""
        where = " WHERE closed_ms IS NULL" if open_only else ""
        rows = self._rows(f"SELECT * FROM alert_incidents{where} ORDER BY opened_ms DESC "
                          "LIMIT ?", [limit])
        return [{"id": r[0], "group_key": r[1], "receiver": r[2], "opened_ms": r[3],
                 "closed_ms": r[4], "alerts": json.loads(r[5])} for r in rows]

    # ---- silences -------------------------------------------------------------------------
    def add_silence(self, s: Mapping[str, Any]) -> None:
        """Store a new silence."""
        self._run([("INSERT INTO alert_silences VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    [s["id"], json.dumps(list(s["matchers"])), s["starts_ms"], s["ends_ms"],
                     s["comment"], s["created_by"]])])

    def expire_silence(self, silence_id: str, now_ms: int) -> bool:
        """End a silence now; False when unknown or already over."""
        rows = self._rows("SELECT ends_ms, expired_ms FROM alert_silences WHERE id = ?",
                          [silence_id])
        if not rows or rows[0][1] is not None or rows[0][0] <= now_ms:
            return False
        self._run([("UPDATE alert_silences SET expired_ms = ? WHERE id = ?",
                    [now_ms, silence_id])])
        return True

    def silences(self) -> list[dict[str, Any]]:
        """Every silence, newest first."""
        rows = self._rows("SELECT * FROM alert_silences ORDER BY starts_ms DESC")
        return [{"id": r[0], "matchers": json.loads(r[1]), "starts_ms": r[2], "ends_ms": r[3],
                 "comment": r[4], "created_by": r[5], "expired_ms": r[6]} for r in rows]

    # ---- notifications --------------------------------------------------------------------
    def attempt(self, ts_ms: int, receiver: str, group_key: str, kind: str, attempt: int,
                outcome: str, error: str | None, alert_ids: Iterable[str]) -> None:
        """Record one notification attempt (sent, failed, dropped, circuit_open)."""
        self._run([("INSERT INTO alert_notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [ts_ms, receiver, group_key, kind, attempt, outcome, error,
                     json.dumps(sorted(alert_ids))])])

    def notifications(self, limit: int = 500) -> list[dict[str, Any]]:
        """Notification attempts, newest first."""
        rows = self._rows("SELECT * FROM alert_notifications ORDER BY ts_ms DESC LIMIT ?",
                          [limit])
        return [{"ts_ms": r[0], "receiver": r[1], "group_key": r[2], "kind": r[3],
                 "attempt": r[4], "outcome": r[5], "error": r[6], "alert_ids": json.loads(r[7])}
                for r in rows]

    def notified(self, group_key: str, receiver: str, digest: str, ts_ms: int,
                 resolved: bool) -> None:
        """The notification log: what `receiver` was last told about `group_key`."""
        self._run([("DELETE FROM alert_nflog WHERE group_key = ? AND receiver = ?",
                    [group_key, receiver]),
                   ("INSERT INTO alert_nflog VALUES (?, ?, ?, ?, ?)",
                    [group_key, receiver, digest, ts_ms, resolved])])

    def nflog(self) -> dict[tuple[str, str], tuple[str, int, bool]]:
        """(group_key, receiver) -> (digest, notified_ms, resolved)."""
        return {(r[0], r[1]): (r[2], r[3], r[4])
                for r in self._rows("SELECT * FROM alert_nflog")}
