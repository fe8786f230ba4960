"""The fleet picture: hosts and agents folded from the store's latest points, with health.

Input is what `Store.latest()` returns (`ts_ms, node, metric, labels, value` per series); output
is the JSON shape documented in docs/ws-protocol.md (`GET /api/v1/fleet`). The builder keeps the
previous counter readings to turn `*_total` counters into `*_per_s` rates.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from legion.aggregator.config import AggregatorSettings as Config
from legion.aggregator.gateway.timefmt import iso_ms

HOST_PREFIX = "system_"
AGENT_PREFIX = "agent_"
SPLIT_LABELS = ("quantile", "status", "type")
AGENT_LABELS = frozenset({"agent_id", "department"})
PEER_LABELS = ("to", "peer", "target")
PEER_METRICS = ("agent_messages_sent_to_total", "agent_messages_sent_total")
HEALTH_ORDER = {"ok": 0, "unknown": 1, "stale": 2, "warning": 3, "critical": 4}
HOST_CHART_KEYS = ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent")
AGENT_CHART_KEYS = ("response_time_ms_p95", "success_rate_percent", "cpu_usage_percent",
                    "memory_usage_percent", "task_queue_depth", "tokens_per_s")
_SAFE = re.compile(r"[^a-zA-Z0-9_]")


def metric_key(name: str, prefix: str, labels: Mapping[str, str]) -> tuple[str, str | None]:
    """(key with split labels folded in, the unsplit key for counters or None)."""
    base = name.removeprefix(prefix)
    parts = [_SAFE.sub("_", str(labels[k])) for k in SPLIT_LABELS if k in labels]
    if not parts:
        return base, None
    suffix = "_".join(parts)
    if base.endswith("_total"):
        return f"{base[:-6]}_{suffix}_total", base
    return f"{base}_{suffix}", None


def _fold(key: str, values: list[float]) -> float:
    if "success_rate" in key:
        return min(values)
    if key.endswith(("_total", "_bytes", "_depth")):
        return float(sum(values))
    return max(values)


class _Acc:
    """Collects the values of one entity before folding."""

    __slots__ = ("exact", "folded", "labels", "last_ms", "rates")

    def __init__(self) -> None:
        self.exact: dict[str, float] = {}
        self.folded: dict[str, list[float]] = defaultdict(list)
        self.rates: dict[str, list[float | None]] = defaultdict(list)  # per labelled counter
        self.last_ms = 0
        self.labels: dict[str, str] = {}

    def add(self, key: str, value: float, has_extra_labels: bool, ts_ms: int) -> None:
        if has_extra_labels:
            self.folded[key].append(value)
        else:
            self.exact[key] = value
        self.last_ms = max(self.last_ms, ts_ms)

    def metrics(self) -> dict[str, float]:
        out = {k: _fold(k, v) for k, v in self.folded.items()}
        out.update(self.exact)  # an unlabelled series (a total) wins over folding its parts
        return out

    def add_rate(self, keys: tuple[str, str | None], rate: float | None) -> None:
        """One labelled counter's own rate (e.g. per interface), summed later per key."""
        for k in keys:
            if k is not None:
                self.rates[k].append(rate)


class FleetBuilder:
    """Turns latest points into hosts/agents/departments/links; keeps counter history for rates."""

    def __init__(self, config: Config) -> None:
        self.thresholds = config.alert_thresholds
        self.stale_ms = int(max(10_000, 5_000 * config.collection_interval))
        self._prev: dict[tuple[str, ...], tuple[int, float, float | None]] = {}

    def build(self, system_rows: Iterable[Mapping[str, Any]],
              agent_rows: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, Any]:
        """The fleet snapshot (JSON-ready) at `now_ms`."""
        return self.assemble(self.host_entries(system_rows, now_ms), agent_rows, now_ms)

    def host_entries(self, system_rows: Iterable[Mapping[str, Any]],
                     now_ms: int) -> dict[str, dict[str, Any]]:
        """Each node's host entry (`agents` still empty) from its system rows alone: the hub
        rebuilds only the nodes a batch touched and keeps the others' entries."""
        hosts: dict[str, _Acc] = defaultdict(_Acc)
        for r in system_rows:
            labels = dict(r.get("labels") or {})
            key, unsplit = metric_key(r["metric"], HOST_PREFIX, labels)
            extra = any(k not in SPLIT_LABELS for k in labels)
            acc = hosts[r["node"]]
            acc.add(key, float(r["value"]), extra, int(r["ts_ms"]))
            if unsplit:
                acc.add(unsplit, float(r["value"]), True, int(r["ts_ms"]))
            if extra and key.endswith("_total"):
                acc.add_rate((key, unsplit), self._series_rate(("host", r["node"]), r, labels))
        host_out: dict[str, dict[str, Any]] = {}
        for node, acc in hosts.items():
            m = self._with_rates(("host", node), acc.metrics(), acc.last_ms, acc)
            health, reasons = self.host_health(m, acc.last_ms, now_ms)
            host_out[node] = {"node": node, "health": health, "reasons": reasons,
                              "last_seen": iso_ms(acc.last_ms), "last_seen_ms": acc.last_ms,
                              "ts_ms": acc.last_ms, "metrics": m, "agents": []}
        return host_out

    def assemble(self, hosts: Mapping[str, dict[str, Any]],
                 agent_rows: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, Any]:
        """The fleet snapshot from host entries (never mutated) and every agent row."""
        agents: dict[str, _Acc] = defaultdict(_Acc)
        agent_node: dict[str, tuple[int, str]] = {}
        peers: dict[tuple[str, str], tuple[int, float]] = {}
        for r in agent_rows:
            labels = dict(r.get("labels") or {})
            agent_id = labels.get("agent_id")
            if not agent_id:
                continue
            ts = int(r["ts_ms"])
            acc = agents[agent_id]
            if "department" in labels:
                acc.labels["department"] = labels["department"]
            if ts >= agent_node.get(agent_id, (0, ""))[0]:
                agent_node[agent_id] = (ts, r["node"])
            key, unsplit = metric_key(r["metric"], AGENT_PREFIX, labels)
            extra = any(k not in SPLIT_LABELS and k not in AGENT_LABELS for k in labels)
            acc.add(key, float(r["value"]), extra, ts)
            if unsplit:
                acc.add(unsplit, float(r["value"]), True, ts)
            if extra and key.endswith("_total"):
                acc.add_rate((key, unsplit), self._series_rate(("agent", agent_id), r, labels))
            peer = next((labels[k] for k in PEER_LABELS if k in labels), None)
            if peer and r["metric"] in PEER_METRICS:
                old = peers.get((agent_id, peer), (0, 0.0))
                peers[(agent_id, peer)] = (max(ts, old[0]), old[1] + float(r["value"]))

        host_out = dict(hosts)
        agent_out: list[dict[str, Any]] = []
        for agent_id, acc in sorted(agents.items()):
            node = agent_node[agent_id][1]
            m = self._with_rates(("agent", agent_id), acc.metrics(), acc.last_ms, acc)
            health, reasons = self.agent_health(m, acc.last_ms, now_ms)
            agent_out.append({"agent_id": agent_id,
                              "department": acc.labels.get("department", "unassigned"),
                              "node": node, "health": health, "reasons": reasons,
                              "last_seen": iso_ms(acc.last_ms), "last_seen_ms": acc.last_ms,
                              "ts_ms": acc.last_ms, "metrics": m})
            if node not in host_out:  # agents seen on a node without system metrics
                host_out[node] = {"node": node, "health": "unknown", "reasons": [],
                                  "last_seen": iso_ms(acc.last_ms), "last_seen_ms": acc.last_ms,
                                  "ts_ms": acc.last_ms, "metrics": {}, "agents": []}
            elif host_out[node] is hosts.get(node):  # a copy: the entries given stay as they are
                host_out[node] = {**host_out[node], "agents": []}
            host_out[node]["agents"].append(agent_id)

        depts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in agent_out:
            depts[a["department"]].append(a)
        departments = [{"name": d, "agents": [a["agent_id"] for a in members],
                        "health": max((a["health"] for a in members), key=HEALTH_ORDER.__getitem__)}
                       for d, members in sorted(depts.items())]
        links = self._links(agent_out, peers)
        hosts_list = [host_out[n] for n in sorted(host_out)]
        summary: dict[str, Any] = {"hosts": len(hosts_list), "agents": len(agent_out)}
        by_host = Counter(e["health"] for e in hosts_list)
        by_agent = Counter(e["health"] for e in agent_out)
        for h in HEALTH_ORDER:
            summary[h] = by_host[h] + by_agent[h]
        for kind, counts in (("host_health", by_host), ("agent_health", by_agent)):
            summary[kind] = {h: counts[h] for h in HEALTH_ORDER}
        return {"ts": iso_ms(now_ms), "ts_ms": now_ms,
                "thresholds": {"cpu_usage": self.thresholds.cpu_usage,
                               "memory_usage": self.thresholds.memory_usage,
                               "disk_usage": self.thresholds.disk_usage,
                               "agent_response_time": self.thresholds.agent_response_time,
                               "agent_success_rate": self.thresholds.agent_success_rate},
                "summary": summary, "hosts": hosts_list, "agents": agent_out,
                "departments": departments, "links": links}

    # -- health ---------------------------------------------------------------------------------
    def host_health(self, m: Mapping[str, float], last_ms: int,
                    now_ms: int) -> tuple[str, list[str]]:
        """Host health from cpu/memory/disk against `alert_thresholds`."""
        t = self.thresholds
        checks = [("cpu_usage_percent", t.cpu_usage), ("memory_usage_percent", t.memory_usage),
                  ("disk_usage_percent", t.disk_usage)]
        return self._health(m, last_ms, now_ms, [(k, thr, True) for k, thr in checks])

    def agent_health(self, m: Mapping[str, float], last_ms: int,
                     now_ms: int) -> tuple[str, list[str]]:
        """Agent health from p95 response time and success rate against `alert_thresholds`."""
        t = self.thresholds
        return self._health(m, last_ms, now_ms, [
            ("response_time_ms_p95", t.agent_response_time, True),
            ("success_rate_percent", t.agent_success_rate, False)])

    def _health(self, m: Mapping[str, float], last_ms: int, now_ms: int,
                checks: list[tuple[str, float, bool]]) -> tuple[str, list[str]]:
        if now_ms - last_ms > self.stale_ms:
            return "stale", [f"no data for {(now_ms - last_ms) // 1000} s"]
        level, reasons, seen = "ok", [], False
        for key, thr, upper in checks:
            if key not in m:
                continue
            seen = True
            v = m[key]
            if (v >= thr) if upper else (v < thr):
                level = "critical"
                reasons.append(f"{key} {v:g} {'>=' if upper else '<'} {thr:g}")
            elif (v >= 0.9 * thr) if upper else (v < thr + 5):
                level = level if level == "critical" else "warning"
                reasons.append(f"{key} {v:g} near {thr:g}")
        return (level if seen else "unknown"), reasons

    # -- rates and links ------------------------------------------------------------------------
    def _rate(self, key: tuple[str, ...], ts_ms: int, value: float) -> float | None:
        prev = self._prev.get(key)
        rate: float | None = None
        if prev is not None:
            pts, pv, prate = prev
            if ts_ms <= pts:
                return prate
            rate = (value - pv) / ((ts_ms - pts) / 1000) if value >= pv else None
        self._prev[key] = (ts_ms, value, rate)
        return rate

    def _series_rate(self, ent: tuple[str, str], row: Mapping[str, Any],
                     labels: Mapping[str, str]) -> float | None:
        """Rate of one labelled counter series (so a reset or a new interface stays local)."""
        return self._rate((*ent, row["metric"], *sorted(f"{k}={v}" for k, v in labels.items())),
                          int(row["ts_ms"]), float(row["value"]))

    def _with_rates(self, ent: tuple[str, str], m: dict[str, float],
                    ts_ms: int, acc: _Acc | None = None) -> dict[str, float]:
        """Add `*_per_s` for every `*_total`: the sum of per-series rates for labelled
        counters (e.g. `network_received_bytes_total` per interface), else the total's rate."""
        for k in [k for k in m if k.endswith("_total")]:
            if acc is not None and k not in acc.exact and k in acc.rates:
                known = [r for r in acc.rates[k] if r is not None]
                if known:
                    m[k[:-6] + "_per_s"] = round(sum(known), 6)
                continue
            r = self._rate((*ent, k), ts_ms, m[k])
            if r is not None:
                m[k[:-6] + "_per_s"] = round(r, 6)
        return m

    def _links(self, agents: list[dict[str, Any]],
               peers: Mapping[tuple[str, str], tuple[int, float]]) -> list[dict[str, Any]]:
        links: list[dict[str, Any]] = []
        if peers:
            for (src, dst), (ts, v) in sorted(peers.items()):
                r = self._rate(("link", src, dst), ts, v) or 0.0
                links.append({"source": src, "target": dst, "rate_per_s": round(r, 6),
                              "sent_per_s": round(r, 6), "received_per_s": None})
            return links
        for a in agents:
            m = a["metrics"]
            if "messages_sent_total" not in m and "messages_received_total" not in m:
                continue
            sent = m.get("messages_sent_per_s", 0.0)
            links.append({"source": a["agent_id"], "target": None, "rate_per_s": sent,
                          "sent_per_s": sent,
                          "received_per_s": m.get("messages_received_per_s", 0.0)})
        return links
