// Token handling and the JSON API client (Authorization: Bearer).

const KEY = 'legion.token';

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Take `#token=` from the URL fragment (then scrub it from the address bar) or sessionStorage. */
export function readToken() {
  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  const t = frag.get('token');
  if (t) {
    sessionStorage.setItem(KEY, t);
    frag.delete('token');
    const rest = frag.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    return t;
  }
  return sessionStorage.getItem(KEY);
}

/**
 * The gateway's base URL: '' (same origin, the normal case) or, for a shell that serves these files
 * itself (Tauri), `#gateway=https://host:8765` / `?gateway=` (remembered for the tab).
 */
export function gatewayBase() {
  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  const q = new URLSearchParams(location.search);
  const g = frag.get('gateway') || q.get('gateway');
  if (g && /^https?:\/\/[^/]+$/.test(g.replace(/\/$/, ''))) sessionStorage.setItem('legion.gateway', g.replace(/\/$/, ''));
  return sessionStorage.getItem('legion.gateway') || '';
}

export function storeToken(t) { sessionStorage.setItem(KEY, t); }
export function clearToken() { sessionStorage.removeItem(KEY); }

/** Gateway API client bound to a token. */
export class Api {
  constructor(token, base = '') { this.token = token; this.base = base; }

  async request(method, path, { params, body } = {}) {
    const url = new URL(this.base + path, location.href);
    if (params) for (const [k, v] of params) url.searchParams.append(k, v);
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, `gateway unreachable (${e.message})`);
    }
    let data = null;
    const text = await res.text();
    if (text) { try { data = JSON.parse(text); } catch { data = { error: text.slice(0, 200) }; } }
    if (!res.ok) throw new ApiError(res.status, (data && data.error) || `${res.status} ${res.statusText}`);
    return data;
  }

  get(path, params) { return this.request('GET', path, { params: params ? [...params] : undefined }); }
  post(path, body) { return this.request('POST', path, { body: body ?? {} }); }
  del(path) { return this.request('DELETE', path); }

  /** WebSocket URL for the gateway (same origin, ws/wss by page scheme); auth goes in the first frame. */
  wsUrl() {
    const u = new URL(`${this.base}/ws`, location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }
}
