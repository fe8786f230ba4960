"""Round-robin over senders in front of the ingest queue, so one busy node cannot starve others.

The receiver hands frames over one bounded FIFO queue. Taken in arrival order, a node that sends
a burst (a flood of new series, a drained backlog) would put every other node's batch behind all
of its own. `FairInbox` moves up to `max_backlog` frames from that queue into one small queue
per sender and hands them out in turn, one frame per sender at a time: a quiet node's batch waits
for at most one frame of each busy sender, so it joins the next commit. The backlog is bounded,
so back-pressure still reaches the receiver, ZeroMQ's HWM and finally the agents' spools.
"""

from __future__ import annotations

import queue
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_BACKLOG = 1000
_NO_SENDER = object()  # `get` found no sender to take from (None is a key: items without one)


class FairInbox(Generic[T]):
    """`get` in round-robin order of `key(item)`, reading from `source` (a bounded queue)."""

    def __init__(self, source: queue.Queue[T], max_backlog: int = MAX_BACKLOG) -> None:
        self._src = source
        self._max = max_backlog
        self._by_key: OrderedDict[object, deque[T]] = OrderedDict()
        self._size = 0

    def get(self, timeout: float, skip: Collection[object] = ()) -> T:
        """Next item, one sender at a time, from senders not in `skip`; raise `queue.Empty`
        after `timeout` seconds (at once when only skipped senders have items here)."""
        self._fill()
        key = next((k for k in self._by_key if k not in skip), _NO_SENDER)
        if key is _NO_SENDER:
            if skip and self._size:
                raise queue.Empty
            self._add(self._src.get(timeout=max(0.0, timeout)))  # wait for the first one
            self._fill()
            key = next((k for k in self._by_key if k not in skip), _NO_SENDER)
            if key is _NO_SENDER:
                raise queue.Empty
        items = self._by_key.pop(key)
        item = items.popleft()
        self._size -= 1
        if items:  # back of the line
            self._by_key[key] = items
        return item

    def put_back(self, item: T) -> None:
        """Return an item taken by `get` to the front of the line: it is the next one out, so
        an item put back (it did not fit a commit group) opens the next group and never waits
        behind others again."""
        key = self.key_of(item)
        self._by_key.setdefault(key, deque()).appendleft(item)
        self._by_key.move_to_end(key, last=False)
        self._size += 1

    def senders(self) -> int:
        """Senders with items waiting here."""
        return len(self._by_key)

    def qsize(self) -> int:
        """Items waiting here and in the source queue."""
        return self._size + self._src.qsize()

    def empty(self) -> bool:
        """Whether nothing waits here or in the source queue."""
        return self._size == 0 and self._src.empty()

    def _fill(self) -> None:
        deadline = time.monotonic() + 0.005  # never spend long just moving frames
        while self._size < self._max and time.monotonic() < deadline:
            try:
                self._add(self._src.get_nowait())
            except queue.Empty:
                return

    def _add(self, item: T) -> None:
        self._by_key.setdefault(self.key_of(item), deque()).append(item)
        self._size += 1

    @staticmethod
    def key_of(item: object) -> object:
        """The sender an item is queued under: a frame's Curve key, or a batch's node."""
        return getattr(item, "sender", None) or getattr(item, "node", None)
