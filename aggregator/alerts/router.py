"""Noise control: silences, inhibition, routing, grouping into incidents, repeat, flapping,
acknowledgement and escalation. Decides *what* to send *when*; `dispatch` sends it.

Alertmanager's model: a group (route + values of its `group_by` labels) is first notified
`group_wait` after it appears, then at most every `group_interval` when its set of alerts
changed, and every `repeat_interval` while unchanged. What each receiver was last told is the
notification log (`Journal.notified`), so after a restart an unchanged group waits for its
repeat interval instead of notifying again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from legion.aggregator.alerts.config import AlertingConfig
from legion.aggregator.alerts.matchers import Matcher, all_match, parse_matchers
from legion.aggregator.alerts.notifiers import Notification
from legion.aggregator.alerts.route_config import RouteConfig, resend_secs


@dataclass(slots=True)
class Group:
    """One notification group = one incident while it has alerts."""

    key: str
    receiver: str
    route: RouteConfig
    labels: dict[str, str]
    first_ms: int
    incident_id: str
    members: set[str] = field(default_factory=set)  # fingerprints seen in this incident
    next_flush_ms: int = 0
    digest: str = ""
    notified_ms: int | None = None
    pushed_ms: int | None = None  # last message of any kind (the re-push clock)


def digest(fps: Iterable[str]) -> str:
    """Identity of a set of firing alerts (what the notification log remembers)."""
    return hashlib.sha256(",".join(sorted(fps)).encode()).hexdigest()[:16]


def match_route(route: RouteConfig, labels: Mapping[str, str], path: str = "0"
                ) -> tuple[RouteConfig, str]:
    """The deepest route whose matchers accept `labels` (first matching child wins)."""
    for i, child in enumerate(route.routes):
        if all_match(parse_matchers(child.matchers), labels):
            return match_route(child, labels, f"{path}.{i}")
    return route, path


class Router:
    """Turns the alert documents of a round into notifications."""

    def __init__(self, cfg: AlertingConfig, send: Callable[[Notification], bool],
                 journal: Any, external_url: str = "") -> None:
        self.cfg = cfg
        self.send = send
        self.journal = journal
        self.external_url = external_url
        self.groups: dict[str, Group] = {}
        self.nflog: dict[tuple[str, str], tuple[str, int, bool]] = {}
        self.resend_ms = {r.name: int(s * 1000) for r in cfg.receivers
                          if (s := resend_secs(r)) is not None}
        self.inhibits = [(parse_matchers(r.source_matchers), parse_matchers(r.target_matchers),
                          r.equal) for r in cfg.inhibit_rules]
        self.counts = {"notifications": 0, "suppressed_silenced": 0, "suppressed_inhibited": 0,
                       "escalations": 0, "flapping_notices": 0, "refreshes": 0}

    def load(self, nflog: Mapping[tuple[str, str], tuple[str, int, bool]],
             open_incidents: Iterable[Mapping[str, Any]]) -> None:
        """Restore the notification log and open incidents after a restart."""
        self.nflog = dict(nflog)
        self._reopen = {i["group_key"]: i for i in open_incidents}

    # ---- per round --------------------------------------------------------------------------
    def route(self, alerts: Mapping[str, dict[str, Any]], silences: list[tuple[str, list[Matcher]]],
              now_ms: int) -> None:
        """Mark silenced/inhibited alerts, update groups, send what is due."""
        firing = [a for a in alerts.values() if a["state"] == "firing"]
        for a in alerts.values():
            a["silenced_by"] = next((sid for sid, ms in silences if all_match(ms, a["labels"])),
                                    None) if a["state"] == "firing" else None
        for a in firing:
            a["inhibited_by"] = self._inhibitor(a, firing)
        for a in firing:
            if a["silenced_by"]:
                self.counts["suppressed_silenced"] += 1
            elif a["inhibited_by"]:
                self.counts["suppressed_inhibited"] += 1
        live = {a["fingerprint"]: a for a in firing
                if not a["silenced_by"] and not a["inhibited_by"]}
        grown: set[str] = set()
        for a in live.values():
            route, path = match_route(self.cfg.route, a["labels"])
            glabels = {k: a["labels"].get(k, "") for k in route.group_by}
            key = f"{path}:{route.receiver}:{json.dumps(glabels, sort_keys=True)}"
            g = self.groups.get(key)
            if g is None:
                g = self._open(key, route, glabels, now_ms)
            if a["fingerprint"] not in g.members:
                g.members.add(a["fingerprint"])
                grown.add(g.key)
            a["incident_id"] = g.incident_id
        for key in grown:
            g = self.groups[key]
            self.journal.update_incident(g.incident_id, g.members)
        for g in list(self.groups.values()):
            self._flush(g, alerts, live, now_ms)
        self._escalate(live, now_ms)

    def _open(self, key: str, route: RouteConfig, glabels: dict[str, str], now_ms: int) -> Group:
        old = getattr(self, "_reopen", {}).pop(key, None)
        if old is not None:
            g = Group(key, route.receiver, route, glabels, old["opened_ms"], old["id"],
                      set(old["alerts"]))
        else:
            iid = f"{digest([key])[:8]}-{now_ms}"
            g = Group(key, route.receiver, route, glabels, now_ms, iid)
            self.journal.open_incident(iid, key, route.receiver, now_ms, [])
        g.next_flush_ms = g.first_ms + int(route.group_wait_secs * 1000)
        logged = self.nflog.get((key, route.receiver))
        if logged is not None and not logged[2]:
            g.digest, g.notified_ms = logged[0], logged[1]
        self.groups[key] = g
        return g

    def _flush(self, g: Group, alerts: Mapping[str, dict[str, Any]],
               live: Mapping[str, dict[str, Any]], now_ms: int) -> None:
        mine = [a for fp in g.members if (a := live.get(fp)) is not None]
        for a in mine:  # a flapping alert is announced once, then left out of the group
            if a.get("flapping") and not a.get("flap_notified"):
                a["flap_notified"] = True
                self.counts["flapping_notices"] += 1
                self._send(g, "flapping", "firing", [a], now_ms, log=False)
            elif not a.get("flapping"):
                a["flap_notified"] = False
        steady = [a for a in mine if not a.get("flapping")]
        self._refresh(g, mine, now_ms)
        if now_ms < g.next_flush_ms:
            return
        d = digest(a["fingerprint"] for a in steady)
        g.next_flush_ms = now_ms + int(g.route.group_interval_secs * 1000)
        if not mine:
            gone = [alerts[fp] for fp in g.members if fp in alerts
                    and alerts[fp]["state"] == "resolved"]
            if g.notified_ms is not None and gone:
                self._send(g, "resolved", "resolved", gone, now_ms, resolved=True)
            del self.groups[g.key]
            self.journal.update_incident(g.incident_id, g.members, closed_ms=now_ms)
            return
        if not steady:
            return
        if d != g.digest:
            resolved = [alerts[fp] for fp in g.members if fp in alerts
                        and alerts[fp]["state"] == "resolved"]
            self._send(g, "firing", "firing", steady + resolved, now_ms)
            g.digest = d
        elif (g.notified_ms is not None
              and now_ms - g.notified_ms >= g.route.repeat_interval_secs * 1000
              and not all(a.get("acked_by") for a in steady)):
            self._send(g, "repeat", "firing", steady, now_ms)

    def _refresh(self, g: Group, mine: list[dict[str, Any]], now_ms: int) -> None:
        """Re-push a notified group's firing alerts to a receiver that forgets them (see
        `route_config.resend_secs`); not logged, so repeats and the nflog are unchanged."""
        every = self.resend_ms.get(g.receiver)
        if every is None or not mine or g.notified_ms is None or \
                (g.pushed_ms is not None and now_ms - g.pushed_ms < every):
            return  # (never pushed since a restart: now)
        self.counts["refreshes"] += 1
        self._send(g, "refresh", "firing", mine, now_ms, log=False)

    def _send(self, g: Group, kind: str, status: str, items: list[dict[str, Any]], now_ms: int,
              resolved: bool = False, log: bool = True) -> None:
        n = Notification(g.receiver, g.key, kind, status, tuple(_public(a) for a in items),
                         g.labels, self.external_url)
        if log:
            g.notified_ms = now_ms
        g.pushed_ms = now_ms
        if kind != "refresh":
            self.counts["notifications"] += 1
        self.send(n)

    def _inhibitor(self, a: Mapping[str, Any], firing: list[dict[str, Any]]) -> str | None:
        for src_m, tgt_m, equal in self.inhibits:
            if not all_match(tgt_m, a["labels"]):
                continue
            for s in firing:
                if s is a or not all_match(src_m, s["labels"]):
                    continue
                if all(s["labels"].get(k, "") == a["labels"].get(k, "") for k in equal):
                    return str(s["id"])
        return None

    def _escalate(self, live: Mapping[str, dict[str, Any]], now_ms: int) -> None:
        esc = self.cfg.escalation
        for a in live.values():
            if a.get("acked_by") or a["severity"] not in esc.severities or not a.get("fired_ms"):
                continue
            for i, lv in enumerate(esc.levels):
                if a.get("escalated", 0) > i or now_ms - a["fired_ms"] < lv.after_secs * 1000:
                    continue
                a["escalated"] = i + 1
                self.counts["escalations"] += 1
                self.send(Notification(lv.receiver, f"escalation:{a['fingerprint']}:{i + 1}",
                                       "escalation", "firing", (_public(a),),
                                       {"level": str(i + 1)}, self.external_url))


def _public(a: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as notifiers and the API see it."""
    return {k: v for k, v in a.items()
            if k not in ("fire_times", "for_ms", "keep_firing_ms", "previous")}
