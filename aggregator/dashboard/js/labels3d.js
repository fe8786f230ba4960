// Which names the 3D map shows (level of detail for text): host groups always; hosts all up to
// HOST_LABELS_ALL, beyond that the ones nearest the camera's focus; agents when selected, hovered
// or anomalous (the highest scores first).
import { PLATFORM, SPACING, labelled } from './layout.js';
import { labelSprite } from './scene-parts.js';

const HOST_LABELS_ALL = 40;     // up to this many hosts every platform is labelled
const HOST_LABELS_NEAR = 16;    // beyond: this many nearest the focus (more when zoomed in)
const MAX_ANOMALY_LABELS = 8;   // anomalous agents labelled, highest score first

/** The labels shown now, by key: created when asked for, disposed when no longer wanted. */
export class LabelPool {
  constructor(parent, cheap = false) { this.parent = parent; this.cheap = cheap; this.items = new Map(); }

  /** Show exactly `want` (key → {text, x, y, z, scale, color}). */
  show(want) {
    for (const [k, sp] of this.items) {
      if (want.has(k)) continue;
      this.parent.remove(sp); sp.material.map?.dispose(); sp.material.dispose(); this.items.delete(k);
    }
    for (const [k, o] of want) {
      let sp = this.items.get(k);
      if (!sp) {
        sp = labelSprite(o.text, { color: o.color, plate: k.startsWith('agent:'), cheap: this.cheap });
        sp.scale.multiplyScalar(o.scale ?? 1); sp.renderOrder = 5; sp.material.depthTest = !k.startsWith('agent:');
        this.parent.add(sp); this.items.set(k, sp);
      }
      sp.position.set(o.x, o.y, o.z);
    }
  }

  /** Keys shown with `prefix`, prefix removed. */
  shown(prefix) { return [...this.items.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)); }
}

/** The 3D view's labels: group names (fixed) and the chosen host/agent names (re-chosen). */
export class SceneLabels {
  /** `cheap`: software GL (plainer texture filtering). */
  constructor(parent, layout, cheap = false) {
    this.pool = new LabelPool(parent, cheap); this.key = '';
    if (layout.groups.length > 1) {
      for (const g of layout.groups.filter(labelled)) {
        const sp = labelSprite(g.name, { color: 'rgba(148, 197, 255, 0.95)', cheap });
        sp.scale.multiplyScalar(Math.max(1.6, g.w / 14)); sp.position.set(g.x, 2.2, g.z - 1.2); parent.add(sp);
      }
    }
  }

  /** Re-choose at the next update (selection, anomalies or the fleet changed). */
  invalidate() { this.key = ''; }

  /**
   * Show the names that matter for `view` now. Called every frame: it returns at once unless the
   * labels were invalidated, the hovered agent changed or the camera moved noticeably.
   */
  update(view) {
    const L = view.layout; if (!L) return;
    const tgt = view.controls.target; const dist = view.camera.position.distanceTo(tgt);
    const hovered = view.hovered?.kind === 'agent' ? view.hovered.id : null;
    const at = this.at;
    if (this.key && at && hovered === at.hovered && Math.hypot(tgt.x - at.x, tgt.z - at.z) < SPACING / 4
      && Math.abs(dist - at.dist) < 0.1 * at.dist) return;
    this.at = { x: tgt.x, z: tgt.z, dist, hovered };
    const anomalous = (view.haloAgents || []).slice().sort((a, b) => b[1] - a[1]).slice(0, MAX_ANOMALY_LABELS).map(([i]) => view.agentIds[i]);
    const agents = [...new Set([view.selected?.kind === 'agent' ? view.selected.id : null,
      view.hovered?.kind === 'agent' ? view.hovered.id : null, ...anomalous].filter(Boolean))];
    let hosts = view.hostIds;
    if (hosts.length > HOST_LABELS_ALL) {
      const near = Math.max(HOST_LABELS_NEAR, Math.round(HOST_LABELS_NEAR * (SPACING * 5 / Math.max(dist, 1))));
      hosts = view.hostIds.map((id) => { const p = L.hosts.get(id); return [id, (p.x - tgt.x) ** 2 + (p.z - tgt.z) ** 2]; })
        .sort((a, b) => a[1] - b[1]).slice(0, Math.min(near, HOST_LABELS_ALL)).map(([id]) => id);
      if (view.selected?.kind === 'host' && !hosts.includes(view.selected.id)) hosts.push(view.selected.id);
    }
    const key = `${agents.join(',')}|${hosts.join(',')}`;
    if (key === this.key) return;
    this.key = key;
    const want = new Map();
    for (const id of hosts) { const p = L.hosts.get(id); if (p) want.set(`host:${id}`, { text: id, x: p.x, y: 0.9, z: p.z + PLATFORM / 2 + 1.0, scale: 1 }); }
    for (const id of agents) {
      const p = L.agents.get(id);
      if (p) want.set(`agent:${id}`, { text: id, x: p.x, y: p.y + 1.05, z: p.z, scale: 0.8, color: 'rgba(254, 240, 138, 0.98)' });
    }
    this.pool.show(want);
  }

  /** Agent ids labelled now. */
  agents() { return this.pool.shown('agent:'); }
}
