"""The 3D dashboard at fleet scale: frame time and WebSocket bytes per client, 3 / 30 / 100 hosts.

    python bench/dashboard_fleet.py [--hosts 3,30,100] [--secs 20] [--out FILE.json]
                                    [--dashboard-dir DIR]

For each size the benchmark starts a simulated fleet (a writer thread storing, every second, the
system metrics of N hosts and the Legion's 18 agents on each, with peer-labelled message counters,
into a real DuckDB store), a real gateway on 127.0.0.1:<free port>, and Debian's chromium (headless,
WebGL through SwiftShader, i.e. software GL) at 1600×900 on the 3D view. Once every agent is on
the map it measures, for `--secs` seconds:

- frame time: the interval between rendered frames (p50/p95) and the JavaScript + GL cost of one
  frame (p50/p95), from the view's own frame log (`frameStats`);
- bytes per second per client: characters received on the page's WebSocket after the snapshot;
- update bytes per second of two plain `/ws` clients in the same window, one with full updates
  and one with `delta` (what the page uses), and per tick (all topics' update bytes / the number
  of `agent_metrics` updates: independent of how fast the loaded store lets the hub tick);
- `first_full_map_s`: page load until every agent is on the map and 5 WebSocket messages came;
  `map_steps_s`: when, from page load, the fleet (`/api/v1/fleet`) was on the page, the first
  frames were drawn, and the 5 WebSocket messages (hello + snapshots) had come, with
  `snapshot_bytes` the characters those messages took;
- `update_cost_ms_view_list_panels`: main-thread time of the last update (3D view, list, panels);
- `ws_message_cost_ms_max`: the most main-thread time one WebSocket message took in the window
  (JSON parse and merge into the fleet model; the view and list update after it);
- `view_refresh_ms_p50`: after the window, the 3D view's `refresh()` (what every update costs it)
  with the values as they are, median of 11;
- `gl_frame_ms_pr1_p50`: after the window, the cost of one complete frame at pixel ratio 1
  (render + a 1-pixel readback, which waits for the rasteriser), median of 15: the GL work alone,
  independent of the frame pacing and of the adaptive pixel ratio.

Numbers depend on the machine and its load: compare sizes within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from legion.aggregator.gateway import AuditLog, TokenStore, create_app  # noqa: E402
from legion.aggregator.store.store import Store  # noqa: E402
from legion.aggregator.store.types import IncomingBatch  # noqa: E402
from legion.cli.config import config_from_dict  # noqa: E402
from legion.demo.roster import AGENTS  # noqa: E402
from legion.proto import MetricsBatch, Sample, canonical_labels  # noqa: E402
from tests.conftest import gateway_thread  # noqa: E402

CHROMIUM = os.environ.get("LEGION_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
SITES = ("gpu-node", "web", "db", "edge", "batch")


def host_names(n: int) -> list[str]:
    """`gpu-node-1`, `web-1`, ...: names that group by site on the map."""
    return [f"{SITES[i % len(SITES)]}-{i // len(SITES) + 1}" for i in range(n)]


def host_batch(node: str, seq: int, now: int) -> IncomingBatch:
    """One second of a host and its 18 agents (ids `<agent>.<node>`), as the ingest stores it."""
    t = seq / 5 + len(node)
    s = [Sample("system_cpu_usage_percent", (), 40 + 25 * math.sin(t), now),
         Sample("system_memory_usage_percent", (), 55 + 5 * math.sin(t / 3), now),
         Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}), 61.0, now)]
    for iface, rate in (("eth0", 3e5), ("lo", 2e4)):
        s.append(Sample("system_network_received_bytes_total",
                        canonical_labels({"interface": iface}), rate * seq, now))
    for i, a in enumerate(AGENTS):
        base = {"agent_id": f"{a.agent_id}.{node}", "department": a.department}

        def add(name: str, value: float, base: dict[str, str] = base, **extra: str) -> None:
            s.append(Sample(f"agent_{name}", canonical_labels({**base, **extra}), value, now))
        p95 = 700 + 400 * math.sin(t + i)
        add("response_time_ms", p95, quantile="p95")
        add("response_time_ms", p95 / 3, quantile="p50")
        add("success_rate_percent", 96.0 + (i % 4))
        add("cpu_usage_percent", a.base_cpu_percent + 8 * (1 + math.sin(t + i)))
        add("memory_usage_percent", 2.0 + i % 5)
        add("task_queue_depth", float((seq + i) % 7))
        add("tasks_total", 3.0 * seq + i, status="ok")
        add("tokens_total", 700.0 * seq, type="input")
        add("tokens_total", 120.0 * seq, type="output")
        for peer in a.delegates_to:
            add("messages_sent_total", 1.0 * seq, to=f"{peer}.{node}")
        add("messages_received_total", 1.0 * seq)
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples(s), now)


class Fleet:
    """Store + writer thread + gateway (own thread and loop) for one fleet size."""

    def __init__(self, tmp: Path, hosts: int, dashboard_dir: str | None = None) -> None:
        self.config = config_from_dict({"security": {"enable_tls": False},
                                        "dashboard_config": {"update_interval_ms": 1000}},
                                       base_dir=tmp).aggregator_settings()
        self.tmp = tmp
        self.dashboard_dir = dashboard_dir
        self.store = Store(tmp / "legion.duckdb")
        self.tokens = TokenStore(tmp / "tokens.json")
        self.token = self.tokens.add("bench", "viewer")
        self.nodes = host_names(hosts)
        self.seq = 0
        self.stop_evt = threading.Event()
        self.url = ""
        self.write_s: list[float] = []
        self._write()
        self.writer = threading.Thread(target=self._writer, daemon=True)
        self._gateway = contextlib.ExitStack()

    def _write(self) -> None:
        self.seq += 1
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        self.store.write([host_batch(n, self.seq, now) for n in self.nodes])
        self.write_s.append(time.perf_counter() - t0)

    def _writer(self) -> None:
        # every second, or less often when one write takes longer (the store shares this
        # process and its 2 cores with the gateway and chromium): the bench measures the page
        while not self.stop_evt.wait(max(1.0, 1.5 * self.write_s[-1])):
            self._write()

    def _app(self) -> Any:
        return create_app(self.config, self.store, dict, self.tokens,
                          audit=AuditLog(self.tmp / "audit.log"), dashboard_dir=self.dashboard_dir)

    def __enter__(self) -> Fleet:
        self.writer.start()
        self.url = self._gateway.enter_context(gateway_thread(self.config, self._app, port=0)).url
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop_evt.set()
        self._gateway.close()
        self.writer.join(30)
        self.store.close()


def ws_bytes(url: str, token: str, delta: bool, start: threading.Event,
             secs: float, out: dict[str, float]) -> None:
    """A plain `/ws` client (all topics, `delta` as given): update bytes/s once `start` is set."""
    import aiohttp

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{url}/ws?token={token}",
                                                              max_msg_size=0) as ws:
            await ws.send_json({"op": "subscribe", "history": False, "delta": delta,
                                "topics": ["agent_metrics", "system_health", "alerts",
                                           "anomalies", "forecasts"]})
            n, updates, t0 = 0, 0, None
            loop = asyncio.get_running_loop()
            while True:
                if t0 is None and start.is_set():
                    n, updates, t0 = 0, 0, loop.time()
                if t0 is not None and loop.time() - t0 >= secs:
                    break
                try:
                    msg = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                if '"type": "update"' in msg.data[:200]:
                    n += len(msg.data)
                    updates += '"topic": "agent_metrics"' in msg.data[:200]
            kind = "delta" if delta else "full"
            out[kind] = n / max(1e-9, loop.time() - (t0 or loop.time()))
            out[f"{kind}_per_tick"] = n / max(1, updates)
    asyncio.run(main())


GL_FRAME_JS = """() => {
  const v = window.__legion.view; const gl = v.renderer.getContext(); const px = new Uint8Array(4);
  const pr = v.renderer.getPixelRatio(); v.stop(); v.renderer.setPixelRatio(1); v.resize();
  const ts = [];
  for (let i = 0; i < 15; i++) {
    const t = performance.now(); v.renderer.render(v.scene, v.camera);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px); ts.push(performance.now() - t);
  }
  const info = { ...v.renderer.info.render };
  v.renderer.setPixelRatio(pr); v.resize(); v.start();
  return [ts.sort((a, b) => a - b)[7], info];
}"""


REFRESH_JS = """() => {
  const v = window.__legion.view; const ts = [];
  for (let i = 0; i < 11; i++) {
    const t = performance.now(); v.refresh(); ts.push(performance.now() - t);
  }
  return ts.sort((a, b) => a - b)[5];
}"""


def measure(browser: Any, fleet: Fleet, secs: float) -> dict[str, Any]:
    ctx = browser.new_context(viewport={"width": 1600, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t_load = time.perf_counter()
    page.goto(f"{fleet.url}/#token={fleet.token}")
    n_agents = len(fleet.nodes) * len(AGENTS)
    steps: list[float] = []
    try:
        for cond in (f"window.__legion.fleet?.agents.size === {n_agents}",
                     "window.__legion.view?.frames > 3", "window.__legion.socket?.messages > 5"):
            page.wait_for_function(f"() => {cond}", timeout=300_000, polling=50)
            steps.append(round(time.perf_counter() - t_load, 2))
    except Exception:
        print("not ready:", page.evaluate("() => [window.__legion.fleet?.agents.size, "
                                          "window.__legion.view?.frames, "
                                          "window.__legion.socket?.messages]"), errors, flush=True)
        raise
    load_s = time.perf_counter() - t_load
    snapshot_bytes = page.evaluate("() => window.__legion.socket.bytes")
    page.wait_for_timeout(3000)  # let the snapshot settle
    start, plain = threading.Event(), dict[str, float]()
    probes = [threading.Thread(target=ws_bytes, args=(fleet.url, fleet.token, d, start, secs,
                                                      plain), daemon=True) for d in (False, True)]
    for t in probes:
        t.start()
    time.sleep(2)
    start.set()
    t0, b0, m0 = page.evaluate("() => { const s = window.__legion.socket; s.maxCostMs = 0; "
                               "return [performance.now(), s.bytes, s.messages]; }")
    page.wait_for_timeout(secs * 1000)
    t1, b1, m1, stats, mode, upd = page.evaluate(
        f"() => [performance.now(), window.__legion.socket.bytes, window.__legion.socket.messages,"
        f" window.__legion.view.frameStats({t0}), window.__legion.mode,"
        f" [window.__legion.updateCostMs, window.__legion.socket.maxCostMs]]")
    gl_frame, gl_info = page.evaluate(GL_FRAME_JS)
    refresh_ms = page.evaluate(REFRESH_JS)
    ctx.close()
    for t in probes:
        t.join(secs + 30)
    span = (t1 - t0) / 1000
    return {"hosts": len(fleet.nodes), "agents": n_agents, "mode": mode,
            "first_full_map_s": round(load_s, 2), "map_steps_s": steps,
            "snapshot_bytes": snapshot_bytes,
            "frame_interval_ms_p50": round(stats["interval_p50"], 1),
            "frame_interval_ms_p95": round(stats["interval_p95"], 1),
            "frame_cost_ms_p50": round(stats["cost_p50"], 1),
            "frame_cost_ms_p95": round(stats["cost_p95"], 1),
            "frames": stats["frames"], "secs": round(span, 1),
            "gl_frame_ms_pr1_p50": round(gl_frame, 1),
            "gl_draw": {k: gl_info.get(k) for k in ("calls", "triangles", "points", "lines")},
            "view_refresh_ms_p50": round(refresh_ms, 2),
            "update_cost_ms_view_list_panels": [round(x, 1) for x in upd[0] or []],
            "ws_message_cost_ms_max": round(upd[1] if upd[1] is not None else -1, 1),
            "ws_update_bytes_per_s_full": round(plain.get("full", -1)),
            "ws_update_bytes_per_s_delta": round(plain.get("delta", -1)),
            "ws_update_bytes_per_tick_full": round(plain.get("full_per_tick", -1)),
            "ws_update_bytes_per_tick_delta": round(plain.get("delta_per_tick", -1)),
            "ws_bytes_per_s": round((b1 - b0) / span), "ws_messages_per_s": round(
                (m1 - m0) / span, 2),
            "store_write_ms_p50": round(1000 * sorted(fleet.write_s)[len(fleet.write_s) // 2], 1),
            "store_writes": len(fleet.write_s),
            "page_errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="3,30,100")
    ap.add_argument("--secs", type=float, default=20.0)
    ap.add_argument("--out", default="")
    ap.add_argument("--dashboard-dir", default=None,
                    help="serve this copy of the dashboard (e.g. an older one, to compare)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for n in (int(x) for x in args.hosts.split(",")):
                with tempfile.TemporaryDirectory() as d, \
                        Fleet(Path(d), n, args.dashboard_dir) as fleet:
                    row = measure(browser, fleet, args.secs)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            browser.close()
    base = rows[0]
    for r in rows:
        r["ws_bytes_vs_first"] = round(r["ws_bytes_per_s"] / max(1, base["ws_bytes_per_s"]), 2)
        r["frame_p50_vs_first"] = round(r["frame_interval_ms_p50"] / base["frame_interval_ms_p50"],
                                        2)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": "shared 2-core VM, software GL",
                                              "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
