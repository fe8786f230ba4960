// Message flows in the 3D view: one arc per link (agent → peer agent, or agent → its host's hub)
// and packets moving along it. The arcs are built only when the set of drawn links changes (links
// added or removed, the focus moved far while level of detail culls, the selection changed); a
// value update only changes rates and, where they changed, colours. Nothing is allocated per frame.
import * as THREE from 'three';
import { linkEnds, SPACING } from './layout.js';
import { bezInto, FLOW } from './scene-parts.js';

const MAX_PACKETS = 4000;
const PACKET_D = 0.26;          // packet size (world units)
const ARC_SEGMENTS = 10;        // line segments per arc (software GL: ARC_SEGMENTS_CHEAP)
const ARC_SEGMENTS_CHEAP = 6;
const LINK_BUDGET = 600;        // arcs drawn at most: the ones nearest the camera's focus (LOD)

/** Brightness of an arc for its send rate (messages/s). */
const intensity = (rate) => (rate > 0 ? Math.min(1, 0.25 + rate / 2) : 0.08);

/** The flows of one layout, added to `parent`; `software`: fewer segments per arc. */
export class Flows {
  constructor(parent, camera, software) {
    this.arc = software ? ARC_SEGMENTS_CHEAP : ARC_SEGMENTS;
    this.geom = new THREE.BufferGeometry();
    this.lines = new THREE.LineSegments(this.geom, new THREE.LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.55, blending: THREE.AdditiveBlending, depthWrite: false }));
    this.lines.frustumCulled = false; parent.add(this.lines);
    // packets: points (one vertex each; software GL pays per instance), PACKET_D world units wide
    this.packetPos = new THREE.BufferAttribute(new Float32Array(MAX_PACKETS * 3), 3).setUsage(THREE.DynamicDrawUsage);
    const pg = new THREE.BufferGeometry(); pg.setAttribute('position', this.packetPos); pg.setDrawRange(0, 0);
    this.packets = new THREE.Points(pg, new THREE.PointsMaterial({ color: FLOW, size: PACKET_D / Math.tan(THREE.MathUtils.degToRad(camera.fov / 2)),
      transparent: true, opacity: 0.95, blending: THREE.AdditiveBlending, depthWrite: false }));
    this.packets.frustumCulled = false; parent.add(this.packets);
    this.curves = []; this.keys = new Set(); this.culled = 0; this.at = new THREE.Vector3(); this.sel = null;
    this.builds = 0; this._p = [0, 0, 0];
  }

  /**
   * Bring the arcs up to date with `fleet.links` for a focus `target` and the selected agent's id
   * (its flows are always drawn). Returns true when the geometry was rebuilt.
   */
  sync(fleet, layout, target, selectedAgent) {
    if (!this.stale(target) && this.sel === selectedAgent && this._sameLinks(fleet)) { this._updateRates(fleet); return false; }
    this._build(fleet, layout, target, selectedAgent);
    return true;
  }

  /** Whether a rebuild is due because the focus moved away from where the arcs were chosen. */
  stale(target) { return this.culled > 0 && this.at.distanceTo(target) > SPACING; }

  _sameLinks(fleet) {
    if (fleet.links.size !== this.keys.size) return false;
    for (const k of fleet.links.keys()) if (!this.keys.has(k)) return false;
    return true;
  }

  _updateRates(fleet) {
    const col = this.geom.attributes.color?.array; let dirty = false;
    for (const cv of this.curves) {
      const link = fleet.links.get(cv.key); if (!link) continue;
      cv.rate = link.rate || 0; cv.received = link.received || 0;
      const inten = intensity(cv.rate);
      if (inten === cv.inten || !col) continue;
      cv.inten = inten; dirty = true;
      for (let k = cv.first, end = cv.first + this.arc * 6; k < end; k += 3) {
        col[k] = FLOW.r * inten; col[k + 1] = FLOW.g * inten; col[k + 2] = FLOW.b * inten;
      }
    }
    if (dirty) this.geom.attributes.color.needsUpdate = true;
  }

  _build(fleet, layout, target, sel) {
    this.builds += 1; this.keys = new Set(fleet.links.keys()); this.sel = sel; this.at.copy(target);
    let curves = [];
    for (const link of fleet.links.values()) {
      const ends = linkEnds(layout, fleet, link);
      if (!ends) continue;
      const [a, b] = ends;
      const d = Math.hypot(b.x - a.x, b.z - a.z);
      const m = { x: (a.x + b.x) / 2, y: Math.max(a.y, b.y) + 0.6 + d * 0.25, z: (a.z + b.z) / 2 };
      curves.push({ key: link.key, a, m, b, rate: link.rate || 0, received: link.received || 0, seed: curves.length * 0.618, src: link.source, dst: link.target, first: 0, inten: 0 });
    }
    // level of detail: a big fleet draws the flows nearest the focus (and the selected agent's);
    // software GL spends most of a frame on these blended lines and packets
    this.culled = Math.max(0, curves.length - LINK_BUDGET);
    if (this.culled) {
      const d2 = (c) => (c.src === sel || c.dst === sel ? -1 : (c.m.x - target.x) ** 2 + (c.m.z - target.z) ** 2);
      curves = curves.map((c) => [d2(c), c]).sort((x, y) => x[0] - y[0]).slice(0, LINK_BUDGET).map(([, c]) => c);
    }
    const arc = this.arc; const pos = new Float32Array(curves.length * arc * 6); const col = new Float32Array(pos.length);
    const p = this._p; let k = 0;
    for (const cv of curves) {
      cv.first = k; cv.inten = intensity(cv.rate);
      for (let s = 0; s < arc; s++) {
        for (let e = 0; e < 2; e++) {
          bezInto(cv, (s + e) / arc, p); pos[k] = p[0]; pos[k + 1] = p[1]; pos[k + 2] = p[2];
          col[k] = FLOW.r * cv.inten; col[k + 1] = FLOW.g * cv.inten; col[k + 2] = FLOW.b * cv.inten; k += 3;
        }
      }
    }
    this.curves = curves;
    this.geom.setAttribute('position', new THREE.BufferAttribute(pos, 3));
    this.geom.setAttribute('color', new THREE.BufferAttribute(col, 3));
    this.geom.computeBoundingSphere();
  }

  /** Move the packets for `time` (s): count and speed follow each link's message rate. */
  animate(time) {
    const p = this._p; let n = 0;
    for (const cv of this.curves) {
      const r = Math.max(cv.rate, cv.received);
      if (r <= 0) continue;
      const per = Math.min(4, 1 + Math.floor(r));
      const speed = 0.25 + Math.min(1.2, r * 0.3);
      for (let j = 0; j < per && n < MAX_PACKETS; j++) {
        let u = (time * speed + cv.seed + j / per) % 1;
        if (cv.rate <= 0) u = 1 - u; // only receiving: packets flow hub → agent
        bezInto(cv, u, p);
        this.packetPos.setXYZ(n++, p[0], p[1], p[2]);
      }
    }
    this.packets.geometry.setDrawRange(0, n); this.packetPos.needsUpdate = true;
  }
}
