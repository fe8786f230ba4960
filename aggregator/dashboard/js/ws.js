// WebSocket client: first-frame auth, subscribe, heartbeat, reconnect with backoff.

export const TOPICS = ['system_health', 'agent_metrics', 'alerts', 'anomalies', 'forecasts'];

export class LiveSocket {
  /** url: ws(s)://…/ws; handlers: onMessage(msg), onState(state, detail), onAuthFailed(). */
  constructor(url, token, { onMessage, onState, onAuthFailed } = {}) {
    this.url = url; this.token = token;
    this.onMessage = onMessage || (() => {}); this.onState = onState || (() => {});
    this.onAuthFailed = onAuthFailed || (() => {});
    this.ws = null; this.retry = 0; this.closed = true; this.messages = 0; this.bytes = 0; this.lastMessageMs = 0; this.maxCostMs = 0;
  }

  start() {
    if (!this.closed) return;
    this.closed = false;
    this._open();
  }

  stop() {
    this.closed = true;
    clearTimeout(this._timer); clearInterval(this._ping);
    if (this.ws) { try { this.ws.close(1000); } catch { /* already closed */ } }
    this.ws = null;
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(obj)); return true; }
    return false;
  }

  _open() {
    this.onState('connecting');
    let ws;
    try { ws = new WebSocket(this.url); } catch (e) { this._schedule(); return; }
    this.ws = ws;
    ws.onopen = () => { ws.send(JSON.stringify({ op: 'auth', token: this.token })); };
    ws.onmessage = (ev) => {
      const began = performance.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.messages += 1; this.lastMessageMs = Date.now();
      this.bytes += ev.data.length; // characters received (ASCII JSON: bytes)
      if (msg.type === 'hello') {
        this.retry = 0;
        this.onState('live');
        // delta: changed hosts/agents come as their changed fields only (data.js merges them)
        this.send({ op: 'subscribe', topics: TOPICS, history: true, delta: true });
        clearInterval(this._ping);
        this._ping = setInterval(() => this.send({ op: 'ping' }), 20000);
      }
      this.onMessage(msg);
      // main-thread cost of the heaviest message since the last reset (the fleet benchmark's)
      this.maxCostMs = Math.max(this.maxCostMs, performance.now() - began);
    };
    ws.onclose = (ev) => {
      clearInterval(this._ping);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (ev.code === 4401) { this.closed = true; this.onState('down', 'not authenticated'); this.onAuthFailed(); return; }
      this._schedule(ev.code === 4408 ? 'too slow' : ev.reason || `closed (${ev.code})`);
    };
    ws.onerror = () => { /* onclose follows and schedules the retry */ };
  }

  _schedule(reason) {
    if (this.closed) return;
    const delay = Math.min(15000, 1000 * 2 ** this.retry) * (0.75 + Math.random() * 0.5);
    this.retry = Math.min(this.retry + 1, 5);
    this.onState('down', `${reason || 'disconnected'} · retrying in ${Math.round(delay / 1000)} s`);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }
}
