"""Learned normal bands of the analysed series, kept current (ai_settings.ml_threshold_adjustment).

`BandBook` holds one `legion.analytics.bands.NormalBand` per series, fitted from the store by
`band_from_store`. The analytics bridge calls
`refresh(series)` every `analysis_interval`; a series' band is (re)computed from the store when it
has none yet (retried every `retry_secs` while the series is too short), when it is older than
`retrain_secs` (`ai_settings.model_retrain_interval`), or after `request_retrain`. One refresh
spends at most `budget_s`, oldest bands first, so a large fleet is worked through over several
calls instead of blocking the bridge.

A series that appears after the book's first refresh is new: it cannot hold `MIN_POINTS` buckets
of `step_ms` before that many buckets have passed, so its first attempt waits until then instead
of querying the store for a band it cannot have yet (on a fresh install, one query per series
right away was the 200-host end-to-end p99's tail, issue 17). The series of the first refresh
are of unknown age (a restart) and are tried at once. The cost: a new series whose agent
delivers older spooled points gets its band up to that long later than it could have.

Every band is saved as a versioned model file (`legion.analytics.models`, kind "band", no
pickle) in `models_dir/bands/<sha256(series)[:40]>.npz` and loaded back at construction, so a
restarted aggregator serves its bands at once and recomputes them only when they are due.

`band_for(node, metric, labels)` is the lookup an alert rule of type `ml_based` calls: the band of
exactly that series (labels exact, {} = none) or None.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from legion.aggregator.analytics_bridge.watched import SeriesReader
from legion.analytics import models
from legion.analytics.bands import DAY_MS, NormalBand, band_from_record, band_record

log = logging.getLogger("legion.aggregator.bands")

LabelKey = tuple[tuple[str, str], ...]
MIN_POINTS = 48
"""A band needs this many buckets (`band_from_store`'s `min_points`)."""


@dataclass(frozen=True, slots=True)
class BandEntry:
    """One series' band and where it came from."""

    series: str                 # the bridge's series key (node|metric|k=v,...)
    node: str
    metric: str
    labels: dict[str, str]
    band: NormalBand
    version: int                # bumped at every recomputation
    computed_ms: int            # when it was computed (end of its training range)
    step_ms: int                # the bucket width its values were averaged over (0 = raw)


@dataclass(slots=True)
class _Seen:
    series: str
    node: str
    metric: str
    labels: dict[str, str]
    checked_ms: int = 0         # last attempt, successful or not
    new_ms: int = 0             # when the book first saw it appear (0: of unknown age)


def _label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def band_from_store(store: SeriesReader, node: str, metric: str,
                    labels: Mapping[str, str] | None = None, *, now_ms: int | None = None,
                    days: float = 7.0, step_ms: int | None = 60_000, agg: str = "avg",
                    min_points: int = MIN_POINTS, **band_params: Any) -> NormalBand | None:
    """Fit the normal band of one series (exact `labels`, {} = none) from the store's last `days`.

    Values are `agg` per `step_ms` bucket (None: raw points), so compare like-aggregated values
    with the band. None when the series has fewer than `min_points` points in the range.
    """
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    want = dict(labels or {})
    rows = store.query(metric, node=node, labels=want or None, since_ms=now - int(days * DAY_MS),
                       until_ms=now, step_ms=step_ms, agg=agg)
    rows = [r for r in rows if r["node"] == node and dict(r["labels"]) == want]
    if len(rows) < min_points:
        return None
    rows.sort(key=lambda r: r["ts_ms"])
    ts = np.asarray([r["ts_ms"] for r in rows], np.int64)
    v = np.asarray([r["value"] for r in rows], float)
    return NormalBand(**band_params).fit(ts, v)


class BandBook:
    """Bands per series: computed from the store on a schedule, persisted, looked up by series."""

    def __init__(self, store: SeriesReader, models_dir: str | Path | None, *, retrain_secs: float,
                 days: float = 7.0, step_ms: int = 60_000, retry_secs: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.retrain_secs, self.days = store, float(retrain_secs), float(days)
        self.step_ms, self.retry_secs, self.clock = int(step_ms), float(retry_secs), clock
        self.dir = Path(models_dir) / "bands" if models_dir is not None else None
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, LabelKey], BandEntry] = {}
        self._seen: dict[tuple[str, str, LabelKey], _Seen] = {}
        self._requested: set[str] = set()
        self._requested_all_ms = 0
        self._listed = False        # a refresh has listed the series once
        self.stats = {"computed": 0, "too_short": 0, "failed": 0, "loaded": 0,
                      "bad_files": 0, "saved": 0, "deferred_new": 0}
        if self.dir is not None:
            self.load()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ---- lookups (any thread) -------------------------------------------------------------
    def band_for(self, node: str, metric: str, labels: Mapping[str, str] | None = None
                 ) -> NormalBand | None:
        """The band of exactly this series (labels exact, None/{} = no labels), or None."""
        e = self.entry(node, metric, labels)
        return e.band if e is not None else None

    def entry(self, node: str, metric: str, labels: Mapping[str, str] | None = None
              ) -> BandEntry | None:
        """The band and its provenance for one series, or None."""
        with self._lock:
            return self._entries.get((node, metric, _label_key(labels or {})))

    def entries(self, node: str | None = None, metric: str | None = None) -> list[BandEntry]:
        """Every band (optionally of one node and/or metric), sorted by node, metric, labels."""
        with self._lock:
            out = [e for e in self._entries.values()
                   if (node is None or e.node == node) and (metric is None or e.metric == metric)]
        return sorted(out, key=lambda e: (e.node, e.metric, _label_key(e.labels)))

    # ---- schedule ---------------------------------------------------------------------------
    def request_retrain(self, series: str | None = None) -> None:
        """Recompute the band of `series` (a series key; None: of every series) at the next
        refresh."""
        with self._lock:
            if series is None:
                self._requested_all_ms = self._now_ms()
            else:
                self._requested.add(series)

    def _due(self, seen: _Seen, now: int) -> bool:
        k = (seen.node, seen.metric, _label_key(seen.labels))
        if seen.series in self._requested or seen.checked_ms < self._requested_all_ms:
            return True
        if k in self._entries:
            return now - seen.checked_ms >= self.retrain_secs * 1000
        if now - seen.new_ms < MIN_POINTS * self.step_ms:
            return False  # too young for MIN_POINTS buckets: no query (module docstring)
        return now - seen.checked_ms >= self.retry_secs * 1000

    def refresh(self, series: Iterable[tuple[str, str, str, Mapping[str, str]]],
                budget_s: float = 0.5) -> int:
        """(Re)compute the due bands among `series` = (key, node, metric, labels); at most
        `budget_s` of work, least recently checked first. Returns how many were computed."""
        now = self._now_ms()
        with self._lock:
            born = now if self._listed else 0
            for key, node, metric, labels in series:
                k = (node, metric, _label_key(labels))
                if k not in self._seen:
                    self._seen[k] = _Seen(key, node, metric, dict(labels), new_ms=born)
                    self.stats["deferred_new"] += born != 0
            self._listed = True
            due = sorted((s for s in self._seen.values() if self._due(s, now)),
                         key=lambda s: s.checked_ms)
        t0 = time.monotonic()
        done = 0
        for i, s in enumerate(due):
            # every attempt counts against the budget: on a fresh install each series is still
            # too young for a band, and a pass over all of them at once stalls ingest (issue 17)
            if i and time.monotonic() - t0 >= budget_s:
                break
            if self._compute(s, now):
                done += 1
        return done

    def _compute(self, s: _Seen, now: int) -> bool:
        try:
            band = band_from_store(self.store, s.node, s.metric, s.labels, now_ms=now,
                                   days=self.days, step_ms=self.step_ms or None)
        except Exception as exc:  # noqa: BLE001 - one bad series must not stop the others
            log.warning("event=band_failed series=%s error=%s", s.series, exc)
            self.stats["failed"] += 1
            band = None
        k = (s.node, s.metric, _label_key(s.labels))
        with self._lock:
            s.checked_ms = now
            self._requested.discard(s.series)
            if band is None:
                self.stats["too_short"] += 1
                return False
            old = self._entries.get(k)
            entry = BandEntry(s.series, s.node, s.metric, dict(s.labels), band,
                              (old.version + 1) if old else 1, now, self.step_ms)
            self._entries[k] = entry
            self.stats["computed"] += 1
        self._save(entry)
        return True

    # ---- model files ------------------------------------------------------------------------
    def _path(self, series: str) -> Path:
        assert self.dir is not None
        return self.dir / (hashlib.sha256(series.encode()).hexdigest()[:40] + ".npz")

    def _save(self, e: BandEntry) -> None:
        if self.dir is None:
            return
        rec = band_record(e.band, e.series, e.version)
        rec.params.update(node=e.node, metric=e.metric, labels=dict(e.labels),
                          step_ms=e.step_ms, days=self.days)
        rec.retrained_ms = e.computed_ms
        try:
            models.save(self._path(e.series), rec)
            self.stats["saved"] += 1
        except (OSError, models.ModelError) as exc:  # a full disk must not stop the bridge
            log.warning("event=band_save_failed series=%s error=%s", e.series, exc)

    def load(self) -> int:
        """Load every saved band from `models_dir/bands` (unreadable files are skipped)."""
        assert self.dir is not None
        n = 0
        for p in sorted(self.dir.glob("*.npz")):
            try:
                rec = models.load(p)
                band = band_from_record(rec)
                prm = rec.params
                e = BandEntry(str(prm["series"]), str(prm["node"]), str(prm["metric"]),
                              {str(k): str(v) for k, v in dict(prm["labels"]).items()}, band,
                              int(rec.version), int(rec.retrained_ms), int(prm["step_ms"]))
            except (models.ModelError, KeyError, TypeError, ValueError) as exc:
                log.warning("event=band_unreadable path=%s error=%s", p, exc)
                self.stats["bad_files"] += 1
                continue
            k = (e.node, e.metric, _label_key(e.labels))
            with self._lock:
                self._entries[k] = e
                self._seen[k] = _Seen(e.series, e.node, e.metric, dict(e.labels), e.computed_ms)
            n += 1
        self.stats["loaded"] += n
        return n
