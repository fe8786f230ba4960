"""The dashboard's numbers and interactions as a user sees them, in Debian's chromium (playwright)
at 1600×900, against a real gateway and DuckDB store (the live fleet of test_dashboard_browser,
plus per-interface network counters): sign-in retry, network rates equal to the API's, counts
equal to `/api/v1/fleet`'s summary, agent detail and list in agreement, alert names that
`legionctl query` finds, the 2D legend covering no card, clicking and labelling agents in 3D, the
search flying to a match.

Screenshots go to `test-artifacts/` (printed). Never downloads a browser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import Config, config_to_dict
from legion.kernel.config import CONFIG_FILENAME
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.aggregator.dashboard_harness import (
    AGENTS,
    ARTIFACTS,
    HOSTS,
    HOT_HOST,
    SLOW_AGENT,
    LiveGateway,
    Page,
)

pytestmark = pytest.mark.timeout(180)

# bytes per second per interface: what the page must show as rates (eth0 + lo summed)
RX = {"eth0": 2000.0, "lo": 500.0}
TX = {"eth0": 800.0, "lo": 500.0}
SIZE = {"width": 1600, "height": 900}


class NetGateway(LiveGateway):
    """The live fleet, plus `system_network_*_bytes_total{interface}` counters at fixed rates."""

    def _write(self) -> None:
        super()._write()
        now = int(time.time() * 1000)
        secs = (now - self.t0) / 1000
        for node in HOSTS:
            s = [Sample(f"system_network_{kind}_bytes_total",
                        canonical_labels({"interface": iface}), 1e6 + rate * secs, now)
                 for kind, rates in (("received", RX), ("sent", TX))
                 for iface, rate in rates.items()]
            self.store.write([IncomingBatch(node, 2, self.seq, MetricsBatch.from_samples(s), now)])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    gw = NetGateway(tmp_path_factory.mktemp("dash-numbers")).start()
    yield gw
    gw.stop()


def api_fleet(pg: Page) -> dict[str, Any]:
    return pg.js("""async () => (await fetch('/api/v1/fleet', {headers: {Authorization:
        'Bearer ' + sessionStorage.getItem('legion.token')}})).json()""")


def test_sign_in_wrong_then_right_without_reload(gateway: NetGateway, browser: Any) -> None:
    pg = Page(browser, f"{gateway.url}/?view=2d", SIZE)  # 2D: light on the shared CPU
    sent: list[str] = []
    pg.page.on("request", lambda r: sent.append(r.headers.get("authorization", ""))
               if r.url.endswith("/api/v1/fleet") else None)
    try:
        p = pg.page
        p.locator("dialog#login").wait_for(state="visible", timeout=10_000)
        pg.js("() => { window.__sameDocument = true; }")
        p.locator("#token-input").click()
        p.keyboard.insert_text("lgn_wrong_token")  # as pasted
        p.click("#login-submit")
        p.locator("#login-error").wait_for(state="visible", timeout=10_000)
        assert "not accepted" in p.locator("#login-error").inner_text()
        p.keyboard.insert_text(gateway.token["viewer"])  # paste the right one, no clearing
        p.click("#login-submit")
        p.locator("dialog#login").wait_for(state="hidden", timeout=10_000)
        pg.wait(f"() => window.__legion.fleet.agents.size === {len(AGENTS)}")
        assert pg.js("() => window.__sameDocument") is True, "the page was reloaded"
        assert sent[0] == "Bearer lgn_wrong_token"
        assert sent[1:] and set(sent[1:]) == {f"Bearer {gateway.token['viewer']}"}, sent
        assert pg.js("() => sessionStorage.getItem('legion.token')") == gateway.token["viewer"]
        assert all("401" in e for e in pg.errors), pg.errors
    finally:
        pg.close()


def test_numbers_agree_with_the_api(gateway: NetGateway, browser: Any) -> None:
    pg = Page(browser, f"{gateway.url}/?view=2d#token={gateway.token['admin']}", SIZE)
    try:
        p = pg.page
        pg.wait(f"() => window.__legion.fleet.agents.size === {len(AGENTS)}")
        # the chips and the fleet-health card show the gateway's summary (hosts and agents)
        pg.wait("() => window.__legion.fleet.summary?.critical === 2")
        s = api_fleet(pg)["summary"]
        assert (s["critical"], s["host_health"]["critical"], s["agent_health"]["critical"]) \
            == (2, 1, 1), s  # the hot host and the slow agent
        chips = pg.js("""() => Object.fromEntries([...document.querySelectorAll(
            '#summary-chips .chip-value')].map((e) => [e.dataset.k, e.textContent]))""")
        assert chips["hosts"] == str(s["hosts"]) and chips["agents"] == str(s["agents"])
        assert (chips["ok"], chips["warn"], chips["crit"]) == (
            str(s["ok"]), str(s["warning"]), str(s["critical"]))
        kv = p.locator("#fleet-kv").inner_text()
        assert f"Hosts warning · critical\n{s['host_health']['warning']} · 1" in kv, kv
        assert p.locator("#fleet-count").inner_text() == "3 hosts · 18 agents"
        assert pg.js("async () => (await import('./js/fleetlist.js')).plural(1, 'host')") \
            == "1 host"

        # network in/out: the gateway's per-interface rates, summed, shown as they are
        p.locator("#fleet-list .tree-item[data-kind='host'][data-id='web-1']").click()
        pg.wait_title("web-1")
        pg.wait("() => /B\\/s$/.test([...document.querySelectorAll('#detail dt')].find("
                "(d) => d.textContent === 'Network in')?.nextElementSibling.textContent || '')")
        shown = pg.js("""() => Object.fromEntries([...document.querySelectorAll('#detail dt')]
            .map((d) => [d.textContent, d.nextElementSibling.textContent]))""")
        m = next(h for h in api_fleet(pg)["hosts"] if h["node"] == "web-1")["metrics"]
        assert m["network_received_bytes_per_s"] == pytest.approx(sum(RX.values()))
        assert m["network_sent_bytes_per_s"] == pytest.approx(sum(TX.values()))
        assert float(shown["Network in"].split()[0]) == pytest.approx(
            m["network_received_bytes_per_s"], abs=0.5)
        assert float(shown["Network out"].split()[0]) == pytest.approx(
            m["network_sent_bytes_per_s"], abs=0.5)

        # an agent's detail and its list row say the same thing at the same moment
        agent = AGENTS[0].agent_id
        p.locator(f"#fleet-list .tree-item[data-kind='agent'][data-id='{agent}']").click()
        pg.wait_title(agent)
        seen = set()
        for _ in range(6):
            row, detail, health, dot = pg.js(f"""() => {{
                const row = document.querySelector("#fleet-list .tree-item[data-id='{agent}']");
                const box = document.querySelector(
                    "#detail .metric[data-metric='response_time_ms_p95']");
                return [row.querySelector('.meta').textContent,
                        box.querySelector('.metric-value').textContent.replace('ms', ' ms'),
                        document.querySelector('#detail .detail-sub .tag:nth-child(2)').className,
                        row.querySelector('.hdot').className];
            }}""")
            assert row == detail, (row, detail)
            assert health.split()[-1] in dot.split(), (health, dot)
            seen.add(row)
            p.wait_for_timeout(400)
        assert len(seen) > 1, "the values should have moved while we looked"
        # long names carry a tooltip; a 1 h range with a minute of data is not squeezed right
        assert p.locator(f"#fleet-list .tree-item[data-id='{agent}'] .name").get_attribute(
            "title").startswith(agent)
        p.get_by_role("button", name="1h").click()
        pg.wait("() => window.__legion.detail.hist.size >= 3")
        pg.wait_points("cpu_usage_percent")
        span = pg.js("""() => Date.now() - Number(document.querySelector(
            "#detail canvas[data-metric='cpu_usage_percent']").dataset.fromMs)""")
        assert span < 30 * 60_000, f"the axis starts {span / 60_000:.0f} min back, not at the data"
        p.get_by_role("button", name="Live").click()
        p.screenshot(path=str(ARTIFACTS / "dashboard-numbers.png"))
        assert not pg.errors, pg.errors
    finally:
        pg.close()


def legionctl_query(gateway: NetGateway, tmp: Path, metric: str,
                    *where: str) -> list[dict[str, Any]]:
    """`legionctl query METRIC WHERE... --format json` as a user runs it, against `gateway`."""
    raw = config_to_dict(Config())
    raw["security"]["enable_tls"] = False
    raw["aggregator"]["api_host"] = "127.0.0.1"
    raw["dashboard_config"]["websocket_port"] = urlsplit(gateway.url).port
    cfg = tmp / CONFIG_FILENAME
    cfg.write_text(json.dumps(raw))
    res = subprocess.run([sys.executable, "-m", "legion.cli", "query", metric, *where,
                          "--since", "10m", "--format", "json", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LEGION_TOKEN": gateway.token["viewer"]})
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows


def test_alert_metric_names_query_through_legionctl(gateway: NetGateway, browser: Any,
                                                     tmp_path: Path) -> None:
    """The metric name an alert shows on the dashboard, copied into `legionctl query` with the
    alert's host or agent, returns that series' points (the stored names, issue 16 item 4)."""
    pg = Page(browser, f"{gateway.url}/?view=2d#token={gateway.token['viewer']}", SIZE)
    try:
        titles = ("() => [...document.querySelectorAll('#alerts-list .alert:not(.kind-anomaly) "
                  ".alert-title')].map((b) => b.textContent)")
        pg.wait(f"() => {{ const t = ({titles})(); return t.some((x) => x.startsWith("
                f"'{HOT_HOST} · ')) && t.some((x) => x.startsWith('{SLOW_AGENT} · ')); }}",
                timeout=60)
        shown = dict(t.split(" · ", 1) for t in pg.js(titles))
        pg.page.locator("#alerts-list").screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"))
        assert not pg.errors, pg.errors
    finally:
        pg.close()
    host_metric, agent_metric = shown[HOT_HOST], shown[SLOW_AGENT]
    assert (host_metric, agent_metric) == ("system_cpu_usage_percent", "agent_response_time_ms")
    rows = legionctl_query(gateway, tmp_path, host_metric, "--node", HOT_HOST)
    assert rows and {(r["metric"], r["node"]) for r in rows} == {(host_metric, HOT_HOST)}, rows
    rows = legionctl_query(gateway, tmp_path, agent_metric, "--label", f"agent_id={SLOW_AGENT}")
    assert rows and {r["metric"] for r in rows} == {agent_metric}, rows
    assert {r["labels"]["agent_id"] for r in rows} == {SLOW_AGENT}
    assert any(r["labels"].get("quantile") == "p95" and r["value"] > 5000 for r in rows)


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] \
        and b["top"] < a["bottom"]


@pytest.mark.parametrize("size", [SIZE, {"width": 1280, "height": 720}])
def test_2d_legend_overlaps_no_card(gateway: NetGateway, browser: Any,
                                    size: dict[str, int]) -> None:
    pg = Page(browser, f"{gateway.url}/?view=2d#token={gateway.token['viewer']}", SIZE)
    try:
        pg.page.set_viewport_size(size)
        pg.wait(f"() => window.__legion.mode === '2d' && window.__legion.fleet.hosts.size === "
                f"{len(HOSTS)} && window.__legion.view.frames > 5")
        pg.wait("() => document.getElementById('dept-legend').children.length > 0")
        pg.page.wait_for_timeout(300)
        cards = pg.js("() => window.__legion.view.hostRects()")
        overlays = pg.js("""() => [...document.querySelectorAll('.stage-overlay > *')]
            .map((e) => e.getBoundingClientRect()).filter((r) => r.width && r.height)
            .map((r) => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom}))""")
        stage = pg.js("""() => { const r = document.getElementById('viewport')
            .getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right,
            bottom: r.bottom}; }""")
        assert len(cards) == len(HOSTS) and len(overlays) >= 3
        for c in cards:
            assert c["top"] >= stage["top"] and c["bottom"] <= stage["bottom"], (c, stage)
            assert c["left"] >= stage["left"] and c["right"] <= stage["right"], (c, stage)
            for o in overlays:
                assert not _overlap(c, o), (c, o)
        pg.page.screenshot(path=str(ARTIFACTS / f"dashboard-2d-{size['width']}.png"))
        assert not pg.errors, pg.errors
    finally:
        pg.close()


def test_3d_click_selects_agent_labels_and_search(gateway: NetGateway, browser: Any) -> None:
    pg = Page(browser, f"{gateway.url}/#token={gateway.token['viewer']}", SIZE)
    try:
        p = pg.page
        pg.wait(f"() => window.__legion.mode === '3d' && window.__legion.fleet.agents.size === "
                f"{len(AGENTS)} && window.__legion.view.frames > 3")
        # the anomalous agent is labelled without being selected
        pg.wait(f"() => window.__legion.view.agentLabels().includes('{SLOW_AGENT}')")
        # value updates change the flows in place: their arcs are built once per structure
        builds, msgs = pg.js("() => [window.__legion.view.flows.builds, "
                             "window.__legion.socket.messages]")
        pg.wait(f"() => window.__legion.socket.messages >= {msgs + 4}")
        assert pg.js("() => window.__legion.view.flows.builds") == builds
        assert pg.js("() => window.__legion.view.flows.curves.length") > 0
        # a rebuild with the pointer already over the map (hover picks before the next frame):
        # the agents' ray bounds must still follow them, so a click on a sphere selects it
        agent = AGENTS[7].agent_id
        pg.js("""() => { const v = window.__legion.view; v.rebuild();
            const r = v.renderer.domElement.getBoundingClientRect();
            v.renderer.domElement.dispatchEvent(new PointerEvent('pointermove',
                {clientX: r.left + 20, clientY: r.top + 20})); }""")
        n = pg.js("() => window.__legion.view.frames")
        pg.wait(f"() => window.__legion.view.frames > {n + 2}")
        pg.click_entity("agent", agent)
        pg.wait_title(agent)
        assert p.locator("#fleet-list [aria-selected='true']").inner_text().startswith(agent)
        pg.wait(f"() => window.__legion.view.agentLabels().includes('{agent}')")
        # hovering another agent labels it too; labels stay few (no clutter)
        other = AGENTS[2].agent_id
        p.mouse.move(5, 5)
        p.wait_for_timeout(900)  # the camera glides to the selection
        pos = pg.js(f"() => window.__legion.view.screenPos({{kind: 'agent', id: '{other}'}})")
        p.mouse.move(pos["x"], pos["y"])
        pg.wait(f"() => window.__legion.view.agentLabels().includes('{other}')")
        assert len(pg.js("() => window.__legion.view.agentLabels()")) <= 10
        p.screenshot(path=str(ARTIFACTS / "dashboard-3d-labels.png"))

        # hosts are grouped: by name, or by `"group:NODE"` in the positions file (e.g. a site)
        groups = pg.js("""() => { const a = window.__legion;
            a.fleet.positions = {'group:web-1': 'eu-west', 'group:gpu-1': 'eu-west'};
            a.view.rebuild(); return a.view.layout.groups.map((g) => [g.name, g.hosts]); }""")
        assert ["eu-west", ["gpu-1", "web-1"]] in groups, groups
        # search: Enter in the filter selects the match and the camera flies to it
        p.locator("#fleet-filter").fill("vps-1")
        p.keyboard.press("Enter")
        pg.wait_title("vps-1")
        pg.wait("""() => { const v = window.__legion.view; const h = v.layout.hosts.get('vps-1');
            return !v._tween && Math.hypot(v.controls.target.x - h.x, v.controls.target.z - h.z)
                < 0.5; }""")
        assert not pg.errors, pg.errors
    finally:
        pg.close()

