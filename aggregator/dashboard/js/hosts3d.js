// Hosts in the 3D view: platforms with coloured edges, department pads and message hubs, built
// once per layout; `setColors()` recolours only the hosts whose health or message rate changed.
import * as THREE from 'three';
import { departmentColors, PLATFORM } from './layout.js';
import { glowMaterial, litMaterial, shaded, FLOW, GLOW, HEALTH_3D as HEALTH } from './scene-parts.js';
import { MergedCopy } from './merged-copy.js';

const PLATFORM_COLOR = '#162032';
const HUB_COLOR = '#1e3a5f';
const PAD_OPACITY = 0.55;
const HUB_STEPS = 20;           // hub brightness levels (a change below one step is not redrawn)

/** Level of detail by count: `values[i]` for the first `limits[i]` not exceeded, else the last. */
function lod(n, limits, values) {
  const i = limits.findIndex((x) => n <= x);
  return values[i === -1 ? values.length - 1 : i];
}

/** The static host meshes of layout `L` for `hostIds`, added to `parent`. */
export class HostMeshes {
  constructor(parent, L, hostIds, departments, software) {
    const nH = Math.max(1, hostIds.length); const t = new THREE.Object3D();
    this.hostIds = hostIds; this.software = software;
    this.platforms = new THREE.InstancedMesh(shaded(new THREE.BoxGeometry(PLATFORM, 0.5, PLATFORM)),
      litMaterial({ color: 0xffffff, roughness: 0.8, metalness: 0.25 }, software), nH);
    this.platforms.count = hostIds.length;
    hostIds.forEach((id, i) => {
      const p = L.hosts.get(id); t.position.set(p.x, -0.05, p.z); t.updateMatrix();
      this.platforms.setMatrixAt(i, t.matrix);
    });
    parent.add(this.platforms);
    const edge = new THREE.EdgesGeometry(new THREE.BoxGeometry(PLATFORM, 0.5, PLATFORM));
    const ePos = edge.attributes.position.array; const nE = ePos.length / 3;
    const pos = new Float32Array(hostIds.length * nE * 3);
    hostIds.forEach((id, i) => {
      const p = L.hosts.get(id);
      for (let v = 0; v < nE; v++) {
        const k = (i * nE + v) * 3; pos[k] = ePos[v * 3] + p.x; pos[k + 1] = ePos[v * 3 + 1] - 0.05; pos[k + 2] = ePos[v * 3 + 2] + p.z;
      }
    });
    edge.dispose();
    const eg = new THREE.BufferGeometry();
    eg.setAttribute('position', new THREE.BufferAttribute(pos, 3)); eg.setAttribute('color', new THREE.BufferAttribute(new Float32Array(pos.length), 3));
    this.edges = new THREE.LineSegments(eg, new THREE.LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.9 }));
    this.edgeVerts = nE; parent.add(this.edges);

    // department pads (software GL: opaque, the platform's colour mixed in, instead of blended)
    const dcol = departmentColors(departments); this.deptColors = dcol;
    const disc = new THREE.CircleGeometry(1, lod(L.pads.length, [120], [28, 12])); disc.rotateX(-Math.PI / 2);
    this.pads = new THREE.InstancedMesh(shaded(disc),
      litMaterial({ color: 0xffffff, roughness: 0.9, transparent: !software, opacity: software ? 1 : PAD_OPACITY }, software), Math.max(1, L.pads.length));
    this.pads.count = L.pads.length;
    L.pads.forEach((pd, i) => {
      t.position.set(pd.x, 0.26, pd.z); t.scale.set(pd.r, 1, pd.r); t.updateMatrix(); this.pads.setMatrixAt(i, t.matrix);
      const pc = new THREE.Color(dcol.get(pd.department) || '#475569').multiplyScalar(0.45);
      this.pads.setColorAt(i, software ? new THREE.Color(PLATFORM_COLOR).lerp(pc, PAD_OPACITY) : pc);
    });
    parent.add(this.pads);

    // message hubs
    this.hubs = new THREE.InstancedMesh(shaded(new THREE.CylinderGeometry(0.28, 0.42, 1.6, 10), GLOW),
      glowMaterial({ color: 0x94a3b8, roughness: 0.4 }, software), nH);
    this.hubs.count = hostIds.length; t.scale.set(1, 1, 1);
    const hubColor = new THREE.Color(HUB_COLOR);
    hostIds.forEach((id, i) => {
      const p = L.hubs.get(id); t.position.set(p.x, 0.95, p.z); t.updateMatrix();
      this.hubs.setMatrixAt(i, t.matrix); this.hubs.setColorAt(i, hubColor);
    });
    parent.add(this.hubs);
    // software GL: the static instances drawn as one merged mesh each (the instanced ones stay for rays)
    this.merged = software ? new Map([this.platforms, this.pads, this.hubs].map((m) => [m, new MergedCopy(m)])) : new Map();
    for (const c of this.merged.values()) parent.add(c.mesh);
    this.health = new Array(hostIds.length).fill(''); this.hubLevel = new Int16Array(hostIds.length).fill(-1);
    this._c = new THREE.Color();
  }

  /** Colour platforms and edges by health, hubs by messages sent per second (`rates`: node → /s). */
  setColors(fleet, rates) {
    const col = this.edges.geometry.attributes.color.array; const c = this._c;
    let plat = false; let hub = false;
    this.hostIds.forEach((id, i) => {
      const health = fleet.hosts.get(id)?.health || 'unknown';
      if (health !== this.health[i]) {
        this.health[i] = health; plat = true;
        const hc = HEALTH[health] || HEALTH.unknown;
        this.platforms.setColorAt(i, c.set(PLATFORM_COLOR).lerp(hc, 0.07));
        for (let v = 0; v < this.edgeVerts; v++) { const k = (i * this.edgeVerts + v) * 3; col[k] = hc.r * 0.8; col[k + 1] = hc.g * 0.8; col[k + 2] = hc.b * 0.8; }
      }
      const level = Math.round(HUB_STEPS * Math.min(1, 0.15 + (rates.get(id) || 0) / 10));
      if (level !== this.hubLevel[i]) {
        this.hubLevel[i] = level; hub = true;
        this.hubs.setColorAt(i, c.set(HUB_COLOR).lerp(FLOW, level / HUB_STEPS));
      }
    });
    if (plat) {
      this.platforms.instanceColor.needsUpdate = true; this.edges.geometry.attributes.color.needsUpdate = true;
      this.merged.get(this.platforms)?.syncColors();
    }
    if (hub) { this.hubs.instanceColor.needsUpdate = true; this.merged.get(this.hubs)?.syncColors(); }
  }
}
