// Dashboard bootstrap: token → fleet snapshot → view + panels → live WebSocket.
import { Fleet } from './data.js';
import { Api, ApiError, gatewayBase, readToken, storeToken, clearToken } from './api.js';
import { LiveSocket } from './ws.js';
import { FleetList } from './fleetlist.js';
import { DetailPanel } from './detail.js';
import { AlertsPanel } from './alerts.js';
import { View2D } from './view2d.js';
import { h, toast, hclass, HEALTH_LABEL } from './dom.js';
import { fmt } from './charts.js';

const $ = (id) => document.getElementById(id);
const app = { fleet: new Fleet(), api: null, socket: null, view: null, mode: null, selected: null, webgl: null };
window.__legion = app; // inspection hook for tests and debugging (holds no secrets beyond the page's own)

async function boot() {
  const token = readToken();
  if (!token) { showLogin(); return; }
  try {
    await start(token);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) { clearToken(); showLogin('That token was not accepted.'); return; }
    toast(`Could not load the fleet: ${e.message}`, 'error', 8000);
  }
}

function showLogin(error) {
  const dlg = $('login'); const err = $('login-error');
  err.hidden = !error; err.textContent = error || '';
  if (!dlg.open) dlg.showModal();
  // select what is there, so pasting the right token replaces a rejected one instead of
  // appending to it (which kept sending `Bearer lgn_wrong…lgn_right`)
  const input = $('token-input'); input.focus(); input.select();
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  app.lastTriedToken = token; // what the form sent (tests check the retry sends the new one)
  $('login-submit').disabled = true;
  try {
    await new Api(token, gatewayBase()).get('/api/v1/fleet');
    storeToken(token); $('login').close(); $('token-input').value = '';
    await start(token);
  } catch (e) {
    showLogin(e.status === 401 || e.status === 403 ? 'That token was not accepted.' : e.message);
  } finally { $('login-submit').disabled = false; }
});
$('login').addEventListener('cancel', (e) => { if (!app.api) e.preventDefault(); });

async function start(token) {
  if (app.socket) { // signing in again (token revoked or expired): keep the page, swap the token
    app.api.token = token; app.socket.stop(); app.socket.token = token; app.socket.start();
    return;
  }
  const api = new Api(token, gatewayBase());
  const fleet = app.fleet;
  const [snap, positions] = await Promise.all([api.get('/api/v1/fleet'), loadPositions()]);
  app.api = api; // only a token that was accepted becomes the page's
  fleet.positions = { ...positions };
  fleet.applyFleet(snap);

  app.list = new FleetList(fleet, { onSelect: (ref) => select(ref) });
  app.detail = new DetailPanel(fleet, api, { onSelect: (ref) => select(ref), onClose: () => select(null) });
  app.alerts = new AlertsPanel(fleet, api, { onSelect: (ref) => select(ref) });

  fleet.addEventListener('structure', onStructure);
  fleet.addEventListener('values', scheduleValues);
  fleet.addEventListener('anomalies', scheduleValues);
  fleet.addEventListener('forecasts', () => app.detail.update());
  fleet.addEventListener('alerts', () => { app.alerts.render(); app.list.refresh(); });
  fleet.addEventListener('hello', (e) => onSession(e.detail));

  app.socket = new LiveSocket(api.wsUrl(), token, {
    onMessage: (m) => {
      if (m.type === 'error') console.warn('gateway:', m.error);
      fleet.applyMessage(m);
    },
    onState: setConn,
    onAuthFailed: () => { clearToken(); showLogin('Your session is no longer valid; sign in again.'); },
  });
  // the socket's handshake and snapshots travel while the 3D view loads and builds (a fleet of
  // 100 hosts waited for both one after the other)
  app.socket.start();
  await setMode(preferredMode()); // builds the view
  structureShown();
  app.alerts.render();
  $('logout').hidden = false;
  // the role also arrives in the WebSocket hello; asking now shows it even while the socket is down
  api.get('/api/v1/whoami').then((who) => { if (!fleet.session) onSession(who); }).catch(() => {});
}

async function loadPositions() {
  try {
    const r = await fetch('./agent_positions.json', { cache: 'no-cache' });
    if (!r.ok) return {};
    const j = await r.json();
    return j && typeof j === 'object' ? (j.agentPositions || j.agent_positions || j) : {};
  } catch { return {}; }
}

function onSession(s) {
  const u = $('user'); u.hidden = false;
  u.querySelector('.user-name').textContent = s.user || 'signed in';
  const badge = u.querySelector('.role-badge'); badge.textContent = s.role; badge.dataset.role = s.role;
  app.canWrite = (s.permissions || []).includes('write');
  document.body.dataset.role = s.role;
  app.alerts.setCanWrite(app.canWrite);
}

function onStructure() {
  app.view?.rebuild();
  structureShown();
}

/** Everything but the map follows a changed fleet structure (hosts, agents, departments). */
function structureShown() {
  app.list.rebuild();
  $('empty-stage').hidden = app.fleet.hosts.size > 0;
  if (app.selected && !app.fleet.entity(app.selected)) select(null);
  else app.detail.update();
}

let valuesPending = false;
function scheduleValues() {
  if (valuesPending) return;
  valuesPending = true;
  setTimeout(() => {
    valuesPending = false;
    const t = [performance.now()];
    app.view?.refresh(); t.push(performance.now()); app.list.refresh(); t.push(performance.now());
    app.detail.update(); app.alerts.render(); t.push(performance.now());
    // main-thread cost of one update (view, list, panels), for the fleet benchmark
    app.updateCostMs = [t[1] - t[0], t[2] - t[1], t[3] - t[2]];
  }, 50);
}

/** Select a host/agent (or null to clear) everywhere: map, list, detail panel. */
function select(ref) {
  if (ref && !app.fleet.entity(ref)) ref = null;
  const same = ref && app.selected && ref.kind === app.selected.kind && ref.id === app.selected.id;
  app.selected = ref;
  app.view?.select(ref, { focus: !same });
  app.list.mark(ref);
  if (!same) app.detail.show(ref);
}
app.select = select;

// ---- view mode (3D with WebGL, 2D fallback) ----
function preferredMode() {
  const q = new URLSearchParams(location.search); const frag = new URLSearchParams(location.hash.slice(1));
  const want = q.get('view') || frag.get('view') || localStorage.getItem('legion.view');
  return want === '2d' ? '2d' : '3d';
}

async function setMode(mode) {
  if (mode === '3d') {
    if (app.webgl === null) {
      try {
        const mod = await import('./scene3d.js');
        app.webgl = mod.webglAvailable() ? mod : false;
      } catch (e) { console.warn('3D view unavailable:', e); app.webgl = false; }
    }
    if (!app.webgl) {
      mode = '2d';
      $('view-3d').disabled = true; $('view-3d').title = 'WebGL is not available in this browser';
      toast('WebGL is not available: showing the 2D map.');
    }
  }
  if (app.mode === mode && app.view) return;
  app.view?.dispose();
  const opts = { onSelect: (ref) => (ref ? select(ref) : null), onHover };
  try {
    app.view = mode === '3d' ? new app.webgl.Scene3D($('viewport'), app.fleet, opts) : new View2D($('viewport'), app.fleet, opts);
  } catch (e) {
    console.warn('3D view failed, using 2D:', e);
    mode = '2d'; app.webgl = false; $('view-3d').disabled = true;
    app.view = new View2D($('viewport'), app.fleet, opts);
  }
  app.mode = mode;
  document.body.dataset.view = mode;
  $('view-3d').setAttribute('aria-pressed', String(mode === '3d')); $('view-2d').setAttribute('aria-pressed', String(mode === '2d'));
  $('stage-hint').textContent = mode === '3d' ? 'Drag to orbit · right-drag to pan · scroll to zoom · click an agent or host' : 'Drag to pan · scroll to zoom · click an agent or host';
  app.view.rebuild(); app.view.start();
  if (app.selected) app.view.select(app.selected);
}

$('view-3d').addEventListener('click', () => { localStorage.setItem('legion.view', '3d'); setMode('3d'); });
$('view-2d').addEventListener('click', () => { localStorage.setItem('legion.view', '2d'); setMode('2d'); });
$('reset-view').addEventListener('click', () => app.view?.resetView());

// ---- hover tooltip ----
function onHover(ref, x, y) {
  const tip = $('tooltip'); const e = app.fleet.entity(ref);
  document.getElementById('viewport').style.cursor = e ? 'pointer' : '';
  if (!e) { tip.hidden = true; return; }
  const m = e.metrics;
  const rows = ref.kind === 'host'
    ? [['CPU', fmt(m.cpu_usage_percent, '%')], ['Memory', fmt(m.memory_usage_percent, '%')], ['Agents', String(app.fleet.agentsOf(e.id).length)]]
    : [['Department', e.department], ['Response p95', `${fmt(m.response_time_ms_p95)} ms`], ['Success', fmt(m.success_rate_percent, '%')], ['Host', e.node]];
  tip.replaceChildren(h('b', {}, e.id), h('div', { class: `row` }, h('span', {}, ref.kind), h('span', { class: `tag ${hclass(e.health)}` }, HEALTH_LABEL[e.health])),
    ...rows.map(([k, v]) => h('div', { class: 'row' }, h('span', {}, k), h('span', {}, v))));
  const r = $('stage').getBoundingClientRect();
  tip.style.left = `${Math.min(x - r.left + 14, r.width - 190)}px`; tip.style.top = `${Math.min(y - r.top + 14, r.height - 120)}px`;
  tip.hidden = false;
}

// ---- connection state, range picker, keyboard ----
function setConn(state, detail) {
  const c = $('conn'); c.className = `conn ${state}`;
  c.querySelector('.conn-text').textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : `offline${detail ? ` · ${detail}` : ''}`;
}

for (const b of document.querySelectorAll('#range-picker button')) {
  b.addEventListener('click', () => {
    for (const o of document.querySelectorAll('#range-picker button')) o.setAttribute('aria-pressed', String(o === b));
    app.detail?.setRange(b.dataset.range === 'live' ? null : Number(b.dataset.range));
  });
}

document.addEventListener('keydown', (e) => {
  if ($('login').open) return;
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '');
  if (!typing && e.key === '/') { e.preventDefault(); $('fleet-filter').focus(); return; }
  if (!typing && (e.key === 'r' || e.key === 'R') && !e.ctrlKey && !e.metaKey) { app.view?.resetView(); return; }
  if (e.key !== 'Escape') return;
  if (typing && document.activeElement === $('fleet-filter') && $('fleet-filter').value) {
    $('fleet-filter').value = ''; app.list.applyFilter(); return;
  }
  if (app.selected) {
    const row = app.list?.rows.get(`${app.selected.kind}:${app.selected.id}`);
    select(null);
    (row || $('fleet-list')).focus();
  }
});

$('logout').addEventListener('click', () => { app.socket?.stop(); clearToken(); location.hash = ''; location.reload(); });

boot();
