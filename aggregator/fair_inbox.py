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
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_BACKLOG = 1000


class FairInbox(Generic[T]):
    """`get` in round-robin order of `key(item)`, reading from `source` (a bounded queue)."""

    def __init__(self, source: queue.Queue[T], max_backlog: int = MAX_BACKLOG) -> None:
        self._src = source
        self._max = max_backlog
        self._by_key: OrderedDict[object, deque[T]] = OrderedDict()
        self._size = 0

    def get(self, timeout: float) -> T:
        """Next item, one sender at a time; raise `queue.Empty` after `timeout` seconds."""
        self._fill()
        if not self._size:
            item = self._src.get(timeout=max(0.0, timeout))  # wait for the first one
            self._add(item)
            self._fill()
        key, items = next(iter(self._by_key.items()))
        item = items.popleft()
        self._size -= 1
        del self._by_key[key]
        if items:  # back of the line
            self._by_key[key] = items
        return item

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
        key = getattr(item, "sender", None) or getattr(item, "node", None)
        self._by_key.setdefault(key, deque()).append(item)
        self._size += 1
