// The 3D fleet view: instanced platforms, agents, halos and animated message flows (three.js).
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { computeLayout, departmentColors, linkEnds, loadOf, HEALTH_COLORS, PLATFORM, AGENT_R, SPACING } from './layout.js';
import { bez, glowMaterial, litMaterial, shaded, GLOW, SKY, GROUND, HEMI_I, SUN_I, SUN_AT } from './scene-parts.js';
import { SceneLabels } from './labels3d.js';
import { AgentPoints } from './agent-points.js';
import { MergedCopy } from './merged-copy.js';
import { FramePacer, softwareGL } from './frame-pacing.js';

const MAX_PACKETS = 4000;
const PACKET_D = 0.26;          // packet size (world units)
const ARC_SEGMENTS = 10;         // line segments per flow arc (software GL: ARC_SEGMENTS_CHEAP)
const ARC_SEGMENTS_CHEAP = 6;
const LINK_BUDGET = 600;        // flows drawn at most: the ones nearest the camera's focus (LOD)
const HEALTH = Object.fromEntries(Object.entries(HEALTH_COLORS).map(([k, v]) => [k, new THREE.Color(v)]));
const HALO = new THREE.Color('#e879f9');
const FLOW = new THREE.Color('#67e8f9');
const SELECT = new THREE.Color('#38bdf8');

const PLATFORM_COLOR = '#162032';
const PAD_OPACITY = 0.55;

/** True when this browser can create a WebGL context. */
export function webglAvailable() {
  try {
    const c = document.createElement('canvas');
    return Boolean(c.getContext('webgl2') || c.getContext('webgl'));
  } catch { return false; }
}

/** Level of detail by count: `values[i]` for the first `limits[i]` not exceeded, else the last. */
function lod(n, limits, values) {
  const i = limits.findIndex((x) => n <= x);
  return values[i === -1 ? values.length - 1 : i];
}

export class Scene3D {
  /** Build the renderer inside `container`; callbacks: onSelect(ref|null), onHover(ref|null, x, y). */
  constructor(container, fleet, { onSelect, onHover } = {}) {
    this.container = container; this.fleet = fleet;
    this.onSelect = onSelect || (() => {}); this.onHover = onHover || (() => {});
    this.selected = null; this.layout = null; this.running = false;
    this.software = softwareGL(); // no MSAA there; the pacer also lowers the pixel ratio when slow
    this.renderer = new THREE.WebGLRenderer({ antialias: !this.software, powerPreference: 'high-performance' });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(0x070b12, 1);
    this.renderer.domElement.setAttribute('aria-label', '3D map of hosts and agents');
    this.renderer.domElement.setAttribute('role', 'img');
    container.appendChild(this.renderer.domElement);

    const scene = this.scene = new THREE.Scene();
    scene.fog = new THREE.Fog(0x070b12, 90, 420);
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.5, 2000);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true; this.controls.dampingFactor = 0.08;
    this.controls.maxPolarAngle = Math.PI * 0.47; this.controls.minDistance = 6; this.controls.maxDistance = 900;
    this.controls.screenSpacePanning = false;
    this.controls.addEventListener('start', () => { this._userMoved = true; });
    // keyboard: focus the map (Tab) and pan with the arrow keys
    this.renderer.domElement.tabIndex = 0;
    this.controls.listenToKeyEvents(this.renderer.domElement);

    scene.add(new THREE.HemisphereLight(SKY, GROUND, HEMI_I));
    const sun = new THREE.DirectionalLight(0xffffff, SUN_I); sun.position.copy(SUN_AT); scene.add(sun);
    this.grid = new THREE.GridHelper(400, this.software ? 40 : 100, 0x1a2638, 0x111a28);
    this.grid.position.y = -0.31; scene.add(this.grid);

    this.groups = new THREE.Group(); scene.add(this.groups);
    const ring = new THREE.RingGeometry(0.7, 0.86, 48);
    this.selMarker = new THREE.Mesh(ring, new THREE.MeshBasicMaterial({ color: SELECT, transparent: true, opacity: 0.95, side: THREE.DoubleSide, depthTest: false }));
    this.selMarker.visible = false; this.selMarker.renderOrder = 10; scene.add(this.selMarker);
    // hosts: a flat square frame just outside the platform (a 4-segment ring turned 45 degrees)
    const half = PLATFORM / 2 + 0.5;
    const frame = new THREE.RingGeometry(half * Math.SQRT2 - 0.45, half * Math.SQRT2, 4, 1, Math.PI / 4);
    frame.rotateX(-Math.PI / 2);
    this.hostMarker = new THREE.Mesh(frame, new THREE.MeshBasicMaterial({ color: SELECT, transparent: true, opacity: 0.9, side: THREE.DoubleSide }));
    this.hostMarker.visible = false; scene.add(this.hostMarker);

    this.raycaster = new THREE.Raycaster();
    this.pointer = new THREE.Vector2(); this._down = null; this._hoverPending = null;
    this.t0 = performance.now(); this._tmp = new THREE.Object3D(); this._m = new THREE.Matrix4();
    this.pacer = new FramePacer(this.renderer, () => this.resize()); this.hovered = null;
    this._bind();
    this.resize();
    this._ro = new ResizeObserver(() => this.resize()); this._ro.observe(container);
  }

  _bind() {
    const el = this.renderer.domElement;
    el.addEventListener('pointerdown', (e) => { this._down = { x: e.clientX, y: e.clientY }; });
    el.addEventListener('pointerup', (e) => {
      if (!this._down) return;
      const moved = Math.hypot(e.clientX - this._down.x, e.clientY - this._down.y);
      this._down = null;
      if (moved < 6) { const ref = this.pick(e.clientX, e.clientY); this.onSelect(ref); }
    });
    el.addEventListener('pointermove', (e) => { this._hoverPending = { x: e.clientX, y: e.clientY }; });
    el.addEventListener('pointerleave', () => { this._hoverPending = null; this.hovered = null; this.onHover(null); });
  }

  resize() {
    const w = this.container.clientWidth || 1; const h = this.container.clientHeight || 1;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h; this.camera.updateProjectionMatrix();
  }

  /** Rebuild meshes after hosts/agents/departments changed. */
  rebuild() {
    const f = this.fleet;
    for (const c of [...this.groups.children]) {
      this.groups.remove(c);
      c.traverse((o) => { o.geometry?.dispose(); if (o.material) { o.material.map?.dispose(); o.material.dispose(); } });
    }
    const L = this.layout = computeLayout(f, f.positions);
    this.hostIds = [...L.hosts.keys()]; this.agentIds = [...L.agents.keys()];
    this.hostIndex = new Map(this.hostIds.map((id, i) => [id, i]));
    this.agentIndex = new Map(this.agentIds.map((id, i) => [id, i]));
    const nH = Math.max(1, this.hostIds.length); const nA = Math.max(1, this.agentIds.length);
    const t = this._tmp;

    // host platforms + glowing edges
    this.platforms = new THREE.InstancedMesh(shaded(new THREE.BoxGeometry(PLATFORM, 0.5, PLATFORM)),
      litMaterial({ color: 0xffffff, roughness: 0.8, metalness: 0.25 }, this.software), nH);
    this.platforms.count = this.hostIds.length;
    this.hostIds.forEach((id, i) => {
      const p = L.hosts.get(id); t.position.set(p.x, -0.05, p.z); t.scale.set(1, 1, 1); t.updateMatrix();
      this.platforms.setMatrixAt(i, t.matrix);
    });
    this.groups.add(this.platforms);
    const edge = new THREE.EdgesGeometry(new THREE.BoxGeometry(PLATFORM, 0.5, PLATFORM));
    const ePos = edge.attributes.position.array; const nE = ePos.length / 3;
    const pos = new Float32Array(this.hostIds.length * nE * 3); const col = new Float32Array(pos.length);
    this.hostIds.forEach((id, i) => {
      const p = L.hosts.get(id);
      for (let v = 0; v < nE; v++) {
        pos[(i * nE + v) * 3] = ePos[v * 3] + p.x; pos[(i * nE + v) * 3 + 1] = ePos[v * 3 + 1] - 0.05; pos[(i * nE + v) * 3 + 2] = ePos[v * 3 + 2] + p.z;
      }
    });
    edge.dispose();
    const eg = new THREE.BufferGeometry();
    eg.setAttribute('position', new THREE.BufferAttribute(pos, 3)); eg.setAttribute('color', new THREE.BufferAttribute(col, 3));
    this.edges = new THREE.LineSegments(eg, new THREE.LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.9 }));
    this.edgeVerts = nE; this.groups.add(this.edges);

    // department pads
    const dcol = departmentColors(f.departmentNames()); this.deptColors = dcol;
    // (software GL: opaque, the platform's colour mixed in, instead of blended)
    const disc = new THREE.CircleGeometry(1, lod(L.pads.length, [120], [28, 12])); disc.rotateX(-Math.PI / 2);
    this.pads = new THREE.InstancedMesh(shaded(disc),
      litMaterial({ color: 0xffffff, roughness: 0.9, transparent: !this.software, opacity: this.software ? 1 : PAD_OPACITY }, this.software), Math.max(1, L.pads.length));
    this.pads.count = L.pads.length;
    L.pads.forEach((pd, i) => {
      t.position.set(pd.x, 0.26, pd.z); t.scale.set(pd.r, 1, pd.r); t.updateMatrix(); this.pads.setMatrixAt(i, t.matrix);
      const pc = new THREE.Color(dcol.get(pd.department) || '#475569').multiplyScalar(0.45);
      this.pads.setColorAt(i, this.software ? new THREE.Color(PLATFORM_COLOR).lerp(pc, PAD_OPACITY) : pc);
    });
    this.groups.add(this.pads);

    // message hubs
    this.hubs = new THREE.InstancedMesh(shaded(new THREE.CylinderGeometry(0.28, 0.42, 1.6, 10), GLOW),
      glowMaterial({ color: 0x94a3b8, roughness: 0.4 }, this.software), nH);
    this.hubs.count = this.hostIds.length;
    this.hostIds.forEach((id, i) => {
      const p = L.hubs.get(id); t.position.set(p.x, 0.95, p.z); t.scale.set(1, 1, 1); t.updateMatrix();
      this.hubs.setMatrixAt(i, t.matrix); this.hubs.setColorAt(i, new THREE.Color('#1e3a5f'));
    });
    this.groups.add(this.hubs);
    // software GL: the static instances drawn as one merged mesh each (the instanced ones stay for rays)
    this.merged = this.software ? [this.platforms, this.pads, this.hubs].map((m) => new MergedCopy(m)) : [];
    for (const c of this.merged) this.groups.add(c.mesh);

    // agents: drawn as sphere impostors (one point each); an unseen instanced mesh is what rays hit
    this.agentPoints = new AgentPoints(this.agentIds.length);
    for (let i = 0; i < this.agentIds.length; i++) this.agentPoints.setColor(i, HEALTH.unknown);
    this.groups.add(this.agentPoints.points);
    this.agentsMesh = new THREE.InstancedMesh(new THREE.IcosahedronGeometry(AGENT_R, 1), new THREE.MeshBasicMaterial(), nA);
    this.agentsMesh.count = this.agentIds.length; this.agentsMesh.visible = false; // rays ignore `visible`
    this.groups.add(this.agentsMesh);
    this.phase = Float32Array.from(this.agentIds, (_, i) => (i * 2.399) % (Math.PI * 2));

    // halos: agents (billboards) and hosts (flat rings)
    this.halos = new THREE.InstancedMesh(new THREE.RingGeometry(0.62, 0.9, 40),
      new THREE.MeshBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.9, blending: THREE.AdditiveBlending, depthWrite: false, side: THREE.DoubleSide }), nA);
    this.halos.count = 0; this.halos.frustumCulled = false; this.groups.add(this.halos);
    const hr = new THREE.RingGeometry(PLATFORM * 0.76, PLATFORM * 0.79, 96); hr.rotateX(-Math.PI / 2);
    this.hostHalos = new THREE.InstancedMesh(hr, new THREE.MeshBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.8, blending: THREE.AdditiveBlending, depthWrite: false, side: THREE.DoubleSide }), nH);
    this.hostHalos.count = 0; this.hostHalos.frustumCulled = false; this.groups.add(this.hostHalos);

    this.labels = new SceneLabels(this.groups, L, this.software); // names: groups, hosts (LOD), some agents

    // links (lines) and packets
    this.linkGeom = new THREE.BufferGeometry();
    this.linkLines = new THREE.LineSegments(this.linkGeom, new THREE.LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.55, blending: THREE.AdditiveBlending, depthWrite: false }));
    this.linkLines.frustumCulled = false; this.groups.add(this.linkLines);
    // packets: points (one vertex each; software GL pays per instance), PACKET_D world units wide
    this.packetPos = new THREE.BufferAttribute(new Float32Array(MAX_PACKETS * 3), 3).setUsage(THREE.DynamicDrawUsage);
    const pg = new THREE.BufferGeometry(); pg.setAttribute('position', this.packetPos); pg.setDrawRange(0, 0);
    this.packets = new THREE.Points(pg, new THREE.PointsMaterial({ color: FLOW, size: PACKET_D / Math.tan(THREE.MathUtils.degToRad(this.camera.fov / 2)),
      transparent: true, opacity: 0.95, blending: THREE.AdditiveBlending, depthWrite: false }));
    this.packets.frustumCulled = false; this.groups.add(this.packets);

    this.refresh();
    this._animate(0); // instance matrices in place before the first pick (raycast bounds)
    // frame the fleet until the user moves the camera (hosts may still be arriving)
    if (!this._userMoved && this.hostIds.length !== this._fitHosts) { this.resetView(); this._fitHosts = this.hostIds.length; }
    this._placeSelection();
  }

  /** Update colours, sizes, halos and flows from the current values. */
  refresh() {
    if (!this.layout) return;
    const f = this.fleet; const now = f.tsMs || Date.now();
    const c = new THREE.Color();
    this.agentState = this.agentIds.map((id, i) => {
      const a = f.agents.get(id);
      const base = a ? (HEALTH[a.health] || HEALTH.unknown) : HEALTH.unknown;
      this.agentPoints.setColor(i, base);
      const load = a ? loadOf(a) : 0;
      return { load, scale: 0.8 + 0.55 * load, speed: 1.2 + load * 5 };
    });

    const col = this.edges.geometry.attributes.color.array;
    const hostRate = new Map();
    for (const a of f.agents.values()) hostRate.set(a.node, (hostRate.get(a.node) || 0) + (a.metrics.messages_sent_per_s || 0));
    const plat = new THREE.Color(); const hub = new THREE.Color();
    this.hostIds.forEach((id, i) => {
      const h = f.hosts.get(id);
      c.copy(HEALTH[h?.health] || HEALTH.unknown);
      this.platforms.setColorAt(i, plat.set(PLATFORM_COLOR).lerp(c, 0.07));
      for (let v = 0; v < this.edgeVerts; v++) { const k = (i * this.edgeVerts + v) * 3; col[k] = c.r * 0.8; col[k + 1] = c.g * 0.8; col[k + 2] = c.b * 0.8; }
      this.hubs.setColorAt(i, hub.set('#1e3a5f').lerp(FLOW, Math.min(1, 0.15 + (hostRate.get(id) || 0) / 10)));
    });
    if (this.platforms.instanceColor) this.platforms.instanceColor.needsUpdate = true;
    if (this.hubs.instanceColor) this.hubs.instanceColor.needsUpdate = true;
    for (const m of this.merged) m.syncColors();
    this.edges.geometry.attributes.color.needsUpdate = true;

    // halos
    const anom = f.anomalousSet(now);
    this.haloAgents = []; this.haloHosts = [];
    for (const [key, score] of anom) {
      const [kind, id] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
      if (kind === 'agent' && this.agentIndex.has(id)) this.haloAgents.push([this.agentIndex.get(id), score]);
      if (kind === 'host' && this.hostIndex.has(id)) this.haloHosts.push([this.hostIndex.get(id), score]);
    }
    this.halos.count = this.haloAgents.length;
    this.haloAgents.forEach(([, s], j) => this.halos.setColorAt(j, c.copy(HALO).multiplyScalar(0.5 + 0.5 * s)));
    if (this.halos.instanceColor) this.halos.instanceColor.needsUpdate = true;
    this.hostHalos.count = this.haloHosts.length;
    const t = this._tmp;
    this.haloHosts.forEach(([i, s], j) => {
      const p = this.layout.hosts.get(this.hostIds[i]);
      t.position.set(p.x, 0.25, p.z); t.quaternion.identity(); t.scale.set(1, 1, 1); t.updateMatrix();
      this.hostHalos.setMatrixAt(j, t.matrix); this.hostHalos.setColorAt(j, c.copy(HALO).multiplyScalar(0.5 + 0.5 * s));
    });
    this.hostHalos.instanceMatrix.needsUpdate = true;
    if (this.hostHalos.instanceColor) this.hostHalos.instanceColor.needsUpdate = true;

    this._buildLinks();
    this.labels?.invalidate(); // anomalies may have changed: re-choose labels
  }

  /** Ids of the agents labelled in the scene now (for tests). */
  agentLabels() { return this.labels ? this.labels.agents() : []; }

  _buildLinks() {
    const f = this.fleet; const L = this.layout;
    this.curves = [];
    for (const link of f.links.values()) {
      const ends = linkEnds(L, f, link);
      if (!ends) continue;
      const [a, b] = ends;
      const d = Math.hypot(b.x - a.x, b.z - a.z);
      const mid = { x: (a.x + b.x) / 2, y: Math.max(a.y, b.y) + 0.6 + d * 0.25, z: (a.z + b.z) / 2 };
      this.curves.push({ a, m: mid, b, rate: link.rate || 0, received: link.received || 0, seed: this.curves.length * 0.618, src: link.source, dst: link.target });
    }
    // level of detail: a big fleet draws the flows nearest the focus (and the selected agent's);
    // software GL spends most of a frame on these blended lines and packets
    const tgt = this.controls.target; this._linksAt = tgt.clone(); this.linksCulled = 0;
    if (this.curves.length > LINK_BUDGET) {
      const sel = this.selected?.kind === 'agent' ? this.selected.id : null;
      const d2 = (c) => (c.src === sel || c.dst === sel ? -1 : (c.m.x - tgt.x) ** 2 + (c.m.z - tgt.z) ** 2);
      this.linksCulled = this.curves.length - LINK_BUDGET;
      this.curves = this.curves.map((c) => [d2(c), c]).sort((x, y) => x[0] - y[0]).slice(0, LINK_BUDGET).map(([, c]) => c);
    }
    const arc = this.software ? ARC_SEGMENTS_CHEAP : ARC_SEGMENTS;
    const segs = this.curves.length * arc;
    const pos = new Float32Array(segs * 6); const col = new Float32Array(segs * 6);
    let k = 0;
    for (const cv of this.curves) {
      const inten = cv.rate > 0 ? Math.min(1, 0.25 + cv.rate / 2) : 0.08;
      for (let s = 0; s < arc; s++) {
        for (const u of [s / arc, (s + 1) / arc]) {
          const p = bez(cv, u); pos[k] = p[0]; pos[k + 1] = p[1]; pos[k + 2] = p[2];
          col[k] = FLOW.r * inten; col[k + 1] = FLOW.g * inten; col[k + 2] = FLOW.b * inten; k += 3;
        }
      }
    }
    this.linkGeom.setAttribute('position', new THREE.BufferAttribute(pos, 3));
    this.linkGeom.setAttribute('color', new THREE.BufferAttribute(col, 3));
    this.linkGeom.computeBoundingSphere();
  }

  /** Agent `i` at `time` (s): [x, y, z, scale]; size for load, pulse speed for load, a slow bob. */
  _agentPose(i, time) {
    const p = this.layout.agents.get(this.agentIds[i]); const st = this.agentState[i];
    const s = st.scale * (1 + 0.07 * st.load * Math.sin(time * st.speed + this.phase[i]));
    return [p.x, p.y + 0.06 * Math.sin(time * 0.8 + this.phase[i]), p.z, s];
  }

  /** The pick mesh's instances where the agents are drawn now (before a raycast). */
  _placePickMesh() {
    const t = this._tmp;
    for (let i = 0; i < this.agentIds.length; i++) {
      const [x, y, z, s] = this._agentPose(i, this._time || 0);
      t.position.set(x, y, z); t.quaternion.identity(); t.scale.setScalar(s); t.updateMatrix();
      this.agentsMesh.setMatrixAt(i, t.matrix);
    }
    this.agentsMesh.instanceMatrix.needsUpdate = true;
    this.agentsMesh.computeBoundingSphere(); // cached bounds must follow, or rays miss them all
  }

  _animate(time) {
    const t = this._tmp; this._time = time;
    for (let i = 0; i < this.agentIds.length; i++) {
      const [x, y, z, s] = this._agentPose(i, time);
      this.agentPoints.place(i, x, y, z, 2 * AGENT_R * s);
    }
    this.camera.updateMatrixWorld();
    this.agentPoints.commit(this.camera, this.renderer.domElement.height);
    // agent halos face the camera and breathe
    this.haloAgents.forEach(([i, sc], j) => {
      const p = this.layout.agents.get(this.agentIds[i]);
      t.position.set(p.x, p.y, p.z); t.quaternion.copy(this.camera.quaternion);
      t.scale.setScalar(1.1 + 0.25 * (0.5 + 0.5 * Math.sin(time * 3 + i)) * sc); t.updateMatrix();
      this.halos.setMatrixAt(j, t.matrix);
    });
    this.halos.instanceMatrix.needsUpdate = true;
    // packets along curves: count and speed follow the message rate
    let n = 0;
    for (const cv of this.curves) {
      if (cv.rate <= 0 && cv.received <= 0) continue;
      const per = Math.min(this.curves.length > 600 ? 1 : 4, 1 + Math.floor(Math.max(cv.rate, cv.received)));
      const speed = 0.25 + Math.min(1.2, Math.max(cv.rate, cv.received) * 0.3);
      for (let j = 0; j < per && n < MAX_PACKETS; j++) {
        let u = (time * speed + cv.seed + j / per) % 1;
        if (cv.rate <= 0) u = 1 - u; // only receiving: packets flow hub → agent
        const p = bez(cv, u);
        this.packetPos.setXYZ(n++, p[0], p[1], p[2]);
      }
    }
    this.packets.geometry.setDrawRange(0, n); this.packetPos.needsUpdate = true;
    if (this.selMarker.visible) this.selMarker.quaternion.copy(this.camera.quaternion);
  }

  /** Start the render loop (capped at ~40 fps, paused while the tab is hidden). */
  start() {
    if (this.running) return;
    this.running = true;
    let last = 0; let gap = 24;
    const loop = (now) => {
      if (!this.running) return;
      this._raf = requestAnimationFrame(loop);
      if (document.hidden || now - last < gap) return;
      last = now;
      const began = performance.now();
      const time = (now - this.t0) / 1000;
      if (this._hoverPending) {
        const hp = this._hoverPending; this._hoverPending = null;
        this.hovered = this.pick(hp.x, hp.y); this.onHover(this.hovered, hp.x, hp.y);
      }
      this._stepTween(now);
      this.controls.update();
      if (this.layout) {
        if (this.linksCulled && this._linksAt.distanceTo(this.controls.target) > SPACING) this._buildLinks();
        this._animate(time); this.labels.update(this);
      }
      this.renderer.render(this.scene, this.camera);
      this.frames = (this.frames || 0) + 1;
      // slow (software) rendering: leave the main thread time for updates and input
      const cost = performance.now() - began;
      this.pacer.frame(now, cost);
      gap = Math.min(400, Math.max(24, gap * 0.8 + cost * 2 * 0.2));
    };
    this._raf = requestAnimationFrame(loop);
  }

  stop() { this.running = false; cancelAnimationFrame(this._raf); }

  /** Frame statistics since `since` (performance.now ms): intervals and render costs, p50/p95. */
  frameStats(since = 0) { return this.pacer.stats(since); }

  /** The host or agent under a client (CSS pixel) position, or null. */
  pick(cx, cy) {
    if (!this.layout) return null;
    const r = this.renderer.domElement.getBoundingClientRect();
    this.pointer.set(((cx - r.left) / r.width) * 2 - 1, -((cy - r.top) / r.height) * 2 + 1);
    this.raycaster.setFromCamera(this.pointer, this.camera);
    this._placePickMesh(); // the agents move (pulse, bob)
    const hits = this.raycaster.intersectObjects([this.agentsMesh, this.platforms, this.hubs], false);
    for (const h of hits) {
      if (h.object === this.agentsMesh && h.instanceId < this.agentIds.length) return { kind: 'agent', id: this.agentIds[h.instanceId] };
      if ((h.object === this.platforms || h.object === this.hubs) && h.instanceId < this.hostIds.length) return { kind: 'host', id: this.hostIds[h.instanceId] };
    }
    return null;
  }

  /** Highlight a selection (or clear with null) and glide the camera target to it. */
  select(ref, { focus = true } = {}) {
    this.selected = ref;
    this._placeSelection();
    if (this.linksCulled) this._buildLinks(); // the selected agent's flows are always drawn
    const p = this.worldPos(ref);
    if (p && focus) {
      this._userMoved = true;
      const d = this.camera.position.clone().sub(this.controls.target);
      const want = ref.kind === 'agent' ? 34 : 46;
      if (d.length() > want * 1.4) d.setLength(want);
      const target = new THREE.Vector3(p.x, 0, p.z);
      this._tween = { t0: performance.now(), dur: 650, fromT: this.controls.target.clone(), toT: target,
        fromP: this.camera.position.clone(), toP: target.clone().add(d) };
    }
  }

  _stepTween(now) {
    const tw = this._tween; if (!tw) return;
    const k = Math.min(1, (now - tw.t0) / tw.dur); const e = k < 0.5 ? 2 * k * k : 1 - (-2 * k + 2) ** 2 / 2;
    this.controls.target.lerpVectors(tw.fromT, tw.toT, e); this.camera.position.lerpVectors(tw.fromP, tw.toP, e);
    if (k >= 1) this._tween = null;
  }

  _placeSelection() {
    this.labels?.invalidate();
    const ref = this.selected; const p = this.worldPos(ref);
    this.selMarker.visible = Boolean(p) && ref.kind === 'agent';
    this.hostMarker.visible = Boolean(p) && ref.kind === 'host';
    if (!p) return;
    if (ref.kind === 'agent') this.selMarker.position.set(p.x, p.y, p.z);
    else this.hostMarker.position.set(p.x, 0.02, p.z);
  }

  /** World position of a host (platform centre) or agent. */
  worldPos(ref) {
    if (!ref || !this.layout) return null;
    if (ref.kind === 'agent') return this.layout.agents.get(ref.id) || null;
    const h = this.layout.hosts.get(ref.id);
    return h ? { x: h.x, y: 0.3, z: h.z } : null;
  }

  /** Client (CSS pixel) coordinates of a host or agent, or null (used by tests and tooltips). */
  screenPos(ref) {
    const p = this.worldPos(ref); if (!p) return null;
    const v = new THREE.Vector3(p.x, p.y, p.z).project(this.camera);
    const r = this.renderer.domElement.getBoundingClientRect();
    return { x: r.left + (v.x + 1) / 2 * r.width, y: r.top + (1 - v.y) / 2 * r.height };
  }

  /** Frame the whole fleet. */
  resetView() {
    this._tween = null; this._userMoved = false;
    const b = this.layout?.bounds || { minX: -6, maxX: 6, minZ: -6, maxZ: 6 };
    const cx = (b.minX + b.maxX) / 2; const cz = (b.minZ + b.maxZ) / 2;
    const dir = new THREE.Vector3(0, 0.7, 0.71).normalize();
    const corners = [];
    for (const x of [b.minX, b.maxX]) for (const z of [b.minZ, b.maxZ]) for (const y of [0, 1.5]) corners.push(new THREE.Vector3(x, y, z));
    // start from a bounding-sphere guess, then scale until every corner projects inside the frame
    let dist = Math.max(20, Math.hypot(b.maxX - b.minX, b.maxZ - b.minZ));
    this.controls.target.set(cx, 0, cz);
    for (let i = 0; i < 6; i++) {
      this.camera.position.copy(dir).multiplyScalar(dist).add(this.controls.target);
      this.camera.lookAt(this.controls.target); this.camera.updateMatrixWorld();
      let worst = 0;
      for (const c of corners) { const v = c.clone().project(this.camera); worst = Math.max(worst, Math.abs(v.x), Math.abs(v.y)); }
      dist *= Math.max(0.5, Math.min(2, worst / 0.9));
    }
    this.camera.position.copy(dir).multiplyScalar(dist).add(this.controls.target);
    this.camera.far = Math.max(2000, dist * 4); this.camera.updateProjectionMatrix();
    this.scene.fog.near = dist * 1.2; this.scene.fog.far = dist * 3.5;
  }

  dispose() {
    this.stop(); this._ro.disconnect(); this.controls.dispose(); this.renderer.dispose();
    this.renderer.domElement.remove();
  }
}
