"""The live state behind the WebSocket: polls the store, diffs, keeps history, fans out updates.

Every `dashboard_config.update_interval_ms` the hub reads the latest points (in a thread: DuckDB
blocks), rebuilds the fleet, and hands each subscribed client only what changed. Pushed rows make
it faster: with a `live_feed` (the ingest writer's `LiveFeed`, in the aggregator process) the hub
gets each agent batch as ingest accepts it, before its commit (docs/internals.md, "The live
path"); else a store that offers `subscribe_commits` (the local `Store`) pushes what each commit
stored. The hub then rebuilds only the hosts those rows touched, as soon as they land (no store
read); the poll then reads only the sources (and rebuilds the whole fleet: staleness), and the
store again every `RESYNC_S`. Topics
`anomalies` and `forecasts` (and extra `alerts`) come from `sources` callables polled the same
way, or are pushed with `push()`. Memory is bounded: history keeps `max_history_points` per
series, event lists the same number of newest items.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.gateway.delta import DELTA_FIELDS, delta_update, merge_entity
from legion.aggregator.gateway.fleet import FleetBuilder
from legion.aggregator.gateway.fleet_patch import HostPatch, host_index, patch_hosts
from legion.aggregator.gateway.history import ChartHistory
from legion.aggregator.gateway.live_rows import LIVE_PREFIXES, LiveRows
from legion.aggregator.gateway.timefmt import iso_ms, now_ms
from legion.aggregator.store.types import IncomingBatch

log = logging.getLogger("legion.aggregator.gateway.hub")

TOPICS = ("agent_metrics", "system_health", "alerts", "anomalies", "forecasts")
LIST_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "agents": lambda e: e["agent_id"], "hosts": lambda e: e["node"],
    "departments": lambda e: e["name"], "alerts": lambda e: e["id"],
    "anomalies": lambda e: e["id"], "forecasts": lambda e: e["id"],
    "links": lambda e: (e["source"], e["target"]),
}
"""Each list field of topic data and how its items are keyed (updates replace by key)."""
EVENT_FIELDS = frozenset({"anomalies"})
Source = Callable[[], Iterable[Mapping[str, Any]]]
RESYNC_S = 30.0
"""With commits pushed, the poll re-reads the store's latest points this often (a safety net)."""
PUSH_DUTY = 0.25
"""Rebuilds on pushed rows take at most about this share of the hub's time: after one that
took d seconds of CPU the next waits d * (1 / PUSH_DUTY - 1), so a huge fleet coalesces
pushes (CPU, not wall time: on a loaded machine waiting for the GIL must not stretch the wait)."""

ENCODED_KEPT = 64
"""The JSON of this many recent updates is kept, for clients still to send them."""

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


def merge_update(base: dict[str, Any], update: Mapping[str, Any],
                 max_events: int) -> dict[str, Any]:
    """A new dict: `update`'s keyed items replace `base`'s, other fields overwrite; no mutation.

    A delta update (`"delta": true`, see delta.py) merges its hosts/agents into `base`'s field by
    field instead; the result stays a delta when `base` was one.
    """
    delta, base_delta = bool(update.get("delta")), bool(base.get("delta"))
    out = dict(base)
    out.pop("resolved", None)
    resolved = set(base.get("resolved", ())) | set(update.get("resolved", ()))
    for field, value in update.items():
        if field == "resolved":
            continue
        keyf = LIST_KEYS.get(field)
        if keyf is None or field not in base:
            out[field] = value
            continue
        items = {keyf(e): e for e in base[field]}
        for e in value:
            k = keyf(e)
            old = items.get(k)
            items[k] = merge_entity(old, e, keep_removed=base_delta) \
                if delta and field in DELTA_FIELDS and old is not None else e
            resolved.discard(k)
        merged = list(items.values())
        if field in EVENT_FIELDS and len(merged) > max_events:
            merged = merged[-max_events:]
        out[field] = merged
    if "alerts" in out and resolved:
        out["alerts"] = [a for a in out["alerts"] if a["id"] not in resolved]
    if resolved:
        out["resolved"] = sorted(resolved)
    return out


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
        self.fleet: dict[str, Any] | None = None
        self.state: dict[str, dict[str, Any]] = {
            "system_health": {"hosts": [], "departments": [], "summary": {}},
            "agent_metrics": {"agents": [], "links": []}, "alerts": {"alerts": []},
            "anomalies": {"anomalies": []}, "forecasts": {"forecasts": []}}
        self.history = ChartHistory(self.max_history)
        self.clients: set[Subscriber] = set()
        self.stats = {"ticks": 0, "tick_errors": 0, "updates": 0, "last_tick_ms": 0,
                      "pushes": 0, "encoded": 0}
        self._pushed: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TOPICS}
        self._alert_since: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Live rows by (node, metric, labels), fed by the store's reads and pushed commits.
        self._live = LiveRows()
        self._hosts: dict[str, dict[str, Any]] = {}  # host entries by node, rebuilt when dirty
        self._host_index: dict[str, int] = {}  # where each node is in `fleet["hosts"]`
        self._encoded: dict[int, tuple[dict[str, Any], str]] = {}  # id(update) -> its JSON
        self._extra: dict[str, list[Any]] = {t: [] for t in self.sources}
        self._wake = asyncio.Event()
        self._wake_pending = False
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
                try:
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
                next_at += self.interval_s
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
            self._live.drain()
            now = now_ms()
            agents_moved = "agent_" in self._live.dirty_prefixes
            dirty = self._live.take_dirty()
            if read_sources:  # a poll: hosts without new data may have turned stale
                dirty |= self._aging(now)
            if dirty:
                fresh = self.builder.host_entries(self._live.rows("system_", dirty), now)
                for node in dirty:
                    if node in fresh:
                        self._hosts[node] = fresh[node]
                    else:
                        self._hosts.pop(node, None)
            patch = None  # a push of known hosts' system rows: only their entries change
            if not read_sources and not agents_moved and self.fleet is not None:
                patch = patch_hosts(self.fleet, self._host_index, self._hosts, dirty, now)
            if patch is None:
                fleet = self.builder.assemble(self._hosts, self._live.rows("agent_"), now)
                self._host_index = host_index(fleet)
            else:
                fleet = patch.fleet
            self.fleet = fleet
            self._apply(fleet, {t: list(v) for t, v in self._extra.items()}, now, patch)
            if read_sources:  # a poll; rebuilds on pushed commits count as `pushes`
                self.stats["ticks"] += 1
            self.stats["last_tick_ms"] = now
            return fleet

    def _aging(self, now: int) -> set[str]:
        """Hosts whose health follows the clock now: past `stale_ms` without data (a stale
        host's reason says for how long)."""
        limit = now - self.builder.stale_ms
        return {n for n, h in self._hosts.items() if h["ts_ms"] < limit}

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
        anomalies = sorted(events["anomalies"], key=lambda e: e.get("ts_ms", 0))
        new_state = {
            "system_health": {"hosts": fleet["hosts"], "departments": fleet["departments"],
                              "summary": fleet["summary"]},
            "agent_metrics": {"agents": fleet["agents"], "links": fleet["links"]},
            "alerts": {"alerts": alerts},
            "anomalies": {"anomalies": anomalies[-self.max_history:]},
            "forecasts": {"forecasts": events["forecasts"]},
        }
        for topic, data in new_state.items():
            old: Mapping[str, Any] = self.state[topic]
            if patch is None or topic != "system_health":
                diff = self._diff(topic, old, data) \
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

    @staticmethod
    def _diff(topic: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in new.items():
            keyf = LIST_KEYS.get(field)
            if keyf is None:
                continue
            before = {keyf(e): e for e in old.get(field, ())}
            changed = [e for e in value if (b := before.get(keyf(e))) is not e and b != e]
            if changed:
                out[field] = changed
            if field == "alerts":
                now_ids = {keyf(e) for e in value}
                resolved = sorted(k for k in before if k not in now_ids)
                if resolved:
                    out["resolved"] = resolved
        if "summary" in new and (out or new["summary"] != old.get("summary")):
            out["summary"] = new["summary"]  # counts change without a host changing, too
        return out

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
        hit = self._encoded.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
        text = json.dumps(data)
        self.stats["encoded"] += 1
        self._encoded[id(data)] = (data, text)
        while len(self._encoded) > ENCODED_KEPT:
            del self._encoded[next(iter(self._encoded))]
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
