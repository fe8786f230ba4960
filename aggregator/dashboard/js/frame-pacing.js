// Frame statistics and resolution level of detail for the 3D view (software GL is slow).

/** True when WebGL is rendered in software (SwiftShader, llvmpipe): then no MSAA, fewer pixels. */
export function softwareGL() {
  try {
    const gl = document.createElement('canvas').getContext('webgl');
    const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
    return Boolean(ext) && /swiftshader|llvmpipe|software/i.test(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL));
  } catch { return false; }
}

/** The last `n` frames' times and render costs (ms), for frame-time percentiles. */
export class FrameLog {
  constructor(n) { this.t = new Float64Array(n); this.c = new Float64Array(n); this.n = 0; }

  push(t, cost) { const i = this.n % this.t.length; this.t[i] = t; this.c[i] = cost; this.n += 1; }

  /** {frames, interval_p50, interval_p95, cost_p50, cost_p95} over frames after `since`. */
  stats(since = 0) {
    const k = Math.min(this.n, this.t.length); const rows = [];
    for (let j = this.n - k; j < this.n; j++) { const i = j % this.t.length; if (this.t[i] >= since) rows.push([this.t[i], this.c[i]]); }
    const q = (arr, p) => { const s = [...arr].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null; };
    const gaps = rows.slice(1).map((r, i) => r[0] - rows[i][0]); const costs = rows.map((r) => r[1]);
    return { frames: rows.length, interval_p50: q(gaps, 0.5), interval_p95: q(gaps, 0.95), cost_p50: q(costs, 0.5), cost_p95: q(costs, 0.95) };
  }
}

/**
 * Per frame: log it, and lower the renderer's pixel ratio (down to 0.5) while frames come slower
 * than ~15/s, raise it again above ~30/s; at most one change per 2 s.
 */
export class FramePacer {
  constructor(renderer, onResize) {
    this.renderer = renderer; this.onResize = onResize; this.log = new FrameLog(600);
    this.base = renderer.getPixelRatio(); this.ratio = this.base;
    this.interval = 40; this.last = undefined; this.changedAt = 0;
  }

  frame(now, cost) {
    this.log.push(now, cost);
    if (this.last !== undefined) this.interval = this.interval * 0.9 + (now - this.last) * 0.1;
    this.last = now;
    if (now - this.changedAt < 2000) return;
    let pr = this.ratio;
    if (this.interval > 66 && pr > 0.5) pr = Math.max(0.5, pr * 0.8);
    else if (this.interval < 33 && pr < this.base) pr = Math.min(this.base, pr * 1.25);
    if (pr !== this.ratio) { this.ratio = pr; this.renderer.setPixelRatio(pr); this.onResize(); this.changedAt = now; }
  }

  stats(since) { return this.log.stats(since); }
}
