"""Delivery state of the agent: what is unacknowledged, what to resend and when. No sockets.

Life of a batch (key = (epoch, seq)):

1. the agent appends the frame to the `Spool`, sends it, and calls ``on_sent(seq, now)``;
2. until a *committed* ack covers it, it is unacked and `due_resends` hands it back after
   ``resend_timeout`` x 2^n (n = resends so far, capped at ``max_backoff``), each delay scaled by a
   random factor in [1 - jitter, 1 + jitter];
3. *committed*: no more resends, the spool keeps it; *checkpointed* (or *rejected*): the spool
   releases it (`Spool.release`), freeing whole segments;
4. committed but no checkpointed ack within ``checkpoint_timeout`` (acks travel over PUB/SUB and
   can be lost; the aggregator checkpoints every 10 s): it becomes unacked again and is resent.
   The aggregator answers a duplicate with the ack it deserves, so the spool never leaks.

Fairness: the caller sends the live batch every tick and then at most ``limit`` resends, oldest
first. Each tick therefore drains ``limit`` batches of backlog while producing one, so a backlog
of H hours drains in about H x 60 / ``limit`` minutes whatever the collection interval
(``limit`` = 50: 3 h in ~3.6 min) and the present is never behind more than one tick.
When acks resume after a silence longer than ``resend_timeout`` (the aggregator came back), every
batch waiting on a grown backoff becomes due at once, so draining starts without waiting out
the backoff. Batches found in the spool at start-up (a restart) are due immediately.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from legion.kernel.spool.spool import Spool
from legion.node_agent.config import RESEND_JITTER
from legion.proto import ACK_CHECKPOINTED, ACK_COMMITTED, ACK_REJECTED, Ack

Key = tuple[int, int]
DEFAULT_RESENDS_PER_TICK = 50


@dataclass(slots=True)
class _Unacked:
    first_seen: float  # clock() time of the first send (estimated for batches found at start)
    last_sent: float
    level: int  # backoff exponent: resends since the last backoff reset
    gen: int  # unique per schedule (a global counter): stale heap entries never match


class Delivery:
    """Unacked set, ack handling and resend schedule over one `Spool`; time comes from `clock`."""

    def __init__(self, spool: Spool, clock: Callable[[], float] = time.monotonic,
                 resend_timeout: float = 5.0, *, max_backoff: float = 60.0,
                 jitter: float = RESEND_JITTER, checkpoint_timeout: float = 60.0,
                 rng: random.Random | None = None,
                 wall_ms: Callable[[], int] | None = None) -> None:
        if resend_timeout <= 0 or max_backoff < resend_timeout or not 0 <= jitter < 1:
            raise ValueError("need resend_timeout > 0, max_backoff >= resend_timeout, "
                             "0 <= jitter < 1")
        self.spool = spool
        self.clock = clock
        self.resend_timeout = resend_timeout
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.checkpoint_timeout = checkpoint_timeout
        self._rng = rng or random.Random()
        self._entries: dict[Key, _Unacked] = {}
        self._waiting: list[tuple[float, int, Key]] = []  # (due, gen, key)
        self._ready: list[tuple[Key, int]] = []  # due now, oldest key first
        self._oldest: list[Key] = []  # lazy min-heap of keys, for the oldest age
        self._awaiting: dict[Key, float] = {}  # committed, not yet checkpointed: deadline
        self._ckpt_due: list[tuple[float, Key]] = []
        self._last_ack_at: float | None = None
        self._drop_gen = spool.drop_generation
        self._gens = itertools.count(1)
        self.counters = {"resends_total": 0, "acks_received_total": 0,
                         "batches_committed_total": 0, "batches_rejected_total": 0,
                         "checkpoint_timeouts_total": 0}
        now = clock()
        wall_now = wall_ms() if wall_ms is not None else int(time.time() * 1000)
        for epoch, seq, ts_ms in spool.pending_keys():
            age = max(0.0, (wall_now - ts_ms) / 1000.0) if ts_ms else 0.0
            key = (epoch, seq)
            # level -1: the first send after a restart often meets a socket still connecting,
            # so it does not count towards the backoff
            self._entries[key] = _Unacked(now - age, now - age, -1, 0)
            self._ready.append((key, 0))
            self._oldest.append(key)
        heapq.heapify(self._ready)
        heapq.heapify(self._oldest)

    def on_sent(self, seq: int, now: float | None = None, *, epoch: int | None = None) -> None:
        """Record a live send of a spooled batch; a repeat call for a tracked batch is a no-op."""
        key = (self.spool.epoch if epoch is None else epoch, seq)
        if key in self._entries or key in self._awaiting or key not in self.spool:
            return  # already tracked, or not spooled (nothing to resend from)
        t = self.clock() if now is None else now
        gen = next(self._gens)
        self._entries[key] = _Unacked(t, t, 0, gen)
        heapq.heappush(self._waiting, (t + self._delay(0), gen, key))
        heapq.heappush(self._oldest, key)

    def on_ack(self, ack: Ack, now: float | None = None) -> int:
        """Apply an ack (any epoch); returns how many tracked batches it newly acknowledged."""
        t = self.clock() if now is None else now
        self.counters["acks_received_total"] += 1
        if self._last_ack_at is None or t - self._last_ack_at > self.resend_timeout:
            self._reset_backoff(t)
        self._last_ack_at = t
        acked = [k for first, last in ack.ranges
                 for k in _keys_in(self._entries, ack.epoch, first, last)]
        for k in acked:
            del self._entries[k]
        n = len(acked)
        if ack.level == ACK_COMMITTED:
            self.counters["batches_committed_total"] += n
            self.spool.mark_committed(ack.epoch, ack.ranges)
            deadline = t + self.checkpoint_timeout
            for k in acked:
                self._awaiting[k] = deadline
                heapq.heappush(self._ckpt_due, (deadline, k))
        elif ack.level in (ACK_CHECKPOINTED, ACK_REJECTED):
            for first, last in ack.ranges:
                for k in _keys_in(self._awaiting, ack.epoch, first, last):
                    del self._awaiting[k]
            released = self.spool.release(ack.epoch, ack.ranges)
            if ack.level == ACK_REJECTED:
                self.counters["batches_rejected_total"] += max(n, released)
            else:
                self.counters["batches_committed_total"] += n
        return n

    def due_resends(self, now: float | None = None, limit: int = DEFAULT_RESENDS_PER_TICK,
                    max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, frame) due for resending, oldest first; marks them resent now."""
        t = self.clock() if now is None else now
        self._sync_drops()
        while self._ckpt_due and self._ckpt_due[0][0] <= t:
            deadline, key = heapq.heappop(self._ckpt_due)
            if self._awaiting.get(key) != deadline:
                continue
            del self._awaiting[key]
            if key in self.spool and key not in self._entries:  # no checkpoint ack: resend
                self.counters["checkpoint_timeouts_total"] += 1
                gen = next(self._gens)
                self._entries[key] = _Unacked(t, t, 0, gen)
                heapq.heappush(self._ready, (key, gen))
                heapq.heappush(self._oldest, key)
        while self._waiting and self._waiting[0][0] <= t:
            _due, gen, key = heapq.heappop(self._waiting)
            e = self._entries.get(key)
            if e is not None and e.gen == gen:
                heapq.heappush(self._ready, (key, gen))
        out: list[tuple[int, bytes]] = []
        total = 0
        while self._ready and len(out) < limit:
            key, gen = self._ready[0]
            e = self._entries.get(key)
            if e is None or e.gen != gen:
                heapq.heappop(self._ready)
                continue
            frame = self.spool.read(*key)
            if frame is None:  # dropped by overflow or corrupt: the spool counted it
                heapq.heappop(self._ready)
                del self._entries[key]
                continue
            if max_bytes is not None and out and total + len(frame) > max_bytes:
                break
            heapq.heappop(self._ready)
            total += len(frame)
            e.level = min(e.level + 1, 62)
            e.gen = next(self._gens)
            e.last_sent = t
            heapq.heappush(self._waiting, (t + self._delay(e.level), e.gen, key))
            self.counters["resends_total"] += 1
            out.append((key[1], frame))
        return out

    def resend_all_now(self) -> None:
        """Every unacknowledged batch becomes due now (the agent switched aggregators)."""
        for key, e in self._entries.items():
            e.level = 0
            e.gen = next(self._gens)
            heapq.heappush(self._ready, (key, e.gen))

    def unacked(self) -> list[tuple[int, int]]:
        """(epoch, seq) of every unacknowledged batch, oldest first."""
        return sorted(self._entries)

    def stats(self, now: float | None = None) -> dict[str, int | float]:
        """Spool stats plus unacked_batches, oldest_unacked_age_seconds and delivery counters."""
        t = self.clock() if now is None else now
        self._sync_drops()
        while self._oldest and self._oldest[0] not in self._entries:
            heapq.heappop(self._oldest)
        age = 0.0
        if self._oldest:
            age = max(0.0, t - self._entries[self._oldest[0]].first_seen)
        return {**self.spool.stats(), "unacked_batches": len(self._entries),
                "uncheckpointed_batches": len(self._awaiting),
                "oldest_unacked_age_seconds": round(age, 3), **self.counters}

    def _delay(self, level: int) -> float:
        base = min(self.resend_timeout * (2.0 ** min(level, 30)), self.max_backoff)
        return base * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0))

    def _reset_backoff(self, now: float) -> None:
        """Acks resumed after a silence: batches waiting out a grown backoff become due now."""
        for key, e in self._entries.items():
            if e.level == 0:
                continue
            # Sent long ago: due now. Sent during the silence's last moments (likely lost to a
            # reconnect): due one normal timeout after that send, not after its grown backoff.
            e.level = 0
            e.gen = next(self._gens)
            if now - e.last_sent >= self.resend_timeout:
                heapq.heappush(self._ready, (key, e.gen))
            else:
                heapq.heappush(self._waiting, (e.last_sent + self.resend_timeout, e.gen, key))

    def _sync_drops(self) -> None:
        if self.spool.drop_generation == self._drop_gen:
            return
        self._drop_gen = self.spool.drop_generation
        for key in [k for k in self._entries if k not in self.spool]:
            del self._entries[key]
        for key in [k for k in self._awaiting if k not in self.spool]:
            del self._awaiting[key]


def _keys_in(tracked: Mapping[Key, object], epoch: int, first: int, last: int) -> list[Key]:
    """Keys of `tracked` in one epoch's inclusive seq range, probing whichever side is smaller."""
    if last - first < len(tracked):
        return [(epoch, s) for s in range(first, last + 1) if (epoch, s) in tracked]
    return [k for k in tracked if k[0] == epoch and first <= k[1] <= last]
