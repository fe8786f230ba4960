"""Commit notices: after each write, the store tells listeners what it has just committed.

A listener (the gateway hub) gets, on the writer thread and right after COMMIT, the newest point
of every series the commit touched, in the row shape of `Store.latest()`. It must return at once
(hand the notice to its own thread or event loop); an exception from it is counted and logged,
never raised into the write path. With no listener the store builds no notice at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("legion.aggregator.store.commits")


@dataclass(frozen=True, slots=True)
class CommitNotice:
    """One commit: nodes whose batches it stored, and the series it made newer (rows shaped
    like `Store.latest()`: ts_ms, node, metric, labels, value)."""

    nodes: frozenset[str]
    rows: tuple[dict[str, Any], ...]


Listener = Callable[[CommitNotice], None]


class CommitFeed:
    """The listeners of one store; subscribe from any thread, publish from the writer."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self.errors = 0

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` after every commit; returns the function that unsubscribes it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
        return unsubscribe

    def publish(self, notice: CommitNotice) -> None:
        """Hand `notice` to every listener; a failing listener is counted, never raised."""
        for listener in self._listeners:
            try:
                listener(notice)
            except Exception as exc:  # noqa: BLE001 - a listener must not fail a commit
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    log.warning("event=commit_listener_failed errors=%d error=%r",
                                self.errors, exc)
