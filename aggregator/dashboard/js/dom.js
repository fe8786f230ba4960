// Tiny DOM helpers shared by the panels.

/** Create an element: h('div', {class: 'x', onclick: fn, 'aria-label': '…'}, child, 'text'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Show a transient message at the bottom of the page. */
export function toast(msg, kind = 'info', ms = 4000) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h('div', { class: `toast ${kind}` }, msg);
  box.append(el);
  setTimeout(() => el.remove(), ms);
}

/** "12 s ago", "3 min ago", … */
export function ago(ms, now = Date.now()) {
  if (!ms) return 'never';
  const d = Math.max(0, now - ms) / 1000;
  if (d < 2) return 'just now';
  if (d < 60) return `${Math.round(d)} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${Math.round(d / 3600)} h ago`;
  return `${Math.round(d / 86400)} d ago`;
}

/** Local clock time HH:MM:SS of an epoch-ms timestamp. */
export function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : '–';
}

export const HEALTH_LABEL = { ok: 'healthy', warning: 'warning', critical: 'critical', stale: 'no recent data', unknown: 'unknown' };
/** CSS class for a health word (the CSS uses ok/warn/crit/stale). */
export function hclass(health) {
  return { ok: 'ok', warning: 'warn', critical: 'crit', stale: 'stale', unknown: 'stale' }[health] || 'stale';
}
