// Right panel, bottom: active alerts (the alerting engine's, by stored metric name) and recent anomalies.
import { h, ago, toast } from './dom.js';
import { fmt } from './charts.js';

const SEV_RANK = { critical: 0, high: 1, medium: 2, warning: 2, low: 3, info: 4 };

/** Write actions on alerts; the one place that knows their endpoints. */
export const ALERT_ACTIONS = {
  ack: (api, alert) => api.post(`/api/v1/alerts/${encodeURIComponent(alert.id)}/ack`, {}),
  silence: (api, alert, seconds = 3600) => api.post('/api/v1/silences', {
    matchers: { ...(alert.metric ? { metric: alert.metric } : {}), ...(alert.node ? { node: alert.node } : {}), ...(alert.agentId ? { agent_id: alert.agentId } : {}) },
    duration_s: seconds, comment: `silenced from dashboard: ${alert.id}`,
  }),
};

export class AlertsPanel {
  constructor(fleet, api, { onSelect }) {
    this.fleet = fleet; this.api = api; this.onSelect = onSelect;
    this.list = document.getElementById('alerts-list'); this.count = document.getElementById('alerts-count');
    this.filter = 'all'; this.canWrite = false;
    for (const b of document.querySelectorAll('.alert-filters button')) {
      b.addEventListener('click', () => {
        this.filter = b.dataset.filter;
        for (const o of document.querySelectorAll('.alert-filters button')) o.setAttribute('aria-pressed', String(o === b));
        this.render();
      });
    }
  }

  /** Show or hide write controls (acknowledge/silence) for the session's role. */
  setCanWrite(v) { this.canWrite = Boolean(v); this.render(); }

  items() {
    const now = this.fleet.tsMs || Date.now();
    const out = [];
    for (const a of this.fleet.alerts.values()) out.push({ ...a, kind: a.kind === 'anomaly' ? 'anomaly' : a.kind, alert: true });
    for (const a of this.fleet.anomalies.values()) {
      if (a.state === 'resolved' || now - a.tsMs > 30 * 60 * 1000) continue;
      out.push({ id: `anomaly:${a.id}`, kind: 'anomaly', severity: a.score >= 0.9 ? 'high' : 'medium', node: a.node, agentId: a.agentId,
        metric: a.metric, value: a.value, sinceMs: a.tsMs, summary: a.summary || `anomaly score ${fmt(a.score)}`, alert: false });
    }
    return out.sort((x, y) => (SEV_RANK[x.severity] ?? 5) - (SEV_RANK[y.severity] ?? 5) || y.sinceMs - x.sinceMs);
  }

  render() {
    const now = this.fleet.tsMs || Date.now();
    const all = this.items();
    this.count.textContent = String(all.length);
    this.count.classList.toggle('hot', all.some((a) => a.severity === 'high' || a.severity === 'critical'));
    const shown = all.filter((a) => this.filter === 'all' || (this.filter === 'anomaly' ? a.kind === 'anomaly' : a.kind !== 'anomaly')).slice(0, 200);
    if (!shown.length) {
      this.list.replaceChildren(h('li', { class: 'empty' }, all.length ? 'Nothing matches this filter.' : 'All clear: no alerts or anomalies.'));
      return;
    }
    const focused = document.activeElement?.closest?.('.alert')?.dataset.id;
    this.list.replaceChildren(...shown.map((a) => this._item(a, now)));
    if (focused) this.list.querySelector(`.alert[data-id="${CSS.escape(focused)}"] button`)?.focus();
  }

  _item(a, now) {
    const who = a.agentId ? `${a.agentId}` : a.node || 'fleet';
    const ref = a.agentId ? { kind: 'agent', id: a.agentId } : a.node ? { kind: 'host', id: a.node } : null;
    const msg = a.summary || (a.value !== undefined ? `${a.metric} ${fmt(a.value)}${a.threshold !== undefined ? ` (threshold ${fmt(a.threshold)})` : ''}` : a.metric);
    const actions = this.canWrite && a.alert ? h('div', { class: 'alert-actions' },
      h('button', { type: 'button', class: 'ghost small', 'data-action': 'ack', disabled: a.acknowledged, onclick: () => this._act('ack', a) }, a.acknowledged ? 'Acknowledged' : 'Acknowledge'),
      h('button', { type: 'button', class: 'ghost small', 'data-action': 'silence', onclick: () => this._act('silence', a) }, 'Silence 1 h')) : null;
    return h('li', { class: `alert sev-${a.severity} kind-${a.kind}${a.acknowledged ? ' acked' : ''}`, dataset: { id: a.id } },
      h('div', { class: 'alert-top' },
        h('button', { type: 'button', class: 'alert-title', onclick: () => ref && this.onSelect(ref), 'aria-label': `Show ${who}: ${a.metric}` },
          `${who} · ${a.metric || a.kind}`),
        h('span', { class: 'alert-time', title: new Date(a.sinceMs || now).toISOString() }, ago(a.sinceMs, now))),
      h('div', { class: 'alert-msg' }, `${a.kind === 'anomaly' ? 'anomaly' : a.severity} · ${msg}`), actions);
  }

  async _act(action, alert) {
    try {
      await ALERT_ACTIONS[action](this.api, alert);
      toast(action === 'ack' ? `Acknowledged ${alert.id}` : `Silenced ${alert.metric || alert.id} for 1 h`);
      if (action === 'ack') { const a = this.fleet.alerts.get(alert.id); if (a) { a.acknowledged = true; this.render(); } }
    } catch (e) {
      toast(e.status === 404 ? 'The alert engine is not available on this gateway yet.' : `${action} failed: ${e.message}`, 'error');
    }
  }
}
