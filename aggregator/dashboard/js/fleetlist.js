// Left panel: fleet health summary, top-bar chips, and the keyboard-navigable host/agent tree.
import { h, hclass, HEALTH_LABEL } from './dom.js';
import { fmt } from './charts.js';
import { departmentColors } from './layout.js';

/** Write a DOM property only when it changes (no needless style and layout work). */
function setIf(el, prop, value) { if (el[prop] !== value) el[prop] = value; }

/** "1 host", "3 hosts". */
export function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

export class FleetList {
  /** onSelect(ref) is called when a row is chosen (click, Enter or Space). */
  constructor(fleet, { onSelect }) {
    this.fleet = fleet; this.onSelect = onSelect;
    this.tree = document.getElementById('fleet-list');
    this.filter = document.getElementById('fleet-filter');
    this.rows = new Map(); this.expanded = new Set(); this.selected = null;
    this.filter.addEventListener('input', () => this.applyFilter());
    // search: Enter selects the best match, and the map flies to it
    this.filter.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      const ref = this.searchHit(this.filter.value);
      if (ref) { e.preventDefault(); this.onSelect(ref); }
    });
    this.tree.addEventListener('keydown', (e) => this._key(e));
  }

  /** Rebuild the tree after hosts/agents changed. */
  rebuild() {
    const f = this.fleet;
    this.tree.replaceChildren(); this.rows.clear();
    const hosts = [...f.hosts.values()].sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    const autoOpen = hosts.length <= 3;
    for (const host of hosts) {
      const key = `host:${host.id}`;
      const open = autoOpen || this.expanded.has(host.id);
      const row = h('div', { class: 'tree-item', role: 'treeitem', tabindex: '-1', 'aria-expanded': String(open), 'aria-selected': 'false', dataset: { kind: 'host', id: host.id } },
        h('span', { class: 'twisty', 'aria-hidden': 'true' }, open ? '▾' : '▸'),
        h('span', { class: 'hdot', 'aria-hidden': 'true' }),
        h('span', { class: 'name', title: host.id }, host.id),
        h('span', { class: 'meta' }));
      row.addEventListener('click', (e) => {
        if (e.target.classList.contains('twisty')) this.toggle(host.id); else this._choose(row);
      });
      const gid = `grp-${host.id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
      row.setAttribute('aria-owns', gid); // the agents' group belongs to the host's tree item
      const group = h('ul', { role: 'group', id: gid, hidden: !open });
      let dept = null;
      for (const a of f.agentsOf(host.id)) {
        if (a.department !== dept) { dept = a.department; group.append(h('li', { class: 'tree-dept', role: 'none' }, dept)); }
        const ar = h('div', { class: 'tree-item', role: 'treeitem', tabindex: '-1', 'aria-selected': 'false', dataset: { kind: 'agent', id: a.id, dept: a.department } },
          h('span', { class: 'hdot', 'aria-hidden': 'true' }), h('span', { class: 'name', title: `${a.id} (${a.department})` }, a.id), h('span', { class: 'meta' }));
        ar.addEventListener('click', () => this._choose(ar));
        group.append(h('li', { role: 'none' }, ar));
        this.rows.set(`agent:${a.id}`, ar);
      }
      this.tree.append(h('li', { role: 'none', dataset: { host: host.id } }, row, group));
      this.rows.set(key, row);
    }
    const first = this.tree.querySelector('.tree-item');
    if (first) first.tabIndex = 0;
    document.getElementById('fleet-count').textContent = `${plural(f.hosts.size, 'host')} · ${plural(f.agents.size, 'agent')}`;
    this._legend();
    this.refresh();
    this.applyFilter();
    if (this.selected) this.mark(this.selected);
  }

  _legend() {
    const box = document.getElementById('dept-legend');
    const colors = departmentColors(this.fleet.departmentNames());
    box.replaceChildren(...[...colors].map(([n, c]) => h('span', {}, h('i', { class: 'sw dept', style: `background:${c}` }), n)));
  }

  /** Update dots, metrics and the summary from current values. */
  refresh() {
    const f = this.fleet; const anom = f.anomalousSet(f.tsMs || Date.now());
    for (const [key, row] of this.rows) {
      // rows of a collapsed host are brought up to date when it opens (toggle): with 100 hosts
      // the list would otherwise rewrite ~1 900 rows on every update
      if (key.startsWith('agent:') && row.closest('ul[hidden]')) continue;
      this._refreshRow(key, row, anom);
    }
    this._summary();
  }

  _refreshRow(key, row, anom) {
    const kind = key.startsWith('host:') ? 'host' : 'agent';
    const e = this.fleet.entity({ kind, id: key.slice(kind.length + 1) });
    if (!e) return;
    const m = e.metrics;
    setIf(row.querySelector('.hdot'), 'className', `hdot ${hclass(e.health)}${anom.has(key) ? ' anom' : ''}`);
    setIf(row.querySelector('.meta'), 'textContent', kind === 'host'
      ? (m.cpu_usage_percent !== undefined ? `cpu ${fmt(m.cpu_usage_percent, '%')}` : '')
      : (m.response_time_ms_p95 !== undefined ? `${fmt(m.response_time_ms_p95)} ms` : ''));
    const label = `${kind} ${e.id}, ${HEALTH_LABEL[e.health] || e.health}${anom.has(key) ? ', anomaly' : ''}`;
    if (row.getAttribute('aria-label') !== label) row.setAttribute('aria-label', label);
  }

  _summary() {
    const c = this.fleet.counts();
    const set = (k, v) => { const el = document.querySelector(`#summary-chips [data-k="${k}"]`); if (el) el.textContent = v; };
    set('hosts', c.hosts); set('agents', c.agents); set('ok', c.ok); set('warn', c.warning);
    set('crit', c.critical); set('anomalies', this.fleet.anomalousSet(this.fleet.tsMs || Date.now()).size);
    set('msgrate', fmt(c.msgRate));
    document.title = c.critical ? `(${c.critical} critical) Legion Monitor` : 'Legion Monitor';
    // the bar and the chips count hosts and agents together, like the summary they come from
    const total = Math.max(1, c.hosts + c.agents);
    const segs = document.querySelectorAll('#health-bar .seg');
    [c.ok, c.warning, c.critical, c.stale + c.unknown].forEach((n, i) => { segs[i].style.flexGrow = String(n / total); });
    document.getElementById('health-bar').setAttribute('aria-label',
      `Hosts and agents: ${c.ok} healthy, ${c.warning} warning, ${c.critical} critical, ${c.stale + c.unknown} without data`);
    const hh = c.hostHealth; const ah = c.agentHealth;
    let tokens = 0; let cost = 0; let tasks = 0;
    for (const a of this.fleet.agents.values()) {
      tokens += a.metrics.tokens_per_s || 0; cost += (a.metrics.llm_cost_usd_per_s || 0) * 3600; tasks += a.metrics.tasks_per_s || 0;
    }
    const kv = document.getElementById('fleet-kv');
    kv.replaceChildren(...[
      ['Hosts healthy', `${hh.ok} / ${c.hosts}`],
      ['Hosts warning · critical', `${hh.warning} · ${hh.critical}`],
      ['Hosts without data', `${hh.stale + hh.unknown}`],
      ['Agents healthy', `${ah.ok} / ${c.agents}`],
      ['Agents warning · critical', `${ah.warning} · ${ah.critical}`],
      ['Tasks / s', fmt(tasks)],
      ['Tokens / s', fmt(tokens)],
      ['LLM cost / h', `$${fmt(cost)}`],
      ['Active alerts', String(this.fleet.alerts.size)],
    ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  /** Highlight the selected row, expanding its host. */
  mark(ref) {
    this.selected = ref;
    for (const r of this.tree.querySelectorAll('[aria-selected="true"]')) r.setAttribute('aria-selected', 'false');
    if (!ref) return;
    if (ref.kind === 'agent') { const a = this.fleet.agents.get(ref.id); if (a) this.toggle(a.node, true); }
    const row = this.rows.get(`${ref.kind}:${ref.id}`);
    if (row) { row.setAttribute('aria-selected', 'true'); this._rove(row); row.scrollIntoView({ block: 'nearest' }); }
  }

  toggle(node, open) {
    const li = this.tree.querySelector(`li[data-host="${CSS.escape(node)}"]`);
    if (!li) return;
    const row = li.firstElementChild; const group = li.querySelector('ul');
    const want = open ?? group.hidden;
    group.hidden = !want; row.setAttribute('aria-expanded', String(want));
    row.querySelector('.twisty').textContent = want ? '▾' : '▸';
    if (want) this.expanded.add(node); else this.expanded.delete(node);
    if (want) { // its rows were skipped while collapsed
      const anom = this.fleet.anomalousSet(this.fleet.tsMs || Date.now());
      for (const ar of group.querySelectorAll('.tree-item')) this._refreshRow(`agent:${ar.dataset.id}`, ar, anom);
    }
  }

  applyFilter() {
    const q = this.filter.value.trim().toLowerCase();
    for (const li of this.tree.children) {
      const host = li.dataset.host;
      let any = !q || host.toLowerCase().includes(q);
      for (const ar of li.querySelectorAll('ul .tree-item')) {
        const hit = !q || any || ar.dataset.id.toLowerCase().includes(q) || (ar.dataset.dept || '').toLowerCase().includes(q);
        ar.parentElement.hidden = !hit; if (hit) any = true;
      }
      li.hidden = !any;
      if (q && any) this.toggle(host, true);
    }
  }

  /** The best match for a search: an exact host/agent id, else the first id containing it. */
  searchHit(text) {
    const q = text.trim().toLowerCase(); if (!q) return null;
    const f = this.fleet; const ids = (m) => [...m.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    for (const [kind, m] of [['host', f.hosts], ['agent', f.agents]]) for (const id of ids(m)) if (id.toLowerCase() === q) return { kind, id };
    for (const [kind, m] of [['host', f.hosts], ['agent', f.agents]]) for (const id of ids(m)) if (id.toLowerCase().includes(q)) return { kind, id };
    return null;
  }

  _visibleItems() { return [...this.tree.querySelectorAll('.tree-item')].filter((r) => r.offsetParent !== null); }

  _rove(row) {
    for (const r of this.tree.querySelectorAll('.tree-item[tabindex="0"]')) r.tabIndex = -1;
    row.tabIndex = 0;
  }

  _choose(row) {
    this._rove(row); row.focus({ preventScroll: true });
    this.onSelect({ kind: row.dataset.kind, id: row.dataset.id });
  }

  _key(e) {
    const row = e.target.closest('.tree-item'); if (!row) return;
    const items = this._visibleItems(); const i = items.indexOf(row);
    const go = (r) => { if (r) { e.preventDefault(); this._rove(r); r.focus(); } };
    switch (e.key) {
      case 'ArrowDown': go(items[i + 1]); break;
      case 'ArrowUp': go(items[i - 1]); break;
      case 'Home': go(items[0]); break;
      case 'End': go(items[items.length - 1]); break;
      case 'ArrowRight': if (row.dataset.kind === 'host') { e.preventDefault(); this.toggle(row.dataset.id, true); } break;
      case 'ArrowLeft':
        if (row.dataset.kind === 'host') { e.preventDefault(); this.toggle(row.dataset.id, false); } else go(row.closest('li[data-host]').firstElementChild);
        break;
      case 'Enter': case ' ': e.preventDefault(); this._choose(row); break;
      default:
    }
  }
}
