"""What the dashboard's browser tests share: a live fleet behind a real gateway, Debian's chromium
driven by playwright, and a page wrapper.

`LiveGateway` serves a real DuckDB Store that a writer thread keeps filling (3 hosts, the Legion's
18 agents; one slow agent, one hot host), with the alert engine, an anomaly and a forecast source.
Screenshots go to `test-artifacts/` at the repository root. Never downloads a browser: a module
importing this is skipped when /usr/bin/chromium or playwright is missing. The `pw` and `browser`
fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from legion.aggregator.alerts.engine import AlertEngine
from legion.aggregator.gateway import AuditLog, TokenStore, create_app
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import config_from_dict
from legion.demo.roster import AGENTS
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.conftest import gateway_thread

CHROMIUM = os.environ.get("LEGION_CHROMIUM", "/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HOSTS = ("web-1", "gpu-1", "vps-1")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
BACKGROUND = (7, 11, 18)  # the renderer's clear colour #070b12
SLOW_AGENT = AGENTS[4].agent_id  # answers slowly: critical health, a threshold alert
HOT_HOST = "gpu-1"  # runs hot: a host threshold alert


def host_of(i: int) -> str:
    return HOSTS[i % len(HOSTS)]


def _agent_sample(out: list[Sample], now: int, base: dict[str, str], name: str, value: float,
                  **extra: str) -> None:
    out.append(Sample(f"agent_{name}", canonical_labels({**base, **extra}), value, now))


def batch(node: str, seq: int, now: int) -> IncomingBatch:
    """One tick of system and agent metrics for a node, as the ingest loop would store it."""
    t = seq / 4
    cpu = 93.0 if node == HOT_HOST else 35 + 20 * math.sin(t + len(node))
    s = [Sample("system_cpu_usage_percent", (), cpu, now),
         Sample("system_memory_usage_percent", (), 52 + 5 * math.sin(t / 3), now),
         Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}), 64.0, now),
         Sample("system_load1", (), cpu / 30, now)]
    for i, a in enumerate(AGENTS):
        if host_of(i) != node:
            continue
        base = {"agent_id": a.agent_id, "department": a.department}
        add = functools.partial(_agent_sample, s, now, base)
        p95 = 6200.0 if a.agent_id == SLOW_AGENT else 600 + 300 * math.sin(t + i)
        for q, v in (("p50", p95 / 3), ("p95", p95), ("p99", p95 * 1.5)):
            add("response_time_ms", v, quantile=q)
        add("success_rate_percent", 97.0 + (i % 3))
        add("cpu_usage_percent", a.base_cpu_percent + 10 * (1 + math.sin(t + i)))
        add("memory_usage_percent", 2.0 + i % 5)
        add("task_queue_depth", float((seq + i) % 7))
        add("tasks_total", 10.0 * seq + i, status="ok")
        add("tokens_total", 900.0 * seq, type="input")
        add("tokens_total", 150.0 * seq, type="output")
        add("llm_cost_usd_total", 0.01 * seq)
        for peer in a.delegates_to:
            add("messages_sent_total", 2.0 * seq, to=peer)
        add("messages_received_total", 1.0 * seq)
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples(s), now)


class LiveGateway:
    """A gateway on 127.0.0.1:<free port> in its own thread, fed by a writer thread every 0.5 s."""

    def __init__(self, tmp: Path) -> None:
        self.config = config_from_dict({"security": {"enable_tls": False},
                                        "dashboard_config": {"update_interval_ms": 500},
                                        "alerting": {"evaluation_interval_secs": 0.5}},
                                       base_dir=tmp).aggregator_settings()
        self.store = Store(tmp / "legion.duckdb")
        self.alerts = AlertEngine(self.config, self.store)  # the dashboard's alerts
        self.tokens = TokenStore(tmp / "tokens.json")
        self.token = {r: self.tokens.add(f"{r}-user", r) for r in ("admin", "operator", "viewer")}
        self.audit = AuditLog(tmp / "audit.log")
        self.stop_evt = threading.Event()
        self.url = ""
        self.seq = 0
        self.t0 = int(time.time() * 1000)
        self._write()  # a first picture before the page loads
        self.writer = threading.Thread(target=self._writer, daemon=True)
        self._gateway = contextlib.ExitStack()

    def _write(self) -> None:
        self.seq += 1
        now = int(time.time() * 1000)
        self.store.write([batch(n, self.seq, now) for n in HOSTS])

    def _anomalies(self) -> list[dict[str, Any]]:
        """What an analytics worker would report: the slow agent's latency is anomalous, in
        the 10-minute bucket that ended a minute ago (`analytics.detect_step_secs` 600): stamped
        at its start, 11 minutes back, older than the dashboard's 10-minute halo window."""
        return [{"id": f"iforest:{SLOW_AGENT}:response_time_ms_p95", "node": host_of(4),
                 "agent_id": SLOW_AGENT, "metric": "response_time_ms_p95", "score": 0.94,
                 "value": 6200.0, "ts_ms": self.t0 - 660_000, "end_ms": self.t0 - 60_000,
                 "detector": "isolation_forest"}]

    def _forecasts(self) -> list[dict[str, Any]]:
        """A CPU forecast for the hot host that crosses its threshold."""
        step = 600_000
        return [{"id": f"holt:{HOT_HOST}:cpu_usage_percent", "node": HOT_HOST, "agent_id": None,
                 "metric": "cpu_usage_percent", "horizon_hours": 6, "threshold": 80.0,
                 "predicted": [[self.t0 + k * step, 93.0 + k] for k in range(7)],
                 "breach_at_ms": self.t0, "ts_ms": self.t0}]

    def _writer(self) -> None:
        while not self.stop_evt.wait(0.5):
            self._write()

    def _app(self) -> Any:
        return create_app(self.config, self.store, dict, self.tokens, audit=self.audit,
                          sources={"anomalies": self._anomalies, "forecasts": self._forecasts,
                                   "alerts": self.alerts.dashboard_alerts},
                          alert_actions=self.alerts)

    def start(self) -> LiveGateway:
        self.alerts.start()
        self.writer.start()
        self.url = self._gateway.enter_context(gateway_thread(self.config, self._app, port=0)).url
        return self

    def stop(self) -> None:
        self.stop_evt.set()
        self._gateway.close()
        self.writer.join(5)
        self.alerts.stop()
        self.store.close()


class Page:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, url: str, viewport: dict[str, int] | None = None) -> None:
        self.ctx = browser.new_context(viewport=viewport or {"width": 1440, "height": 900})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.goto(url)

    def js(self, expr: str) -> Any:
        return self.page.evaluate(expr)

    def wait(self, expr: str, timeout: float = 30) -> Any:
        return self.page.wait_for_function(expr, timeout=timeout * 1000).json_value()

    def close(self) -> None:
        self.ctx.close()

    def wait_title(self, text: str) -> None:
        """Wait until the detail panel shows `text` as its title."""
        self.wait(f"() => document.getElementById('detail-title').textContent === '{text}'")

    def points(self, metric: str) -> int:
        """How many points the detail panel's chart for `metric` draws."""
        return int(self.page.locator(f"#detail canvas[data-metric='{metric}']")
                   .get_attribute("data-points") or 0)

    def wait_points(self, metric: str, more_than: int = 0) -> None:
        sel = f"#detail canvas[data-metric='{metric}']"
        self.wait(f"() => Number(document.querySelector(\"{sel}\")?.dataset.points) > {more_than}")

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def click_entity(self, kind: str, ident: str) -> None:
        """Click a host or agent where the current view draws it."""
        pos = self.js(f"() => window.__legion.view.screenPos({{kind: '{kind}', id: '{ident}'}})")
        self.page.mouse.click(pos["x"], pos["y"])


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what chromium writes) into RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            channels = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        pixels.extend((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels * 3))
    return width, height, pixels  # every third pixel of each row is plenty for a blank check


def painted_fraction(png: bytes) -> tuple[float, int]:
    """Share of pixels that differ from the background, and how many distinct colours there are."""
    _, _, px = png_pixels(png)
    lit = sum(1 for p in px if sum(abs(p[i] - BACKGROUND[i]) for i in range(3)) > 45)
    return lit / max(1, len(px)), len(set(px))
