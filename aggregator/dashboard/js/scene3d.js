// The 3D fleet view: hosts (hosts3d.js), agents as sphere impostors, halos, names (labels3d.js)
// and animated message flows (flows3d.js), in three.js. `rebuild()` builds the meshes for the
// fleet's structure; `refresh()` (every update) changes only what changed: agent colours where the
// health changed, sizes, host colours, halos when the anomalies changed, flows in place.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { computeLayout, loadOf, AGENT_R, PLATFORM } from './layout.js';
import { HEALTH_3D as HEALTH, SKY, GROUND, HEMI_I, SUN_I, SUN_AT } from './scene-parts.js';
import { SceneLabels } from './labels3d.js';
import { AgentPoints } from './agent-points.js';
import { HostMeshes } from './hosts3d.js';
import { Flows } from './flows3d.js';
import { FramePacer, softwareGL } from './frame-pacing.js';

const HALO = new THREE.Color('#e879f9');
const SELECT = new THREE.Color('#38bdf8');

/** True when this browser can create a WebGL context. */
export function webglAvailable() {
  try {
    const c = document.createElement('canvas');
    return Boolean(c.getContext('webgl2') || c.getContext('webgl'));
  } catch { return false; }
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
    this.t0 = performance.now(); this._tmp = new THREE.Object3D(); this._pose = [0, 0, 0, 1];
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

    this.hostMeshes = new HostMeshes(this.groups, L, this.hostIds, f.departmentNames(), this.software);
    this.platforms = this.hostMeshes.platforms; this.hubs = this.hostMeshes.hubs; // what rays hit

    // agents: drawn as sphere impostors (one point each); an unseen instanced mesh is what rays hit
    this.agentPoints = new AgentPoints(this.agentIds.length);
    this.groups.add(this.agentPoints.points);
    this.agentsMesh = new THREE.InstancedMesh(new THREE.IcosahedronGeometry(AGENT_R, 1), new THREE.MeshBasicMaterial(), nA);
    this.agentsMesh.count = this.agentIds.length; this.agentsMesh.visible = false; // rays ignore `visible`
    this.groups.add(this.agentsMesh);
    this.phase = Float32Array.from(this.agentIds, (_, i) => (i * 2.399) % (Math.PI * 2));
    // per agent: load in [0, 1], size, pulse speed, health shown (refresh() fills them)
    this.load = new Float32Array(nA); this.scale = new Float32Array(nA).fill(0.8);
    this.speed = new Float32Array(nA).fill(1.2); this.shownHealth = new Array(nA).fill('');
    this.anomalyKey = null; this.haloAgents = []; this.haloHosts = [];

    // halos: agents (billboards) and hosts (flat rings)
    this.halos = new THREE.InstancedMesh(new THREE.RingGeometry(0.62, 0.9, 40),
      new THREE.MeshBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.9, blending: THREE.AdditiveBlending, depthWrite: false, side: THREE.DoubleSide }), nA);
    this.halos.count = 0; this.halos.frustumCulled = false; this.groups.add(this.halos);
    const hr = new THREE.RingGeometry(PLATFORM * 0.76, PLATFORM * 0.79, 96); hr.rotateX(-Math.PI / 2);
    this.hostHalos = new THREE.InstancedMesh(hr, new THREE.MeshBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.8, blending: THREE.AdditiveBlending, depthWrite: false, side: THREE.DoubleSide }), nH);
    this.hostHalos.count = 0; this.hostHalos.frustumCulled = false; this.groups.add(this.hostHalos);

    this.labels = new SceneLabels(this.groups, L, this.software); // names: groups, hosts (LOD), some agents

    this.flows = new Flows(this.groups, this.camera, this.software);

    this.refresh();
    this._animate(0); // instance matrices in place before the first pick (raycast bounds)
    // frame the fleet until the user moves the camera (hosts may still be arriving)
    if (!this._userMoved && this.hostIds.length !== this._fitHosts) { this.resetView(); this._fitHosts = this.hostIds.length; }
    this._placeSelection();
  }

  /** Update colours, sizes, halos and flows from the current values (only what changed). */
  refresh() {
    if (!this.layout) return;
    const f = this.fleet; const hostRate = this._hostRate || (this._hostRate = new Map());
    hostRate.clear();
    for (let i = 0; i < this.agentIds.length; i++) {
      const a = f.agents.get(this.agentIds[i]);
      const health = a?.health || 'unknown';
      if (health !== this.shownHealth[i]) { this.shownHealth[i] = health; this.agentPoints.setColor(i, HEALTH[health] || HEALTH.unknown); }
      const load = a ? loadOf(a) : 0;
      this.load[i] = load; this.scale[i] = 0.8 + 0.55 * load; this.speed[i] = 1.2 + load * 5;
      if (a) hostRate.set(a.node, (hostRate.get(a.node) || 0) + (a.metrics.messages_sent_per_s || 0));
    }
    this.hostMeshes.setColors(f, hostRate);
    this._refreshHalos(f.anomalousSet(f.tsMs || Date.now()));
    this.flows.sync(f, this.layout, this.controls.target, this._selectedAgent());
  }

  /** Halos for anomalous agents and hosts; labels are re-chosen only when the set changed. */
  _refreshHalos(anom) {
    let key = '';
    for (const [k, score] of anom) key += `${k}=${score.toFixed(2)};`;
    if (key === this.anomalyKey) return;
    this.anomalyKey = key;
    const c = new THREE.Color();
    this.haloAgents = []; this.haloHosts = [];
    for (const [k, score] of anom) {
      const [kind, id] = [k.slice(0, k.indexOf(':')), k.slice(k.indexOf(':') + 1)];
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
    this.labels?.invalidate(); // anomalous agents are labelled: re-choose
  }

  _selectedAgent() { return this.selected?.kind === 'agent' ? this.selected.id : null; }

  /** Ids of the agents labelled in the scene now (for tests). */
  agentLabels() { return this.labels ? this.labels.agents() : []; }

  /** Agent `i` at `time` (s) into `this._pose` [x, y, z, scale]: size and pulse for load, a slow bob. */
  _agentPose(i, time) {
    const p = this.layout.agents.get(this.agentIds[i]); const ph = this.phase[i]; const o = this._pose;
    o[0] = p.x; o[1] = p.y + 0.06 * Math.sin(time * 0.8 + ph); o[2] = p.z;
    o[3] = this.scale[i] * (1 + 0.07 * this.load[i] * Math.sin(time * this.speed[i] + ph));
    return o;
  }

  /** The pick mesh's instances where the agents are drawn now (before a raycast). */
  _placePickMesh() {
    const t = this._tmp;
    for (let i = 0; i < this.agentIds.length; i++) {
      const o = this._agentPose(i, this._time || 0);
      t.position.set(o[0], o[1], o[2]); t.quaternion.identity(); t.scale.setScalar(o[3]); t.updateMatrix();
      this.agentsMesh.setMatrixAt(i, t.matrix);
    }
    this.agentsMesh.instanceMatrix.needsUpdate = true;
    this.agentsMesh.computeBoundingSphere(); // cached bounds must follow, or rays miss them all
  }

  _animate(time) {
    const t = this._tmp; this._time = time;
    for (let i = 0; i < this.agentIds.length; i++) {
      const o = this._agentPose(i, time);
      this.agentPoints.place(i, o[0], o[1], o[2], 2 * AGENT_R * o[3]);
    }
    this.camera.updateMatrixWorld();
    this.agentPoints.commit(this.camera, this.renderer.domElement.height);
    // agent halos face the camera and breathe
    for (let j = 0; j < this.haloAgents.length; j++) {
      const [i, sc] = this.haloAgents[j]; const p = this.layout.agents.get(this.agentIds[i]);
      t.position.set(p.x, p.y, p.z); t.quaternion.copy(this.camera.quaternion);
      t.scale.setScalar(1.1 + 0.25 * (0.5 + 0.5 * Math.sin(time * 3 + i)) * sc); t.updateMatrix();
      this.halos.setMatrixAt(j, t.matrix);
    }
    if (this.haloAgents.length) this.halos.instanceMatrix.needsUpdate = true;
    this.flows.animate(time);
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
        if (this.flows.stale(this.controls.target)) this.flows.sync(this.fleet, this.layout, this.controls.target, this._selectedAgent());
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
    if (this.flows) this.flows.sync(this.fleet, this.layout, this.controls.target, this._selectedAgent()); // its flows are always drawn
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
