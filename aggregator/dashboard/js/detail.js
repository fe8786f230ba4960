// Right panel, top: the selected host or agent with live charts, anomalies and forecasts.
import { h, ago, clock, hclass, HEALTH_LABEL, toast } from './dom.js';
import { drawChart, fmt } from './charts.js';
import { CHARTS, foldQueryRows, queryParams } from './data.js';

const COLORS = {
  cpu_usage_percent: '#38bdf8', memory_usage_percent: '#a78bfa', disk_usage_percent: '#fbbf24',
  response_time_ms_p95: '#f472b6', success_rate_percent: '#34d399', tokens_per_s: '#60a5fa', task_queue_depth: '#fb923c',
};
const HALF = new Set(['cpu_usage_percent', 'memory_usage_percent', 'tokens_per_s', 'task_queue_depth']);

export class DetailPanel {
  /** onSelect(ref) navigates (host ↔ agent links); onClose() clears the selection. */
  constructor(fleet, api, { onSelect, onClose }) {
    this.fleet = fleet; this.api = api; this.onSelect = onSelect; this.onClose = onClose;
    this.root = document.getElementById('detail'); this.body = document.getElementById('detail-body');
    this.title = document.getElementById('detail-title'); this.closeBtn = document.getElementById('detail-close');
    this.closeBtn.addEventListener('click', () => this.onClose());
    this.ref = null; this.rangeMs = null; this.hist = new Map(); this.charts = [];
  }

  /** Show an entity (or the empty state for null). */
  show(ref) {
    this.hist.clear();
    this.ref = ref && this.fleet.entity(ref) ? ref : null;
    if (!this.ref) { this._empty(); return; }
    this._build();
    if (this.rangeMs) this.loadHistory();
  }

  /** Switch between live (null) and a history range in ms. */
  setRange(ms) {
    this.rangeMs = ms; this.hist.clear();
    if (this.ref) { this.loadHistory(); this.update(); }
  }

  _empty() {
    this.title.textContent = 'Nothing selected'; this.closeBtn.hidden = true; this.charts = [];
    this.body.replaceChildren(h('p', { class: 'muted' },
      'Select a host or an agent on the map or in the list to see its live metrics, anomalies and forecast.'));
  }

  _build() {
    const ref = this.ref; const e = this.fleet.entity(ref);
    this.title.textContent = e.id; this.title.title = e.id; this.closeBtn.hidden = false;
    this.root.setAttribute('aria-label', `${ref.kind} ${e.id} details`);
    const sub = h('div', { class: 'detail-sub' });
    this.sub = sub;
    const grid = h('div', { class: 'metric-grid' });
    const wide = h('div', { class: 'detail-body' });
    this.charts = CHARTS[ref.kind].map((c) => {
      const canvas = h('canvas', { role: 'img', 'aria-label': `${c.label} chart`, dataset: { metric: c.key } });
      const value = h('span', { class: 'metric-value' });
      const box = h('div', { class: 'metric', dataset: { metric: c.key } },
        h('div', { class: 'metric-head' }, h('span', { class: 'metric-name' }, c.label), value), canvas);
      (ref.kind === 'agent' && HALF.has(c.key) ? grid : wide).append(box);
      return { def: c, canvas, value };
    });
    this.extra = h('div');
    this.reasons = h('ul', { class: 'list-plain small' });
    this.anoms = h('ul', { class: 'list-plain' });
    this.fcs = h('ul', { class: 'list-plain' });
    this.body.replaceChildren(sub, this.reasons,
      ...(ref.kind === 'agent' ? [grid, wide] : [wide, grid]), this.extra,
      h('h3', {}, 'Anomalies'), this.anoms, h('h3', {}, 'Forecast'), this.fcs);
    this.update();
  }

  /** Refresh readouts and charts from the fleet (called on every update). */
  update() {
    const ref = this.ref; if (!ref) return;
    const e = this.fleet.entity(ref);
    if (!e) { this.ref = null; this._empty(); return; }
    const now = this.fleet.tsMs || Date.now();
    const anomalies = this.fleet.anomaliesFor(ref);
    this.sub.replaceChildren(...[
      h('span', { class: 'tag' }, ref.kind),
      h('span', { class: `tag ${hclass(e.health)}` }, HEALTH_LABEL[e.health] || e.health),
      anomalies.length ? h('span', { class: 'tag anom' }, `${anomalies.length} anomal${anomalies.length === 1 ? 'y' : 'ies'}`) : null,
      ref.kind === 'agent' ? h('span', { class: 'tag' }, e.department) : null,
      ref.kind === 'agent' ? h('button', { type: 'button', class: 'ghost small', onclick: () => this.onSelect({ kind: 'host', id: e.node }), 'aria-label': `Show host ${e.node}` }, `on ${e.node}`) : null,
      h('span', { class: 'muted small' }, `seen ${ago(e.lastSeenMs, now)}`)].filter(Boolean));
    this.reasons.replaceChildren(...e.reasons.map((r) => h('li', { class: 'muted' }, `⚠ ${r}`)));

    const th = this.fleet.thresholds;
    const fcByMetric = new Map(this.fleet.forecastsFor(ref).map((f) => [f.metric, f]));
    for (const c of this.charts) {
      const d = c.def; const v = e.metrics[d.key];
      c.value.replaceChildren(fmt(v), h('span', { class: 'unit' }, v === undefined ? '' : d.unit));
      const live = this.fleet.series(ref.kind, e.id, d.key);
      let series = live; let fromMs;
      if (this.rangeMs) {
        fromMs = now - this.rangeMs;
        const past = this.hist.get(d.key);
        if (past) {
          const last = past.length ? past[past.length - 1][0] : 0;
          const t = past.map((p) => p[0]); const vv = past.map((p) => p[1]);
          for (let i = 0; i < live.t.length; i++) if (live.t[i] > last) { t.push(live.t[i]); vv.push(live.v[i]); }
          series = { t, v: vv };
        }
      }
      const fc = fcByMetric.get(d.key) || fcByMetric.get(`${ref.kind === 'agent' ? 'agent' : 'system'}_${d.key}`);
      drawChart(c.canvas, series, {
        color: COLORS[d.key], min: d.min ?? 0, max: d.max, fromMs, toMs: now,
        threshold: d.threshold ? th[d.threshold] : undefined, forecast: forecastPoints(fc),
      });
    }
    if (ref.kind === 'host') this._hostExtra(e); else this._agentExtra(e);
    this._anomalies(anomalies);
    this._forecasts(this.fleet.forecastsFor(ref));
  }

  _hostExtra(host) {
    const m = host.metrics;
    // rates computed by the gateway from system_network_*_bytes_total, per interface, summed
    const kv = [['Load (1 min)', fmt(m.load1)], ['Network in', fmt(m.network_received_bytes_per_s, 'B/s')],
      ['Network out', fmt(m.network_sent_bytes_per_s, 'B/s')],
      ['Temperature', m.temperature_celsius === undefined ? '–' : `${fmt(m.temperature_celsius)} °C`],
      ['GPU', m.gpu_utilization_percent === undefined ? '–' : fmt(m.gpu_utilization_percent, '%')]];
    const agents = this.fleet.agentsOf(host.id);
    this.extra.replaceChildren(
      h('dl', { class: 'kv', style: 'margin-top:6px' }, ...kv.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('h3', {}, `Agents (${agents.length})`),
      agents.length ? h('div', { class: 'detail-sub' }, ...agents.map((a) => h('button', {
        type: 'button', class: 'ghost small', onclick: () => this.onSelect({ kind: 'agent', id: a.id }), 'aria-label': `Agent ${a.id}, ${HEALTH_LABEL[a.health]}`,
      }, h('span', { class: `hdot ${hclass(a.health)}`, style: 'display:inline-block;margin-right:5px' }), a.id))) : h('p', { class: 'empty' }, 'No agents report from this host.'));
  }

  _agentExtra(a) {
    const m = a.metrics;
    // counters as the gateway's rates; the running totals in the tooltip
    const total = (...ks) => `totals: ${ks.map((k) => `${k} ${fmt(m[k])}`).join(', ')}`;
    const kv = [['Tasks / s', fmt(m.tasks_per_s), total('tasks_total')],
      ['Errors / s', fmt(m.tasks_error_per_s), total('tasks_error_total')],
      ['Messages sent / received per s', `${fmt(m.messages_sent_per_s)} / ${fmt(m.messages_received_per_s)}`, total('messages_sent_total', 'messages_received_total')],
      ['Response p50 / p99', `${fmt(m.response_time_ms_p50)} / ${fmt(m.response_time_ms_p99)} ms`],
      ['Tokens in / out per s', `${fmt(m.tokens_input_per_s)} / ${fmt(m.tokens_output_per_s)}`, total('tokens_input_total', 'tokens_output_total')],
      ['LLM calls / s · cost / h', `${fmt(m.llm_calls_per_s)} · $${fmt(m.llm_cost_usd_per_s === undefined ? undefined : m.llm_cost_usd_per_s * 3600)}`, total('llm_calls_total', 'llm_cost_usd_total')]];
    this.extra.replaceChildren(h('dl', { class: 'kv', style: 'margin-top:6px' }, ...kv.flatMap(([k, v, t]) => [h('dt', {}, k), h('dd', { title: t }, v)])));
  }

  _anomalies(list) {
    if (!list.length) { this.anoms.replaceChildren(h('li', { class: 'empty' }, 'No anomalies reported for this item.')); return; }
    this.anoms.replaceChildren(...list.slice(0, 8).map((a) => h('li', { class: 'alert kind-anomaly' },
      h('div', { class: 'alert-top' }, h('span', { class: 'alert-title' }, a.metric || 'anomaly'), h('span', { class: 'alert-time' }, clock(a.tsMs))),
      h('div', { class: 'alert-msg' }, a.summary || `score ${fmt(a.score)}${a.value !== undefined ? ` · value ${fmt(a.value)}` : ''}${a.detector ? ` · ${a.detector}` : ''}`))));
  }

  _forecasts(list) {
    if (!list.length) { this.fcs.replaceChildren(h('li', { class: 'empty' }, 'No forecast available yet.')); return; }
    this.fcs.replaceChildren(...list.map((f) => {
      const pv = Array.isArray(f.predicted) ? f.predicted[f.predicted.length - 1] : f.predicted;
      const val = Array.isArray(pv) ? pv[1] : typeof pv === 'object' && pv ? pv.value : pv;
      return h('li', { class: `forecast-row${f.breachAtMs ? ' breach' : ''}` },
        h('span', {}, `${f.metric}${f.horizonHours ? ` · ${f.horizonHours} h` : ''}`),
        h('span', { class: 'num' }, f.breachAtMs ? `crosses ${fmt(f.threshold)} at ${clock(f.breachAtMs)}` : `→ ${fmt(val)}${f.threshold !== undefined ? ` (limit ${fmt(f.threshold)})` : ''}`));
    }));
  }

  /** Fetch history for the selected entity over the chosen range from /api/v1/query. */
  async loadHistory() {
    const ref = this.ref; const e = this.fleet.entity(ref); const range = this.rangeMs;
    if (!e || !range) return;
    const until = Date.now(); const since = until - range;
    await Promise.all(CHARTS[ref.kind].map(async (c) => {
      const q = queryParams(ref.kind, e, c.key, since, until);
      if (!q) return;
      try {
        const res = await this.api.get('/api/v1/query', q.params);
        const rows = Array.isArray(res) ? res : res?.points ?? res?.rows ?? res?.data ?? [];
        if (this.ref === ref && this.rangeMs === range) this.hist.set(c.key, foldQueryRows(rows, q.spec));
      } catch (err) {
        if (this.ref === ref) toast(`History for ${c.label}: ${err.message}`, 'error');
      }
    }));
    if (this.ref === ref) this.update();
  }
}

function forecastPoints(f) {
  if (!f || !Array.isArray(f.predicted)) return undefined;
  return f.predicted.map((p) => (Array.isArray(p) ? p : [p.ts_ms, p.value])).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
}
