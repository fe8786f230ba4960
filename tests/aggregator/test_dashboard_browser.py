"""The dashboard in a real browser: Debian's chromium driven by playwright, against a real gateway
serving a real DuckDB Store that a writer thread keeps filling (3 hosts, the Legion's 18 agents;
see dashboard_harness.py).

Screenshots go to `test-artifacts/` at the repository root. Never downloads a browser: the test is
skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from legion.demo.roster import AGENTS
from tests.aggregator.dashboard_harness import (
    ARGS,
    ARTIFACTS,
    CHROMIUM,
    HOSTS,
    HOT_HOST,
    SLOW_AGENT,
    LiveGateway,
    Page,
    host_of,
    painted_fraction,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    gw = LiveGateway(tmp_path_factory.mktemp("dash")).start()
    yield gw
    gw.stop()


def test_live_3d_dashboard_select_agent(gateway: LiveGateway, browser: Any) -> None:
    pg = Page(browser, f"{gateway.url}/#token={gateway.token['admin']}")
    try:
        p = pg.page
        # token from the fragment: stored for the tab, scrubbed from the address bar
        pg.wait("() => window.__legion.socket && window.__legion.socket.messages > 0")
        assert "token=" not in p.url
        assert pg.js("() => sessionStorage.getItem('legion.token')") == gateway.token["admin"]
        pg.wait("() => window.__legion.mode !== null")  # the view loads beside the socket
        assert pg.js("() => window.__legion.mode") == "3d", "WebGL (swiftshader) gives 3D"
        pg.wait(f"() => window.__legion.fleet.agents.size === {len(AGENTS)}")
        pg.wait(f"() => window.__legion.fleet.hosts.size === {len(HOSTS)}")
        # the WebSocket keeps delivering updates
        n0 = pg.js("() => window.__legion.socket.messages")
        pg.wait(f"() => window.__legion.socket.messages >= {n0 + 3}", timeout=20)
        assert p.locator("#conn").inner_text().strip() == "live"
        assert p.locator("#user .role-badge").inner_text().strip().lower() == "admin"
        pg.wait("() => window.__legion.view.frames > 5")

        shot = p.locator("#viewport").screenshot(path=str(ARTIFACTS / "dashboard-3d.png"))
        lit, colours = painted_fraction(shot)
        assert lit > 0.03 and colours > 50, f"3D canvas blank? {lit:.3f} painted, {colours} colours"

        # the slow agent is critical, the hot host raises a threshold alert
        pg.wait(f"() => window.__legion.fleet.agents.get('{SLOW_AGENT}').health === 'critical'")
        pg.wait("() => document.querySelectorAll('#alerts-list .alert').length > 0")
        # the analytics anomaly shows as a halo in the scene and in the alerts panel
        pg.wait("() => window.__legion.view.halos.count === 1")
        pg.wait("() => document.querySelectorAll('#alerts-list .alert.kind-anomaly').length == 1")

        # click the agent on the 3D canvas (raycast) → its panel with a live chart
        pg.click_entity("agent", SLOW_AGENT)
        pg.wait_title(SLOW_AGENT)
        pg.wait_points("response_time_ms_p95")
        pg.wait_points("response_time_ms_p95", pg.points("response_time_ms_p95"))
        assert p.locator("#fleet-list [aria-selected='true']").inner_text().startswith(SLOW_AGENT)
        assert "isolation_forest" in p.locator("#detail").inner_text()
        # an operator-or-better session sees write controls on alerts
        assert pg.count("#alerts-list [data-action='ack']") > 0
        p.mouse.move(5, 5)
        p.wait_for_timeout(900)  # let the camera glide to the selection
        p.screenshot(path=str(ARTIFACTS / "dashboard-agent-selected.png"))

        # keyboard: Escape closes the panel, Enter on a host row selects it
        p.keyboard.press("Escape")
        pg.wait_title("Nothing selected")
        row = p.locator(f"#fleet-list .tree-item[data-kind='host'][data-id='{HOT_HOST}']")
        row.focus()
        p.keyboard.press("Enter")
        pg.wait_title(HOT_HOST)
        pg.wait_points("cpu_usage_percent")
        assert "crosses 80" in p.locator("#detail .forecast-row").inner_text()
        # a history range: charts come from /api/v1/query
        p.get_by_role("button", name="15m").click()
        pg.wait("() => window.__legion.detail.hist.size >= 3")
        pg.wait_points("cpu_usage_percent")
        assert p.locator(".toast.error").count() == 0
        p.screenshot(path=str(ARTIFACTS / "dashboard-host-selected.png"))

        # the seed's agentPositions override: coordinates relative to the agent's host platform
        moved = pg.js(f"""() => {{
            const a = window.__legion; a.fleet.positions = {{'{SLOW_AGENT}': [1, 2, 3]}};
            a.view.rebuild();
            const h = a.view.layout.hosts.get('{host_of(4)}');
            const p = a.view.layout.agents.get('{SLOW_AGENT}');
            return [p.x - h.x, p.y, p.z - h.z];
        }}""")
        assert moved == [1, 2, 3]
        # the view toggle swaps renderers and keeps the selection
        p.click("#view-2d")
        pg.wait("() => window.__legion.mode === '2d' && window.__legion.view.frames > 2")
        p.click("#view-3d")
        pg.wait("() => window.__legion.mode === '3d' && window.__legion.view.frames > 2")
        pg.wait_title(HOT_HOST)
        assert not pg.errors, pg.errors
    finally:
        pg.close()


def test_viewer_sees_no_write_controls_and_api_refuses(gateway: LiveGateway, browser: Any) -> None:
    pg = Page(browser, f"{gateway.url}/#token={gateway.token['viewer']}")
    try:
        p = pg.page
        pg.wait("() => window.__legion.fleet.session?.role === 'viewer'")
        pg.wait("() => document.querySelectorAll('#alerts-list .alert').length > 0")
        assert p.locator("#user .role-badge").inner_text().strip().lower() == "viewer"
        assert p.locator("#alerts-list [data-action]").count() == 0
        assert p.get_by_role("button", name="Acknowledge").count() == 0
        assert p.get_by_role("button", name="Silence 1 h").count() == 0
        statuses = pg.js("""async () => {
            const h = {Authorization: 'Bearer ' + sessionStorage.getItem('legion.token'),
                       'Content-Type': 'application/json'};
            const body = JSON.stringify({name: 'mallory', role: 'admin'});
            const add = await fetch('/api/v1/users', {method: 'POST', headers: h, body});
            const del = await fetch('/api/v1/users/admin-user', {method: 'DELETE', headers: h});
            const read = await fetch('/api/v1/fleet', {headers: h});
            const alerts = await (await fetch('/api/v1/alerts', {headers: h})).json();
            const ack = await fetch(`/api/v1/alerts/${alerts[0].id}/ack`,
                                    {method: 'POST', headers: h, body: '{}'});
            return [add.status, del.status, read.status, ack.status];
        }""")
        assert statuses == [403, 403, 200, 403], statuses
        p.screenshot(path=str(ARTIFACTS / "dashboard-viewer.png"))
        # the refused calls above are the only console errors allowed (the browser logs 403s)
        assert all("403" in e for e in pg.errors), pg.errors

        # an admin revokes the viewer: the gateway closes the socket (4401), the page asks again
        req = urllib.request.Request(f"{gateway.url}/api/v1/users/viewer-user", method="DELETE",
                                     headers={"Authorization": f"Bearer {gateway.token['admin']}"})
        with urllib.request.urlopen(req, timeout=10) as res:
            assert res.status == 200
        p.locator("dialog#login").wait_for(state="visible", timeout=20_000)
        assert pg.js("() => sessionStorage.getItem('legion.token')") is None
    finally:
        pg.close()


def test_operator_acknowledges_an_alert(gateway: LiveGateway, browser: Any) -> None:
    """The engine's alert (the hot host's CPU, named by its stored metric) acknowledged by an
    operator on the dashboard: the button turns to "Acknowledged" and the engine has it."""
    pg = Page(browser, f"{gateway.url}/#token={gateway.token['operator']}")
    try:
        p = pg.page
        pg.wait("() => window.__legion.fleet.session?.role === 'operator'")
        title = f"{HOT_HOST} · system_cpu_usage_percent"
        find = ("[...document.querySelectorAll('#alerts-list .alert')].find(li => "
                f"li.querySelector('.alert-title')?.textContent === '{title}')")
        pg.wait(f"() => {find}?.querySelector(\"[data-action='ack']\")")
        # the list re-renders on every update, so find and click in one step (a real click
        # event on the button, handled by the dashboard's own code)
        pg.js(f"() => {find}.querySelector(\"[data-action='ack']\").click()")
        pg.wait(f"() => {find}?.querySelector(\"[data-action='ack']\")?.textContent "
                "=== 'Acknowledged'", timeout=20)
        hot = [a for a in gateway.alerts.alerts("firing") if a["node"] == HOT_HOST
               and a["metric"] == "system_cpu_usage_percent"]
        assert hot and hot[0]["acked_by"] == "operator-user"
        # the engine's own state comes back over the WebSocket: still acknowledged
        pg.wait(f"() => [...window.__legion.fleet.alerts.values()].some(a => a.id === "
                f"'{hot[0]['id']}' && a.acknowledged)")
        assert [e for e in pg.errors if "403" not in e] == []
        p.screenshot(path=str(ARTIFACTS / "dashboard-alert-acknowledged.png"))
    finally:
        pg.close()


class EmptyGateway(LiveGateway):
    """A gateway whose store never receives anything (a fresh install)."""

    def _write(self) -> None:
        pass

    def _anomalies(self) -> list[dict[str, Any]]:
        return []

    def _forecasts(self) -> list[dict[str, Any]]:
        return []


def test_empty_fleet_shows_waiting_state(browser: Any, tmp_path: Path) -> None:
    gw = EmptyGateway(tmp_path).start()
    try:
        pg = Page(browser, f"{gw.url}/#token={gw.token['viewer']}")
        pg.wait("() => window.__legion.socket?.messages > 1 && window.__legion.view?.frames > 2")
        pg.page.locator("#empty-stage").wait_for(state="visible", timeout=10_000)
        assert pg.page.locator("#conn").inner_text().strip() == "live"
        assert pg.count("#alerts-list .alert") == 0
        assert not pg.errors, pg.errors
        pg.close()
    finally:
        gw.stop()


def test_login_box_and_2d_fallback(gateway: LiveGateway, pw: Any) -> None:
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,  # a second one, without WebGL
                           args=ARGS + ["--disable-webgl", "--disable-3d-apis"])
    try:
        pg = Page(b, f"{gateway.url}/")
        p = pg.page
        dialog = p.locator("dialog#login")
        dialog.wait_for(state="visible", timeout=10_000)
        p.fill("#token-input", "not-a-token")
        p.click("#login-submit")
        p.locator("#login-error").wait_for(state="visible", timeout=10_000)
        p.fill("#token-input", gateway.token["operator"])
        p.click("#login-submit")
        dialog.wait_for(state="hidden", timeout=10_000)
        pg.wait("() => window.__legion.mode === '2d' && window.__legion.view.frames > 3")
        pg.wait(f"() => window.__legion.fleet.agents.size === {len(AGENTS)}")
        assert p.locator("#view-3d").is_disabled()
        shot = p.locator("#viewport").screenshot(path=str(ARTIFACTS / "dashboard-2d.png"))
        lit, _ = painted_fraction(shot)
        assert lit > 0.03, f"2D canvas looks blank ({lit:.3f})"
        pg.click_entity("agent", AGENTS[0].agent_id)
        pg.wait_title(AGENTS[0].agent_id)
        pg.wait("() => window.__legion.fleet.session?.role === 'operator'")
        pg.wait("() => document.querySelectorAll(\"#alerts-list [data-action='ack']\").length")
        # only the rejected login attempt may have logged an error (its 401)
        assert all("401" in e for e in pg.errors), pg.errors
        pg.close()
    finally:
        b.close()


def test_against_legionctl_demo(pw: Any, procs: Any, tmp_path: Path) -> None:
    """The stack as a user starts it: `legionctl demo` (TLS, simulator), then its printed link."""
    from tests.conftest import make_setup, wait_for

    # a setup on free ports (the demo reuses an existing directory), as `legionctl demo` makes it
    d = tmp_path / "demo"
    cfg_path = make_setup(d)
    raw = json.loads(cfg_path.read_text())
    raw["agent"]["monitor_endpoint"] = "ipc://" + str(d / "run" / "{node}-monitor.sock")
    cfg_path.write_text(json.dumps(raw, indent=2))
    port = raw["dashboard_config"]["websocket_port"]
    demo = procs("demo", "--dir", str(d), "--workers", "0", name="demo")

    def alive(found: Any) -> Any:
        if not found and demo.p.poll() is not None:
            raise AssertionError(f"legionctl demo exited:\n{demo.output()[-2000:]}")
        return found

    line = wait_for(lambda: alive(next((ln for ln in demo.output().splitlines()
                                        if ln.strip().startswith("dashboard")), None)), 60)
    url = line.split()[-1]
    assert url.startswith(f"https://127.0.0.1:{port}/#token=")
    wait_for(lambda: alive(" agents 18 " in demo.output()), timeout=90)

    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    try:
        ctx = b.new_context(viewport={"width": 1440, "height": 900}, ignore_https_errors=True)
        errors: list[str] = []
        p = ctx.new_page()
        p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        p.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        p.goto(url)
        p.wait_for_function("() => window.__legion.fleet.agents.size === 18", timeout=30_000)
        p.wait_for_function("() => window.__legion.socket?.messages > 0", timeout=20_000)
        n0 = p.evaluate("() => window.__legion.socket.messages")
        p.wait_for_function(f"() => window.__legion.socket.messages > {n0 + 2}", timeout=20_000)
        # the socket starts while the 3D view loads: the view comes up beside the live data
        p.wait_for_function("() => window.__legion.mode === '3d' && "
                            "window.__legion.view.frames > 5", timeout=20_000)
        lit, colours = painted_fraction(p.locator("#viewport").screenshot())
        assert lit > 0.03 and colours > 50, f"3D canvas blank? {lit:.3f} painted, {colours} colours"
        agent = p.evaluate("() => [...window.__legion.fleet.agents.keys()].sort()[0]")
        pos = p.evaluate(f"() => window.__legion.view.screenPos({{kind: 'agent', id: '{agent}'}})")
        p.mouse.click(pos["x"], pos["y"])
        p.wait_for_function(
            f"() => document.getElementById('detail-title').textContent === '{agent}'")
        sel = "#detail canvas[data-metric='cpu_usage_percent']"
        p.wait_for_function(f"() => Number(document.querySelector(\"{sel}\").dataset.points) > 1",
                            timeout=20_000)
        p.mouse.move(5, 5)
        p.wait_for_timeout(900)
        p.screenshot(path=str(ARTIFACTS / "dashboard-demo.png"))
        assert not errors, errors
        ctx.close()
    finally:
        b.close()
