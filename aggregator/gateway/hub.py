"""The live state behind the WebSocket: polls the store, diffs, keeps history, fans out updates.

Every `dashboard_config.update_interval_ms` the hub reads the latest points (in a thread: DuckDB
blocks), rebuilds the fleet, and hands each subscribed client only what changed. Pushed rows make
it faster: with a `live_feed` (the ingest writer's `LiveFeed`, in the aggregator process) the hub
gets each agent batch as ingest accepts it, before its commit (docs/internals.md, "The live
path"); else a store that offers `subscribe_commits` (the local `Store`) pushes what each commit
stored. The hub then rebuilds only the hosts those rows touched, as soon as they land (no store
read); the poll then reads only the sources (and rebuilds the whole fleet: staleness), and the
store again every `RESYNC_S`. While nobody watches (no client, no fleet read for
`WATCH_GRACE_S`), a tick only folds the pushed rows in, with their chart history
(`history.ChartRecorder`). Topics `anomalies` and `forecasts` (and extra `alerts`) come from
`sources` callables polled the same way, or are pushed with `push()`. Memory is bounded:
history keeps `max_history_points` per series, event lists the same number."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.gateway.delta import DELTA_FIELDS, delta_update
from legion.aggregator.gateway.fleet import FleetBuilder
from legion.aggregator.gateway.fleet_patch import HostPatch, host_index, patch_hosts
from legion.aggregator.gateway.history import ChartHistory, ChartRecorder
from legion.aggregator.gateway.hub_topics import TOPICS as TOPICS  # imported from here too
from legion.aggregator.gateway.hub_topics import EncodedUpdates, topic_diff, topic_states
from legion.aggregator.gateway.hub_topics import merge_update as merge_update
from legion.aggregator.gateway.live_rows import LIVE_PREFIXES, LiveRows, RowKey
from legion.aggregator.gateway.timefmt import iso_ms, now_ms
from legion.aggregator.store.types import IncomingBatch

log = logging.getLogger("legion.aggregator.gateway.hub")

Source = Callable[[], Iterable[Mapping[str, Any]]]
RESYNC_S = 30.0
"""With commits pushed, the poll re-reads the store's latest points this often (a safety net)."""
PUSH_DUTY = 0.25
"""Rebuilds on pushed rows take at most about this share of the hub's time: after one that
took d seconds of CPU the next waits d * (1 / PUSH_DUTY - 1), so a huge fleet coalesces
pushes (CPU, not wall time: on a loaded machine waiting for the GIL must not stretch the wait)."""

ENCODED_KEPT = 64
"""The JSON of this many recent updates is kept, for clients still to send them."""
WATCH_GRACE_S = 60.0
"""Watched: a client, or a read of `fleet` (`GET /api/v1/fleet`) this recent (`_run`)."""
UNWATCHED_TICK_S = 5.0
"""Unwatched, a tick (only folding pushed rows in) comes this often; a reader refreshes."""

class Subscriber(Protocol):
    """What the hub needs from a WebSocket client."""

    topics: set[str]

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None: ...


class LiveSource(Protocol):
    """Accepted batches, each once (`legion.aggregator.live_feed.LiveFeed`)."""

    def subscribe(self, listener: Callable[[IncomingBatch], None]) -> Callable[[], None]: ...


class LatestReader(Protocol):
    """The part of `Store` the hub uses."""

    def latest(self, metric_glob: str = "*", node: str | None = None) -> list[dict[str, Any]]: ...


class Hub:
    """Live topic state for every WebSocket client; `start()`/`stop()` are idempotent."""

    def __init__(self, config: Config, store: LatestReader, *,
                 sources: Mapping[str, Source] | None = None,
                 on_tick: Callable[[], None] | None = None,
                 live_feed: LiveSource | None = None) -> None:
        dc = config.dashboard_config
        self.interval_s = dc.update_interval_ms / 1000
        self.max_history = dc.max_history_points
        self.store = store
        self.live_feed = live_feed
        self.builder = FleetBuilder(config)
        self.sources = dict(sources or {})
        unknown = set(self.sources) - {"alerts", "anomalies", "forecasts"}
        if unknown:
            raise ValueError(f"unknown hub sources {sorted(unknown)}")
        self.on_tick = on_tick
        self._fleet: dict[str, Any] | None = None
        self._fleet_read = float("-inf")  # monotonic time `fleet` was last read
        self.state: dict[str, dict[str, Any]] = {
            "system_health": {"hosts": [], "departments": [], "summary": {}},
            "agent_metrics": {"agents": [], "links": []}, "alerts": {"alerts": []},
            "anomalies": {"anomalies": []}, "forecasts": {"forecasts": []}}
        self.history = ChartHistory(self.max_history)
        self._chart = ChartRecorder(self.history, self.builder)  # unwatched: no rebuilds
        self.clients: set[Subscriber] = set()
        self.stats = {"ticks": 0, "tick_errors": 0, "updates": 0, "last_tick_ms": 0,
                      "pushes": 0, "encoded": 0, "unwatched_ticks": 0}
        self._pushed: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TOPICS}
        self._alert_since: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Live rows by (node, metric, labels), fed by the store's reads and pushed commits.
        self._live = LiveRows()
        self._hosts: dict[str, dict[str, Any]] = {}  # host entries by node, rebuilt when dirty
        self._host_index: dict[str, int] = {}  # where each node is in `fleet["hosts"]`
        self._encoded = EncodedUpdates(ENCODED_KEPT)
        self._extra: dict[str, list[Any]] = {t: [] for t in self.sources}
        self._wake, self._wake_pending = asyncio.Event(), False
        self._unsubscribe: Callable[[], None] | None = None
        self._next_resync = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the polling loop, and listen for commits when the store pushes them (no-op
        when running)."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            subscribe = getattr(self.store, "subscribe_commits", None)
            if self._unsubscribe is None and self.live_feed is not None:
                self._unsubscribe = self.live_feed.subscribe(
                    lambda batch: self._on_batch(loop, batch))
            elif self._unsubscribe is None and callable(subscribe):
                self._unsubscribe = subscribe(lambda notice: self._on_commit(loop, notice))
            self._task = asyncio.create_task(self._run(), name="legion-gateway-hub")

    @property
    def running(self) -> bool:
        """Whether the polling loop runs (its snapshot is then at most one tick old)."""
        return self._task is not None and not self._task.done()

    @property
    def fleet(self) -> dict[str, Any] | None:
        """The fleet of the last rebuild; None before the first, and while nobody watches
        (then `refresh()` makes one). Reading it keeps the hub watched for `WATCH_GRACE_S`."""
        self._fleet_read = time.monotonic()
        return self._fleet

    @property
    def watched(self) -> bool:
        """Whether anyone uses the fleet: a client, or a read of `fleet` in `WATCH_GRACE_S`."""
        return bool(self.clients) or time.monotonic() - self._fleet_read < WATCH_GRACE_S

    async def stop(self) -> None:
        """Stop the polling loop (safe before start, safe twice)."""
        task, self._task = self._task, None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _on_batch(self, loop: asyncio.AbstractEventLoop, batch: IncomingBatch) -> None:
        """On the ingest receiver thread: queue an accepted batch with fleet series, wake the
        loop."""
        if any(name.startswith(LIVE_PREFIXES) for name in batch.batch.names):
            self._live.push_batch(batch)
            if self.clients:  # else nobody to tell: the next tick folds it in
                self._wake_up(loop)

    def _on_commit(self, loop: asyncio.AbstractEventLoop, notice: Any) -> None:
        """On the store's writer thread: keep the live rows of a commit, wake the loop once."""
        rows = tuple(r for r in notice.rows if r["metric"].startswith(LIVE_PREFIXES))
        if rows:
            self._live.push(rows)
            self._wake_up(loop)

    def _wake_up(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the loop (once until it wakes; from any thread)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed under us: nobody to tell
                self._wake_pending = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Pushes are served beside the polls, not between them: a poll's reads (the sources,
        # the store's resync) can wait behind a commit, and no push waits for them.
        pushes = None if self._unsubscribe is None else asyncio.create_task(
            self._serve_pushes(), name="legion-gateway-hub-pushes")
        next_at = loop.time()
        try:
            while True:
                pushed = self._unsubscribe is not None
                step = self.interval_s
                try:
                    if pushed and self.stats["ticks"] and not self.watched:  # the 1st builds
                        self._unwatched_tick()
                        step = max(step, UNWATCHED_TICK_S)
                    else:
                        await self._refresh(
                            read_store=not pushed or loop.time() >= self._next_resync)
                    if pushed and loop.time() >= self._next_resync:
                        self._next_resync = loop.time() + RESYNC_S
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never crash after start-up; count, retry next tick
                    self.stats["tick_errors"] += 1
                    errors = self.stats["tick_errors"]
                    if errors in (1, 10, 100) or errors % 1000 == 0:
                        log.warning("event=hub_tick_failed errors=%d error=%r", errors, exc)
                if self.on_tick is not None:
                    self.on_tick()
                next_at += step
                next_at = max(next_at, loop.time())  # overran: skip, don't burst
                await asyncio.sleep(next_at - loop.time())
        finally:
            if pushes is not None:
                pushes.cancel()
                await asyncio.wait([pushes])  # never swallows a cancel of this task

    async def _serve_pushes(self) -> None:
        """Rebuild from pushed rows as they come (coalesced, spaced by `PUSH_DUTY`)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_pending = False
            if not self.clients:  # nobody to tell: the rows wait for the next poll
                continue
            t0 = time.thread_time()  # CPU time: waits for the GIL on a busy host don't count
            try:
                await self._refresh(read_store=False, read_sources=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted like a failed tick
                self.stats["tick_errors"] += 1
                log.warning("event=hub_push_failed error=%r", exc)
            self.stats["pushes"] += 1
            await asyncio.sleep((time.thread_time() - t0) * (1 / PUSH_DUTY - 1))

    def _unwatched_tick(self) -> None:
        """Nobody watches: only fold the pushed rows in, recording their chart points as a
        rebuild would (`ChartRecorder`), and drop the fleet: its next reader rebuilds it
        (`refresh`). A rebuild per tick was most of the idle aggregator's event loop (issue 17)."""
        self._live.drain(self._record_charts)
        self._fleet = None
        self.stats["unwatched_ticks"] += 1

    def _record_charts(self, pairs: Sequence[tuple[RowKey, Mapping[str, Any]]]) -> None:
        self._chart.record(pairs, self._live.items_of, now_ms())

    # -- state ----------------------------------------------------------------------------------
    async def refresh(self) -> dict[str, Any]:
        """Poll the store and sources once, publish what changed; return the fleet."""
        return await self._refresh(read_store=True)

    async def _refresh(self, read_store: bool, read_sources: bool = True) -> dict[str, Any]:
        """Rebuild the fleet from the live rows (after reading the store's latest points when
        `read_store`, and the sources when `read_sources`) and publish what changed. A poll
        rebuilds the hosts with new rows and those aging past `stale_ms`; a push only the
        hosts with new rows."""
        rows: list[dict[str, Any]] | None = None
        extra: dict[str, list[Any]] = {}
        if read_store or read_sources:  # outside the lock: pushes go on during a slow read
            rows, extra = await asyncio.to_thread(self._read, read_store, read_sources)
        async with self._lock:
            if read_sources:
                self._extra = extra
            if rows is not None:
                self._live.replace(rows, keep_newer=self._unsubscribe is not None)
            # unwatched until now: queued rows get chart points per batch (no diff records them)
            self._live.drain(self._record_charts if self._fleet is None else None)
            now = now_ms()
            agents_moved = "agent_" in self._live.dirty_prefixes
            dirty = self._live.take_dirty()
            if read_sources:  # a poll: hosts past `stale_ms` without data follow the clock
                dirty |= {n for n, h in self._hosts.items()
                          if h["ts_ms"] < now - self.builder.stale_ms}
            if dirty:
                fresh = self.builder.host_entries(self._live.rows("system_", dirty), now)
                for node in dirty:
                    if node in fresh:
                        self._hosts[node] = fresh[node]
                    else:
                        self._hosts.pop(node, None)
            patch = None  # a push of known hosts' system rows: only their entries change
            if not read_sources and not agents_moved and self._fleet is not None:
                patch = patch_hosts(self._fleet, self._host_index, self._hosts, dirty, now)
            if patch is None:
                fleet = self.builder.assemble(self._hosts, self._live.rows("agent_"), now)
                self._host_index = host_index(fleet)
            else:
                fleet = patch.fleet
            self._fleet = fleet
            self._apply(fleet, {t: list(v) for t, v in self._extra.items()}, now, patch)
            if read_sources:  # a poll; rebuilds on pushed commits count as `pushes`
                self.stats["ticks"] += 1
            self.stats["last_tick_ms"] = now
            return fleet

    def _read(self, read_store: bool, read_sources: bool
              ) -> tuple[list[dict[str, Any]] | None, dict[str, list[Any]]]:
        rows = None
        if read_store:
            rows = self.store.latest("system_*") + self.store.latest("agent_*")
        extra = {t: [dict(i) for i in src()] for t, src in self.sources.items()} \
            if read_sources else {}
        return rows, extra

    def _apply(self, fleet: dict[str, Any], extra: dict[str, list[Any]], now: int,
               patch: HostPatch | None = None) -> None:
        """Diff each topic's new data against its state and publish what changed; after a
        `patch` only its changed hosts are diffed (the agents are as they were)."""
        alerts = extra.get("alerts", [])  # the alerting engine's (aggregator/alerts/)
        alerts += list(self._pushed["alerts"].values())
        for a in alerts:
            a.setdefault("since_ms", self._alert_since.setdefault(a["id"], now))
            a.setdefault("since", iso_ms(a["since_ms"]))
        active = {a["id"] for a in alerts}
        for gone in set(self._alert_since) - active:
            del self._alert_since[gone]
        events = {t: extra.get(t, []) + list(self._pushed[t].values())
                  for t in ("anomalies", "forecasts")}
        new_state = topic_states(fleet, alerts, events["anomalies"], events["forecasts"],
                                 self.max_history)
        for topic, data in new_state.items():
            old: Mapping[str, Any] = self.state[topic]
            if patch is None or topic != "system_health":
                diff = topic_diff(old, data) \
                    if patch is None or topic != "agent_metrics" else {}
            else:  # a patch: only its changed hosts can differ; the delta needs only them
                diff = {"hosts": patch.changed} if patch.changed else {}
                if diff or data["summary"] != old.get("summary"):
                    diff["summary"] = data["summary"]
                old = {"hosts": patch.before}
            if topic in self.history:  # a host or agent with a new point is in the diff
                self.history.record(topic, diff)
            delta = delta_update(old, diff) if diff and self._wants_delta(topic) \
                and any(f in diff for f in DELTA_FIELDS) else None
            self.state[topic] = data
            if diff:
                self.publish(topic, diff, delta)

    def _wants_delta(self, topic: str) -> bool:
        """Whether a client takes `topic` as deltas (else none is computed)."""
        return any(topic in getattr(c, "delta_topics", ()) for c in self.clients)

    def snapshot(self, topic: str, history: bool = True) -> dict[str, Any]:
        """The full current data of `topic` (plus per-series history for the two metric topics)."""
        data = dict(self.state[topic])
        if history and topic in self.history:
            data["history"] = self.history.points(topic)
        return data

    # -- fan-out --------------------------------------------------------------------------------
    def publish(self, topic: str, data: dict[str, Any],
                delta: dict[str, Any] | None = None) -> None:
        """Offer an update of `topic` to every subscribed client (never blocks); clients that
        asked for deltas on `topic` (`delta_topics`) get `delta` when there is one."""
        self.stats["updates"] += 1
        for c in list(self.clients):
            if topic in c.topics:
                wants = topic in getattr(c, "delta_topics", ())
                c.offer(topic, "update", delta if delta is not None and wants else data)

    def encoded(self, data: dict[str, Any]) -> str:
        """The JSON of an update as published: encoded once, the same text for every client
        (`data` is never mutated after `publish`)."""
        text, fresh = self._encoded.text(data)
        self.stats["encoded"] += fresh
        return text

    def push(self, topic: str, items: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace items (by `id`) of alerts/anomalies/forecasts; call on the event loop."""
        if topic not in ("alerts", "anomalies", "forecasts"):
            raise ValueError(f"cannot push to topic {topic!r}")
        store = self._pushed[topic]
        new = [dict(i) for i in items]
        for i in new:
            store[i["id"]] = i
        while len(store) > self.max_history:
            store.pop(next(iter(store)))
        self.state[topic] = merge_update(self.state[topic], {topic: new}, self.max_history)
        self.publish(topic, {topic: new})

    def resolve(self, alert_ids: Iterable[str]) -> None:
        """Mark pushed alerts resolved (removes them and tells subscribers)."""
        ids = [i for i in alert_ids if self._pushed["alerts"].pop(i, None) is not None]
        if ids:
            self.state["alerts"] = merge_update(self.state["alerts"], {"resolved": ids},
                                                self.max_history)
            self.state["alerts"].pop("resolved", None)
            self.publish("alerts", {"resolved": ids})

    def status(self) -> dict[str, Any]:
        """Counters for /api/v1/status and /metrics (with the live feed's, when there is one)."""
        out: dict[str, Any] = {**self.stats, "clients": len(self.clients)}
        feed_stats = getattr(self.live_feed, "stats", None)
        if feed_stats is not None:
            out["live_feed"] = dict(feed_stats)
        return out
