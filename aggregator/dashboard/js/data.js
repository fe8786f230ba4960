// The one place that knows the gateway's message shapes (docs/ws-protocol.md).
// Everything else reads the normalized Fleet model built here.

export const HEALTH = ['ok', 'warning', 'critical', 'stale', 'unknown'];
const HEALTH_RANK = { ok: 0, unknown: 1, stale: 2, warning: 3, critical: 4 };

export const DEFAULT_THRESHOLDS = {
  cpu_usage: 80, memory_usage: 85, disk_usage: 90, agent_response_time: 5000, agent_success_rate: 85,
};

/** Chart definitions per entity kind: metric key, label, unit, threshold key. */
export const CHARTS = {
  host: [
    { key: 'cpu_usage_percent', label: 'CPU', unit: '%', max: 100, threshold: 'cpu_usage' },
    { key: 'memory_usage_percent', label: 'Memory', unit: '%', max: 100, threshold: 'memory_usage' },
    { key: 'disk_usage_percent', label: 'Disk', unit: '%', max: 100, threshold: 'disk_usage' },
  ],
  agent: [
    { key: 'cpu_usage_percent', label: 'CPU', unit: '%', max: 100 },
    { key: 'memory_usage_percent', label: 'Memory', unit: '%', max: 100 },
    { key: 'response_time_ms_p95', label: 'Response time p95', unit: 'ms', threshold: 'agent_response_time' },
    { key: 'success_rate_percent', label: 'Success rate', unit: '%', max: 100, min: 0, threshold: 'agent_success_rate', below: true },
    { key: 'tokens_per_s', label: 'Tokens', unit: '/s' },
    { key: 'task_queue_depth', label: 'Queue depth', unit: '' },
  ],
};

/** How to fetch a chart metric from /api/v1/query: stored name, fixed labels, fold, rate. */
export const QUERY_SPECS = {
  host: {
    cpu_usage_percent: { metric: 'system_cpu_usage_percent', fold: 'max' },
    memory_usage_percent: { metric: 'system_memory_usage_percent', fold: 'max' },
    disk_usage_percent: { metric: 'system_disk_usage_percent', fold: 'max' },
  },
  agent: {
    cpu_usage_percent: { metric: 'agent_cpu_usage_percent', fold: 'max' },
    memory_usage_percent: { metric: 'agent_memory_usage_percent', fold: 'max' },
    response_time_ms_p95: { metric: 'agent_response_time_ms', labels: { quantile: 'p95' }, fold: 'max' },
    success_rate_percent: { metric: 'agent_success_rate_percent', fold: 'min' },
    tokens_per_s: { metric: 'agent_tokens_total', fold: 'sum', agg: 'last', rate: true },
    task_queue_depth: { metric: 'agent_task_queue_depth', fold: 'sum' },
  },
};

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v, d = '') => (v === null || v === undefined ? d : String(v));

/** Worst of several health words. */
export function worstHealth(list) {
  let w = 'ok';
  for (const h of list) if ((HEALTH_RANK[h] ?? 1) > (HEALTH_RANK[w] ?? 0)) w = h;
  return w;
}

function normHealth(h) { return HEALTH.includes(h) ? h : 'unknown'; }

function normHost(r) {
  return {
    kind: 'host', id: str(r.node), node: str(r.node), health: normHealth(r.health),
    lastSeenMs: num(r.last_seen_ms) ?? num(r.ts_ms) ?? 0, tsMs: num(r.ts_ms) ?? num(r.last_seen_ms) ?? 0,
    metrics: r.metrics && typeof r.metrics === 'object' ? r.metrics : {},
    agentIds: Array.isArray(r.agents) ? r.agents.map(String) : [],
    reasons: Array.isArray(r.reasons) ? r.reasons.map(String) : [],
  };
}

function normAgent(r) {
  return {
    kind: 'agent', id: str(r.agent_id), node: str(r.node), department: str(r.department, 'unassigned'),
    health: normHealth(r.health),
    lastSeenMs: num(r.last_seen_ms) ?? num(r.ts_ms) ?? 0, tsMs: num(r.ts_ms) ?? num(r.last_seen_ms) ?? 0,
    metrics: r.metrics && typeof r.metrics === 'object' ? r.metrics : {},
    reasons: Array.isArray(r.reasons) ? r.reasons.map(String) : [],
  };
}

function normLink(r) {
  const source = str(r.source ?? r.from);
  const t = r.target ?? r.to ?? null;
  return {
    key: `${source}>${t ?? ''}`, source, target: t === null ? null : String(t),
    rate: num(r.rate_per_s) ?? num(r.sent_per_s) ?? 0,
    sent: num(r.sent_per_s) ?? 0, received: num(r.received_per_s) ?? 0,
  };
}

function normAlert(r) {
  const e = r.entity || {};
  return {
    id: str(r.id), kind: str(r.kind, 'threshold'), severity: str(r.severity, 'medium'),
    state: str(r.state, 'firing'), acknowledged: Boolean(r.acknowledged || r.acked || r.state === 'acknowledged'),
    node: e.node ?? r.node ?? null, agentId: e.agent_id ?? r.agent_id ?? null,
    metric: str(r.metric), value: num(r.value), threshold: num(r.threshold),
    sinceMs: num(r.since_ms) ?? num(r.ts_ms) ?? 0, summary: str(r.summary ?? r.message),
  };
}

function normAnomaly(r) {
  return {
    id: str(r.id), node: r.node ?? null, agentId: r.agent_id ?? null, metric: str(r.metric),
    score: num(r.score) ?? 0, value: num(r.value), tsMs: num(r.ts_ms) ?? 0,
    endMs: num(r.end_ms) ?? num(r.ts_ms) ?? 0, // a bucketed score's bucket end
    detector: str(r.detector ?? r.model), summary: str(r.summary ?? r.message), state: str(r.state),
  };
}

function normForecast(r) {
  return {
    id: str(r.id), node: r.node ?? null, agentId: r.agent_id ?? null, metric: str(r.metric),
    horizonHours: num(r.horizon_hours), predicted: r.predicted, threshold: num(r.threshold),
    breachAtMs: num(r.breach_at_ms) ?? null, tsMs: num(r.ts_ms) ?? 0, model: str(r.model ?? r.forecaster),
  };
}

/**
 * A chart series: parallel arrays of ts_ms and values, capped at about `cap` points (trimmed in
 * batches: trimming one point per push moved the whole array for each of ~10 000 series a tick).
 */
class Series {
  constructor(cap) { this.cap = cap; this.t = []; this.v = []; }
  push(t, v) {
    if (num(v) === undefined || !t) return;
    const n = this.t.length;
    if (n && t <= this.t[n - 1]) { if (t === this.t[n - 1]) this.v[n - 1] = v; return; }
    this.t.push(t); this.v.push(v);
    if (this.t.length > this.cap + Math.max(8, this.cap >> 3)) { const d = this.t.length - this.cap; this.t.splice(0, d); this.v.splice(0, d); }
  }
  replace(points) { this.t = []; this.v = []; for (const [t, v] of points) this.push(t, v); }
}

/**
 * The normalized, live fleet. Emits 'structure' (hosts/agents/departments set changed),
 * 'values' (metrics/health/links changed), 'alerts', 'anomalies', 'forecasts', 'hello'.
 */
export class Fleet extends EventTarget {
  constructor() {
    super();
    this.hosts = new Map(); this.agents = new Map(); this.departments = new Map();
    this.links = new Map(); this.alerts = new Map(); this.anomalies = new Map(); this.forecasts = new Map();
    this.history = new Map();
    this.thresholds = { ...DEFAULT_THRESHOLDS };
    this.summary = null; this.tsMs = 0; this.maxPoints = 1000; this.session = null;
    this.positions = {};
    this.raw = { host: new Map(), agent: new Map() }; // last full objects, for delta updates
  }

  /**
   * Full host/agent objects from a topic's items: a snapshot's or plain update's as they are, a
   * delta update's (`data.delta`) merged into the last full object (gateway delta.py: numbers at
   * display precision, `last_seen`/`last_seen_ms` left out when they follow `ts_ms`).
   */
  _full(kind, list, snap, delta) {
    const raw = this.raw[kind]; const key = kind === 'host' ? 'node' : 'agent_id';
    if (snap) raw.clear();
    return (list || []).map((r) => {
      const old = delta ? raw.get(r[key]) : undefined;
      let full = r;
      if (old) {
        const metrics = { ...old.metrics, ...(r.metrics || {}) };
        for (const k of r.metrics_removed || []) delete metrics[k];
        full = { ...old, ...r, metrics };
        delete full.metrics_removed;
        if (r.ts_ms !== undefined && r.last_seen_ms === undefined && 'last_seen_ms' in old) { // they follow ts_ms
          full.last_seen_ms = r.ts_ms; full.last_seen = new Date(r.ts_ms).toISOString();
        }
      }
      raw.set(r[key], full);
      return full;
    });
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  series(kind, id, key) {
    const k = `${kind}:${id}`;
    let m = this.history.get(k);
    if (!m) { m = new Map(); this.history.set(k, m); }
    let s = m.get(key);
    if (!s) { s = new Series(this.maxPoints); m.set(key, s); }
    return s;
  }

  /** Apply GET /api/v1/fleet. */
  applyFleet(j) {
    if (j.thresholds) this.thresholds = { ...DEFAULT_THRESHOLDS, ...j.thresholds };
    const pos = j.agent_positions ?? j.agentPositions;
    if (pos && typeof pos === 'object') this.positions = { ...this.positions, ...pos };
    this.tsMs = num(j.ts_ms) ?? this.tsMs;
    this._upsertHosts(j.hosts || [], true);
    this._upsertAgents(j.agents || [], true);
    this._setDepartments(j.departments || []);
    this._upsertLinks(j.links || [], true);
    this.summary = j.summary || null;
    this.emit('structure'); this.emit('values');
  }

  /** Apply one WebSocket frame (already parsed). Returns the topic or type handled. */
  applyMessage(msg) {
    if (!msg || typeof msg !== 'object') return null;
    if (msg.type === 'hello') {
      this.session = { user: str(msg.user), role: str(msg.role, 'viewer'), permissions: msg.permissions || [] };
      if (num(msg.max_history_points)) this.maxPoints = msg.max_history_points;
      this.emit('hello', this.session);
      return 'hello';
    }
    if (!msg.topic) return msg.type || null;
    const d = msg.data || {};
    const snap = msg.type === 'snapshot';
    this.tsMs = num(msg.ts_ms) ?? this.tsMs;
    switch (msg.topic) {
      case 'system_health': {
        const hosts = this._full('host', d.hosts, snap, d.delta);
        const changed = this._upsertHosts(hosts, snap);
        if (d.departments) this._setDepartments(d.departments);
        if (d.summary) this.summary = d.summary;
        if (snap && d.history) this._loadHistory('host', d.history);
        this._appendLive('host', hosts);
        if (changed) this.emit('structure'); // a snapshot of the same fleet rebuilds nothing
        this.emit('values', { topic: msg.topic });
        break;
      }
      case 'agent_metrics': {
        const agents = this._full('agent', d.agents, snap, d.delta);
        const changed = this._upsertAgents(agents, snap);
        this._upsertLinks(d.links || [], snap);
        if (snap && d.history) this._loadHistory('agent', d.history);
        this._appendLive('agent', agents);
        if (changed) this.emit('structure'); // a snapshot of the same fleet rebuilds nothing
        this.emit('values', { topic: msg.topic });
        break;
      }
      case 'alerts':
        if (snap) this.alerts.clear();
        for (const r of d.alerts || []) { const a = normAlert(r); this.alerts.set(a.id, a); }
        for (const id of d.resolved || []) this.alerts.delete(String(id));
        for (const a of [...this.alerts.values()]) if (a.state === 'resolved') this.alerts.delete(a.id);
        this.emit('alerts');
        break;
      case 'anomalies':
        if (snap) this.anomalies.clear();
        for (const r of d.anomalies || []) { const a = normAnomaly(r); this.anomalies.set(a.id, a); }
        this._trim(this.anomalies, 'tsMs');
        this.emit('anomalies');
        break;
      case 'forecasts':
        if (snap) this.forecasts.clear();
        for (const r of d.forecasts || []) { const f = normForecast(r); this.forecasts.set(f.id, f); }
        this.emit('forecasts');
        break;
      default:
        return null;
    }
    return msg.topic;
  }

  _trim(map, tsKey) {
    if (map.size <= this.maxPoints) return;
    const sorted = [...map.values()].sort((a, b) => b[tsKey] - a[tsKey]);
    for (const x of sorted.slice(this.maxPoints)) map.delete(x.id);
  }

  _upsertHosts(list, replaceAll) {
    let changed = false;
    const seen = new Set();
    for (const r of list) {
      const h = normHost(r);
      if (!h.id) continue;
      seen.add(h.id);
      const old = this.hosts.get(h.id);
      if (!old || old.agentIds.join() !== h.agentIds.join()) changed = true;
      this.hosts.set(h.id, h);
    }
    if (replaceAll) for (const id of [...this.hosts.keys()]) if (!seen.has(id)) { this.hosts.delete(id); changed = true; }
    return changed;
  }

  _upsertAgents(list, replaceAll) {
    let changed = false;
    const seen = new Set();
    for (const r of list) {
      const a = normAgent(r);
      if (!a.id) continue;
      seen.add(a.id);
      const old = this.agents.get(a.id);
      if (!old || old.node !== a.node || old.department !== a.department) changed = true;
      this.agents.set(a.id, a);
    }
    if (replaceAll) for (const id of [...this.agents.keys()]) if (!seen.has(id)) { this.agents.delete(id); changed = true; }
    if (changed) this._ensureHostsForAgents();
    return changed;
  }

  // An agent can report before its host's system metrics do: give it a placeholder host.
  _ensureHostsForAgents() {
    for (const a of this.agents.values()) {
      if (a.node && !this.hosts.has(a.node)) {
        this.hosts.set(a.node, normHost({ node: a.node, health: 'unknown', agents: [] }));
      }
    }
  }

  _setDepartments(list) {
    for (const r of list) {
      const name = str(r.name);
      if (name) this.departments.set(name, { name, agentIds: (r.agents || []).map(String), health: normHealth(r.health) });
    }
  }

  _upsertLinks(list, replaceAll) {
    if (replaceAll) this.links.clear();
    for (const r of list) { const l = normLink(r); if (l.source) this.links.set(l.key, l); }
  }

  _loadHistory(kind, hist) {
    for (const [id, metrics] of Object.entries(hist || {})) {
      for (const [key, pts] of Object.entries(metrics || {})) {
        if (Array.isArray(pts)) this.series(kind, id, key).replace(pts);
      }
    }
  }

  _appendLive(kind, list) {
    const keys = CHARTS[kind].map((c) => c.key);
    for (const r of list) {
      const id = kind === 'host' ? r.node : r.agent_id;
      const t = num(r.ts_ms) ?? num(r.last_seen_ms);
      if (!id || !t || !r.metrics) continue;
      for (const k of keys) if (k in r.metrics) this.series(kind, id, k).push(t, r.metrics[k]);
    }
  }

  /** The entity for a selection ref {kind, id}, or undefined. */
  entity(ref) { return ref ? (ref.kind === 'host' ? this.hosts.get(ref.id) : this.agents.get(ref.id)) : undefined; }

  /** Agents of a host, sorted by department then id. */
  agentsOf(node) {
    const out = [];
    for (const a of this.agents.values()) if (a.node === node) out.push(a);
    return out.sort((x, y) => x.department.localeCompare(y.department) || x.id.localeCompare(y.id, undefined, { numeric: true }));
  }

  /** Sorted department names present in the fleet. */
  departmentNames() {
    const s = new Set(this.departments.keys());
    for (const a of this.agents.values()) s.add(a.department);
    return [...s].sort();
  }

  /** Anomalies about an entity, newest first (agent anomalies also match their host). */
  anomaliesFor(ref) {
    const out = [];
    for (const a of this.anomalies.values()) {
      if (ref.kind === 'agent' ? a.agentId === ref.id : (a.node === ref.id && !a.agentId)) out.push(a);
    }
    return out.sort((a, b) => b.tsMs - a.tsMs);
  }

  forecastsFor(ref) {
    const out = [];
    for (const f of this.forecasts.values()) {
      if (ref.kind === 'agent' ? f.agentId === ref.id : (f.node === ref.id && !f.agentId)) out.push(f);
    }
    return out;
  }

  alertsFor(ref) {
    return [...this.alerts.values()].filter((a) => (ref.kind === 'agent' ? a.agentId === ref.id : a.node === ref.id && !a.agentId));
  }

  /**
   * Ids of entities with a recent anomaly (score >= minScore, ended within windowMs), with max
   * score. A score of a 5-minute bucket is stamped at the bucket's start and arrives after its
   * end: recency counts from the end, or a 10-minute bucket's anomaly would never show.
   */
  anomalousSet(nowMs, windowMs = 10 * 60 * 1000, minScore = 0.5) {
    const out = new Map();
    for (const a of this.anomalies.values()) {
      if (a.state === 'resolved' || a.score < minScore) continue;
      if (a.endMs && nowMs - a.endMs > windowMs) continue;
      const key = a.agentId ? `agent:${a.agentId}` : `host:${a.node}`;
      out.set(key, Math.max(out.get(key) || 0, a.score));
    }
    return out;
  }

  /**
   * Counts for the summary bar and the fleet-health card. One source of truth: the gateway's
   * `summary` (hosts and agents counted together per health word, and split per kind), the same
   * object `GET /api/v1/fleet` returns. Only before the first summary are they counted here.
   */
  counts() {
    const s = this.summary;
    const zero = () => ({ ok: 0, warning: 0, critical: 0, stale: 0, unknown: 0 });
    let c;
    if (s && s.host_health && s.agent_health) {
      c = { hosts: s.hosts, agents: s.agents, hostHealth: { ...zero(), ...s.host_health }, agentHealth: { ...zero(), ...s.agent_health } };
    } else {
      c = { hosts: this.hosts.size, agents: this.agents.size, hostHealth: zero(), agentHealth: zero() };
      for (const h of this.hosts.values()) c.hostHealth[h.health] += 1;
      for (const a of this.agents.values()) c.agentHealth[a.health] += 1;
    }
    for (const k of HEALTH) c[k] = c.hostHealth[k] + c.agentHealth[k];
    let msgRate = 0;
    for (const a of this.agents.values()) msgRate += num(a.metrics.messages_sent_per_s) || 0;
    c.msgRate = msgRate;
    return c;
  }
}

/**
 * Turn /api/v1/query rows for one chart metric into [[ts_ms, value], ...]:
 * fold series per timestamp (max/min/sum) and turn counters into rates when asked.
 */
export function foldQueryRows(rows, spec) {
  const byTs = new Map();
  for (const r of rows || []) {
    const t = num(r.ts_ms); const v = num(r.value);
    if (t === undefined || v === undefined) continue;
    const cur = byTs.get(t);
    if (cur === undefined) byTs.set(t, v);
    else if (spec.fold === 'max') byTs.set(t, Math.max(cur, v));
    else if (spec.fold === 'min') byTs.set(t, Math.min(cur, v));
    else byTs.set(t, cur + v);
  }
  let pts = [...byTs.entries()].sort((a, b) => a[0] - b[0]);
  if (spec.rate) {
    const out = [];
    for (let i = 1; i < pts.length; i++) {
      const dt = (pts[i][0] - pts[i - 1][0]) / 1000; const dv = pts[i][1] - pts[i - 1][1];
      if (dt > 0 && dv >= 0) out.push([pts[i][0], dv / dt]);
    }
    pts = out;
  }
  return pts;
}

/** Query-string parameters for a chart metric's history over [sinceMs, untilMs]. */
export function queryParams(kind, entity, key, sinceMs, untilMs, points = 240) {
  const spec = QUERY_SPECS[kind]?.[key];
  if (!spec) return null;
  const p = new URLSearchParams();
  p.set('metric', spec.metric);
  p.set('node', entity.node);
  p.set('since', new Date(sinceMs).toISOString());
  p.set('until', new Date(untilMs).toISOString());
  p.set('step', `${Math.max(1000, Math.round((untilMs - sinceMs) / points))}ms`);
  p.set('agg', spec.agg || (spec.fold === 'min' ? 'min' : spec.fold === 'sum' ? 'avg' : 'max'));
  const labels = { ...(spec.labels || {}) };
  if (kind === 'agent') labels.agent_id = entity.id;
  for (const [k, v] of Object.entries(labels)) p.append('label', `${k}=${v}`);
  return { params: p, spec };
}
