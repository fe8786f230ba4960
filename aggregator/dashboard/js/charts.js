// Small canvas line charts for the detail panel (no chart library).

const FONT = '10px Inter, "Segoe UI", system-ui, sans-serif';

/** Format a number for a metric readout. */
export function fmt(v, unit = '') {
  if (v === undefined || v === null || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  let s;
  if (v === 0) s = '0';
  else if (a >= 1e9) s = `${(v / 1e9).toFixed(1)}G`;
  else if (a >= 1e6) s = `${(v / 1e6).toFixed(1)}M`;
  else if (a >= 1e4) s = `${(v / 1e3).toFixed(1)}k`;
  else if (a >= 100) s = v.toFixed(0);
  else if (a >= 1) s = v.toFixed(1);
  else s = v.toFixed(2);
  return unit ? `${s}${unit === '%' ? '%' : ` ${unit}`}` : s;
}

function fmtSpan(ms) {
  if (ms >= 3600e3) return `${(ms / 3600e3).toFixed(ms % 3600e3 ? 1 : 0)} h`;
  if (ms >= 60e3) return `${Math.round(ms / 60e3)} min`;
  return `${Math.max(1, Math.round(ms / 1e3))} s`;
}

/**
 * Draw a series ({t: [], v: []}) into a canvas sized by CSS.
 * opts: color, min, max, threshold, below (threshold is a floor), fromMs, toMs, forecast [[t, v]...].
 */
export function drawChart(canvas, series, opts = {}) {
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  const w = canvas.clientWidth || 300; const h = canvas.clientHeight || 56;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const t = series?.t || []; const v = series?.v || [];
  const color = opts.color || '#38bdf8';
  const padR = 4; const padT = 6; const padB = 12;
  const fcAll = (opts.forecast || []).filter(([ft]) => ft > (opts.toMs ?? 0));
  const ph = h - padT - padB;
  // with a forecast, the right 24 % of the plot shows [now, end of forecast] on its own time scale
  const fw = fcAll.length > 1 ? Math.round((w - 30 - padR) * 0.24) : 0;

  const toMs = opts.toMs ?? (t.length ? t[t.length - 1] : Date.now());
  let fromMs = opts.fromMs ?? (t.length ? t[0] : toMs - 60e3);
  // a range longer than the data (1 h asked, 5 min stored): the axis starts at the first point
  // instead of squeezing everything against the right edge; its label says the real span
  const firstIn = t.find((ts) => ts >= fromMs);
  if (opts.fromMs !== undefined && firstIn !== undefined && firstIn > fromMs) fromMs = firstIn;
  if (toMs - fromMs < 30e3) fromMs = toMs - 30e3;
  let lo = Infinity; let hi = -Infinity;
  for (let i = 0; i < t.length; i++) if (t[i] >= fromMs) { lo = Math.min(lo, v[i]); hi = Math.max(hi, v[i]); }
  for (const [, fv] of fcAll) { lo = Math.min(lo, fv); hi = Math.max(hi, fv); }
  if (opts.threshold !== undefined && Number.isFinite(opts.threshold) && hi > -Infinity && opts.threshold < hi * 1.6) { lo = Math.min(lo, opts.threshold); hi = Math.max(hi, opts.threshold); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (opts.min !== undefined) lo = Math.min(lo, opts.min);
  if (opts.max !== undefined && hi > opts.max * 0.5) hi = Math.max(hi, opts.max);
  if (hi - lo < 1e-9) { hi = lo + (Math.abs(lo) || 1) * 0.5; lo -= (Math.abs(lo) || 1) * 0.25; lo = Math.max(lo, opts.min ?? -Infinity); }
  lo = Math.min(lo, 0) === 0 && lo >= 0 && lo < (hi - lo) * 0.6 ? 0 : lo;
  g.font = FONT; // the y-axis labels decide the left margin, so "42.0k" is never clipped
  const padL = Math.ceil(Math.max(22, g.measureText(fmt(hi)).width, g.measureText(fmt(lo)).width) + 7);
  const pw = w - padL - padR - fw;
  const X = (ts) => padL + ((ts - fromMs) / Math.max(1, toMs - fromMs)) * pw;
  const Y = (val) => padT + ph - ((val - lo) / (hi - lo)) * ph;

  // frame and grid
  g.strokeStyle = 'rgba(148, 163, 184, 0.12)'; g.lineWidth = 1;
  g.beginPath();
  for (const fr of [0, 0.5, 1]) { const y = Math.round(padT + ph * fr) + 0.5; g.moveTo(padL, y); g.lineTo(w - padR, y); }
  if (fw) { const x = Math.round(padL + pw) + 0.5; g.moveTo(x, padT); g.lineTo(x, padT + ph); }
  g.stroke();
  g.fillStyle = 'rgba(148, 163, 184, 0.75)'; g.font = FONT; g.textAlign = 'right'; g.textBaseline = 'middle';
  g.fillText(fmt(hi), padL - 4, padT + 1); g.fillText(fmt(lo), padL - 4, padT + ph);
  g.textAlign = 'left'; g.textBaseline = 'alphabetic';
  g.fillText(`−${fmtSpan(toMs - fromMs)}`, padL, h - 1);
  g.textAlign = 'right'; g.fillText('now', padL + pw, h - 1);
  if (fw) { g.fillStyle = 'rgba(192, 132, 252, 0.85)'; g.fillText(`+${fmtSpan(fcAll[fcAll.length - 1][0] - toMs)}`, w - padR, h - 1); }

  if (opts.threshold !== undefined && Number.isFinite(opts.threshold) && opts.threshold >= lo && opts.threshold <= hi) {
    const y = Math.round(Y(opts.threshold)) + 0.5;
    g.strokeStyle = 'rgba(239, 68, 68, 0.7)'; g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(padL, y); g.lineTo(w - padR, y); g.stroke(); g.setLineDash([]);
  }

  const pts = [];
  for (let i = 0; i < t.length; i++) if (t[i] >= fromMs && t[i] <= toMs) pts.push([X(t[i]), Y(v[i])]);
  if (pts.length) {
    const grad = g.createLinearGradient(0, padT, 0, padT + ph);
    grad.addColorStop(0, hexA(color, 0.32)); grad.addColorStop(1, hexA(color, 0));
    g.beginPath(); g.moveTo(pts[0][0], padT + ph);
    for (const [x, y] of pts) g.lineTo(x, y);
    g.lineTo(pts[pts.length - 1][0], padT + ph); g.closePath(); g.fillStyle = grad; g.fill();
    g.beginPath(); pts.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
    g.strokeStyle = color; g.lineWidth = 1.6; g.lineJoin = 'round'; g.stroke();
    const [lx, ly] = pts[pts.length - 1];
    g.beginPath(); g.arc(lx, ly, 2.6, 0, Math.PI * 2); g.fillStyle = color; g.fill();
  } else {
    g.fillStyle = 'rgba(148, 163, 184, 0.5)'; g.textAlign = 'center'; g.textBaseline = 'middle';
    g.fillText('waiting for data…', padL + pw / 2, padT + ph / 2);
  }
  if (fw) {
    const end = fcAll[fcAll.length - 1][0];
    const FX = (ts) => padL + pw + ((ts - toMs) / Math.max(1, end - toMs)) * fw;
    g.strokeStyle = hexA('#c084fc', 0.95); g.lineWidth = 1.4; g.setLineDash([3, 3]); g.beginPath();
    if (pts.length) g.moveTo(pts[pts.length - 1][0], pts[pts.length - 1][1]); else g.moveTo(FX(fcAll[0][0]), Y(fcAll[0][1]));
    for (const [ft, fv] of fcAll) g.lineTo(FX(ft), Y(fv));
    g.stroke(); g.setLineDash([]);
  }
  canvas.dataset.points = String(pts.length);
  canvas.dataset.padLeft = String(padL); canvas.dataset.fromMs = String(fromMs);
}

function hexA(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}
