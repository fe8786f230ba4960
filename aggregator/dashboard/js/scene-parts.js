// Small three.js building blocks for the 3D view.
import * as THREE from 'three';

/** Standard material whose instance colour also glows a little (emissive = colour * k). */
export function glowMaterial(opts) {
  const m = new THREE.MeshStandardMaterial(opts);
  m.onBeforeCompile = (s) => {
    s.fragmentShader = s.fragmentShader.replace('#include <emissivemap_fragment>',
      '#include <emissivemap_fragment>\n#ifdef USE_COLOR\n totalEmissiveRadiance += vColor.rgb * 0.55;\n#endif');
  };
  return m;
}

/** A text sprite (host, group and agent names); long names are shortened (hover shows them). */
export function labelSprite(text, { color = 'rgba(226, 232, 240, 0.92)', plate = false } = {}) {
  const c = document.createElement('canvas'); c.width = 512; c.height = 96;
  const g = c.getContext('2d');
  g.font = '600 44px Inter, "Segoe UI", system-ui, sans-serif';
  const shown = text.length > 22 ? `${text.slice(0, 21)}…` : text;
  if (plate) { // a dark plate keeps agent names readable over spheres and arcs
    const w = Math.min(500, g.measureText(shown).width + 36);
    g.fillStyle = 'rgba(7, 11, 18, 0.72)'; g.beginPath(); g.roundRect(256 - w / 2, 14, w, 68, 18); g.fill();
  }
  g.fillStyle = color; g.textAlign = 'center'; g.textBaseline = 'middle';
  g.fillText(shown, 256, 48);
  const tex = new THREE.CanvasTexture(c); tex.colorSpace = THREE.SRGBColorSpace; tex.anisotropy = 4;
  const sp = new THREE.Sprite(new THREE.SpriteMaterial({ map: tex, transparent: true, depthWrite: false }));
  sp.scale.set(6.4, 1.2, 1);
  return sp;
}

/** Point at u in [0, 1] on the quadratic curve {a, m, b}. */
export function bez(cv, u) {
  const v = 1 - u; const a = cv.a; const m = cv.m; const b = cv.b;
  return [v * v * a.x + 2 * v * u * m.x + u * u * b.x, v * v * a.y + 2 * v * u * m.y + u * u * b.y, v * v * a.z + 2 * v * u * m.z + u * u * b.z];
}

/** The labels shown now, by key: created when asked for, disposed when no longer wanted. */
export class LabelPool {
  constructor(parent) { this.parent = parent; this.items = new Map(); }

  /** Show exactly `want` (key → {text, x, y, z, scale, color}). */
  show(want) {
    for (const [k, sp] of this.items) {
      if (want.has(k)) continue;
      this.parent.remove(sp); sp.material.map?.dispose(); sp.material.dispose(); this.items.delete(k);
    }
    for (const [k, o] of want) {
      let sp = this.items.get(k);
      if (!sp) {
        sp = labelSprite(o.text, { color: o.color, plate: k.startsWith('agent:') });
        sp.scale.multiplyScalar(o.scale ?? 1); sp.renderOrder = 5; sp.material.depthTest = !k.startsWith('agent:');
        this.parent.add(sp); this.items.set(k, sp);
      }
      sp.position.set(o.x, o.y, o.z);
    }
  }

  /** Keys shown with `prefix`, prefix removed. */
  shown(prefix) { return [...this.items.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)); }
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
