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
from typing import Any, Generic, TypeVar

log = logging.getLogger("legion.aggregator.store.commits")


@dataclass(frozen=True, slots=True)
class CommitNotice:
    """One commit: nodes whose batches it stored, and the series it made newer (rows shaped
    like `Store.latest()`: ts_ms, node, metric, labels, value)."""

    nodes: frozenset[str]
    rows: tuple[dict[str, Any], ...]


Listener = Callable[[CommitNotice], None]
T = TypeVar("T")


class Feed(Generic[T]):
    """Listeners of one kind of item; subscribe from any thread, publish from the writer. A
    failing listener is counted (`errors`) and logged as `event`, never raised."""

    def __init__(self, event: str) -> None:
        self._listeners: tuple[Callable[[T], None], ...] = ()
        self._lock = threading.Lock()
        self._event = event
        self.errors = 0

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def subscribe(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Call `listener` with every published item; returns the function that unsubscribes
        it (from any thread)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
        return unsubscribe

    def publish(self, item: T) -> None:
        """Hand `item` to every listener."""
        for listener in self._listeners:
            try:
                listener(item)
            except Exception as exc:  # noqa: BLE001 - a listener must not fail the writer
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    log.warning("event=%s errors=%d error=%r", self._event, self.errors, exc)


def commit_feed() -> Feed[CommitNotice]:
    """The listeners of one store, told after every commit."""
    return Feed("commit_listener_failed")
