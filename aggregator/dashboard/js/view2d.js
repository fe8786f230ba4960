// 2D fallback (canvas, top-down) with the same interface as Scene3D: used without WebGL or on request.
import { computeLayout, departmentColors, labelled, linkEnds, loadOf, HEALTH_COLORS, PLATFORM, AGENT_R } from './layout.js';

const LABEL_H = 18; // px above a host card for its name

export class View2D {
  constructor(container, fleet, { onSelect, onHover } = {}) {
    this.container = container; this.fleet = fleet;
    this.onSelect = onSelect || (() => {}); this.onHover = onHover || (() => {});
    this.canvas = document.createElement('canvas');
    this.canvas.setAttribute('role', 'img'); this.canvas.setAttribute('aria-label', '2D map of hosts and agents');
    container.appendChild(this.canvas);
    this.g = this.canvas.getContext('2d');
    this.view = { x: 0, z: 0, s: 10 }; this.selected = null; this.layout = null; this.running = false;
    this._bind();
    this._ro = new ResizeObserver(() => this.resize()); this._ro.observe(container); this.resize();
  }

  _bind() {
    const c = this.canvas; let drag = null;
    c.addEventListener('pointerdown', (e) => { drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vz: this.view.z, moved: 0 }; c.setPointerCapture(e.pointerId); });
    c.addEventListener('pointermove', (e) => {
      if (drag) {
        drag.moved = Math.max(drag.moved, Math.hypot(e.clientX - drag.x, e.clientY - drag.y));
        if (drag.moved > 6) this._userMoved = true;
        this.view.x = drag.vx - (e.clientX - drag.x) / this.view.s; this.view.z = drag.vz - (e.clientY - drag.y) / this.view.s;
      } else this.onHover(this.pick(e.clientX, e.clientY), e.clientX, e.clientY);
    });
    c.addEventListener('pointerup', (e) => { if (drag && drag.moved < 6) this.onSelect(this.pick(e.clientX, e.clientY)); drag = null; });
    c.addEventListener('pointerleave', () => this.onHover(null));
    c.addEventListener('wheel', (e) => {
      e.preventDefault(); this._userMoved = true;
      const k = Math.exp(-e.deltaY * 0.0015); this.view.s = Math.min(80, Math.max(0.5, this.view.s * k));
    }, { passive: false });
  }

  resize() {
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    this.w = this.container.clientWidth || 1; this.h = this.container.clientHeight || 1;
    this.canvas.width = Math.round(this.w * dpr); this.canvas.height = Math.round(this.h * dpr);
    this.canvas.style.width = `${this.w}px`; this.canvas.style.height = `${this.h}px`; this.dpr = dpr;
  }

  rebuild() {
    this.layout = computeLayout(this.fleet, this.fleet.positions);
    this.deptColors = departmentColors(this.fleet.departmentNames());
    const n = this.layout.hosts.size;
    if (!this._userMoved && n !== this._fitHosts) { this.resetView(); this._fitHosts = n; }
  }

  refresh() { /* drawn every frame from the fleet */ }

  resetView() { this._userMoved = false; this._fit(); }

  /**
   * Frame every host card (and the label above it) inside the band the overlays leave free: the
   * legends and buttons at the top, the hint at the bottom, measured (they wrap and grow with the
   * departments), so no card is covered or cut off. Redone every frame until the user moves.
   */
  _fit() {
    const b = this.layout?.bounds || { minX: -6, maxX: 6, minZ: -6, maxZ: 6 };
    const r = this.canvas.getBoundingClientRect();
    let top = 10; let bottom = 10;
    for (const el of this.container.parentElement?.querySelectorAll('.stage-overlay') || []) {
      const o = el.getBoundingClientRect();
      if (!o.height || !o.width) continue;
      if (o.top - r.top < r.height / 2) top = Math.max(top, o.bottom - r.top + 8);
      else bottom = Math.max(bottom, r.bottom - o.top + 8);
    }
    top += LABEL_H;
    const availW = Math.max(40, this.w - 24); const availH = Math.max(40, this.h - top - bottom);
    this.view.s = Math.min(availW / (b.maxX - b.minX), availH / (b.maxZ - b.minZ));
    this.view.x = (b.minX + b.maxX) / 2;
    this.view.z = (b.minZ + b.maxZ) / 2 - ((top + this.h - bottom) / 2 - this.h / 2) / this.view.s;
  }

  /** Client rectangles of the host cards with their labels (tests check nothing covers them). */
  hostRects() {
    if (!this.layout) return [];
    const r = this.canvas.getBoundingClientRect(); const s = this.view.s;
    return [...this.layout.hosts].map(([id, p]) => {
      const [x, y] = this.toScreen(p.x - PLATFORM / 2, p.z - PLATFORM / 2);
      return { id, left: r.left + x, top: r.top + y - (s > 3 ? LABEL_H : 0), right: r.left + x + PLATFORM * s, bottom: r.top + y + PLATFORM * s };
    });
  }

  toScreen(x, z) { return [(x - this.view.x) * this.view.s + this.w / 2, (z - this.view.z) * this.view.s + this.h / 2]; }

  start() {
    if (this.running) return; this.running = true;
    const loop = (t) => { if (!this.running) return; this._raf = requestAnimationFrame(loop); if (!document.hidden) this.draw(t / 1000); };
    this._raf = requestAnimationFrame(loop);
  }

  stop() { this.running = false; cancelAnimationFrame(this._raf); }

  draw(time) {
    if (this.layout && !this._userMoved) this._fit();
    const g = this.g; const L = this.layout; const f = this.fleet; const s = this.view.s;
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.fillStyle = '#070b12'; g.fillRect(0, 0, this.w, this.h);
    if (!L) return;
    const anom = f.anomalousSet(f.tsMs || Date.now());
    g.font = `600 ${Math.max(10, Math.min(14, s * 0.9))}px Inter, system-ui, sans-serif`; g.textAlign = 'center';
    for (const [id, p] of L.hosts) {
      const hst = f.hosts.get(id); const col = HEALTH_COLORS[hst?.health] || HEALTH_COLORS.unknown;
      const [x, y] = this.toScreen(p.x - PLATFORM / 2, p.z - PLATFORM / 2);
      g.fillStyle = '#111a29'; g.strokeStyle = col; g.lineWidth = 1.5;
      roundRect(g, x, y, PLATFORM * s, PLATFORM * s, Math.min(10, s)); g.fill(); g.stroke();
      if (anom.has(`host:${id}`)) { g.strokeStyle = '#e879f9'; g.lineWidth = 3; roundRect(g, x - 4, y - 4, PLATFORM * s + 8, PLATFORM * s + 8, Math.min(12, s)); g.stroke(); }
      if (s > 3) { // the name sits above its card, clear of the border
        g.fillStyle = '#cbd5e1'; g.textBaseline = 'bottom'; g.fillText(id, x + PLATFORM * s / 2, y - 4); g.textBaseline = 'alphabetic';
      }
      const hub = L.hubs.get(id); const [hx, hy] = this.toScreen(hub.x, hub.z);
      g.fillStyle = '#1e3a5f'; g.beginPath(); g.arc(hx, hy, Math.max(2, 0.4 * s), 0, Math.PI * 2); g.fill();
    }
    if (L.groups.length > 1) { // group names above their blocks
      g.fillStyle = '#93c5fd'; g.textAlign = 'left';
      for (const grp of L.groups.filter(labelled)) { const [gx, gy] = this.toScreen(grp.x - grp.w / 2 + 2.5, grp.z - 1.2); g.fillText(grp.name.toUpperCase(), gx, gy); }
      g.textAlign = 'center';
    }
    for (const pd of L.pads) {
      const [x, y] = this.toScreen(pd.x, pd.z);
      g.fillStyle = `${this.deptColors.get(pd.department) || '#475569'}33`;
      g.beginPath(); g.arc(x, y, pd.r * s, 0, Math.PI * 2); g.fill();
    }
    g.lineWidth = 1;
    for (const link of f.links.values()) {
      const ends = linkEnds(L, f, link); if (!ends) continue;
      const [a, b] = ends; const [ax, ay] = this.toScreen(a.x, a.z); const [bx, by] = this.toScreen(b.x, b.z);
      const rate = Math.max(link.rate, link.received);
      g.strokeStyle = rate > 0 ? 'rgba(103, 232, 249, 0.45)' : 'rgba(103, 232, 249, 0.1)';
      // a gentle curve (control point off the perpendicular) so flows between the same rows separate
      const mx = (ax + bx) / 2 - (by - ay) * 0.18; const my = (ay + by) / 2 + (bx - ax) * 0.18;
      g.beginPath(); g.moveTo(ax, ay); g.quadraticCurveTo(mx, my, bx, by); g.stroke();
      if (rate > 0) {
        const u = (time * (0.25 + Math.min(1.2, rate * 0.3)) + ax * 0.01) % 1; const v = 1 - u;
        const px = v * v * ax + 2 * v * u * mx + u * u * bx; const py = v * v * ay + 2 * v * u * my + u * u * by;
        g.fillStyle = '#67e8f9'; g.beginPath(); g.arc(px, py, 2, 0, Math.PI * 2); g.fill();
      }
    }
    for (const [id, p] of L.agents) {
      const a = f.agents.get(id); const [x, y] = this.toScreen(p.x, p.z);
      const load = a ? loadOf(a) : 0;
      const r = Math.max(2.5, AGENT_R * s * (0.8 + 0.55 * load) * (1 + 0.07 * load * Math.sin(time * (1.2 + load * 5))));
      g.fillStyle = HEALTH_COLORS[a?.health] || HEALTH_COLORS.unknown;
      g.beginPath(); g.arc(x, y, r, 0, Math.PI * 2); g.fill();
      if (anom.has(`agent:${id}`)) { g.strokeStyle = '#e879f9'; g.lineWidth = 2; g.beginPath(); g.arc(x, y, r + 4 + 2 * Math.sin(time * 3), 0, Math.PI * 2); g.stroke(); }
    }
    const sp = this.selected && this._world(this.selected);
    if (sp) {
      const [x, y] = this.toScreen(sp.x, sp.z);
      g.strokeStyle = '#38bdf8'; g.lineWidth = 2.5;
      if (this.selected.kind === 'agent') { g.beginPath(); g.arc(x, y, AGENT_R * s + 6, 0, Math.PI * 2); g.stroke(); } else {
        const half = (PLATFORM / 2) * s + 7;
        roundRect(g, x - half, y - half, half * 2, half * 2, Math.min(14, s + 4)); g.stroke();
      }
    }
    this.frames = (this.frames || 0) + 1;
  }

  _world(ref) {
    if (!ref || !this.layout) return null;
    return ref.kind === 'agent' ? this.layout.agents.get(ref.id) : this.layout.hosts.get(ref.id);
  }

  pick(cx, cy) {
    if (!this.layout) return null;
    const r = this.canvas.getBoundingClientRect();
    const wx = (cx - r.left - this.w / 2) / this.view.s + this.view.x; const wz = (cy - r.top - this.h / 2) / this.view.s + this.view.z;
    let best = null; let bd = Infinity;
    for (const [id, p] of this.layout.agents) {
      const d = Math.hypot(p.x - wx, p.z - wz);
      if (d < bd && d < Math.max(AGENT_R * 1.6, 6 / this.view.s)) { bd = d; best = { kind: 'agent', id }; }
    }
    if (best) return best;
    for (const [id, p] of this.layout.hosts) if (Math.abs(p.x - wx) <= PLATFORM / 2 && Math.abs(p.z - wz) <= PLATFORM / 2) return { kind: 'host', id };
    return null;
  }

  select(ref) {
    this.selected = ref; const p = this._world(ref);
    if (p) { this._userMoved = true; this.view.x = p.x; this.view.z = p.z; this.view.s = Math.max(this.view.s, ref.kind === 'agent' ? 24 : 14); }
  }

  screenPos(ref) {
    const p = this._world(ref); if (!p) return null;
    const r = this.canvas.getBoundingClientRect(); const [x, y] = this.toScreen(p.x, p.z);
    return { x: r.left + x, y: r.top + y };
  }

  dispose() { this.stop(); this._ro.disconnect(); this.canvas.remove(); }
}

function roundRect(g, x, y, w, h, r) {
  g.beginPath(); g.moveTo(x + r, y); g.arcTo(x + w, y, x + w, y + h, r); g.arcTo(x + w, y + h, x, y + h, r);
  g.arcTo(x, y + h, x, y, r); g.arcTo(x, y, x + w, y, r); g.closePath();
}
