// Fleet layout shared by the 3D and 2D views: hosts on a grid of platforms, agents clustered by
// department on their host, with the seed's `agentPositions` override.

export const PLATFORM = 12;     // platform width/depth (world units)
export const SPACING = 17;      // distance between platform centres
export const AGENT_R = 0.42;    // agent sphere radius
const DEPT_RING = 3.7;          // radius of the ring of department clusters
const CLUSTER_R = 1.0;          // radius of one department's cluster

export const HEALTH_COLORS = {
  ok: '#22c55e', warning: '#f59e0b', critical: '#ef4444', stale: '#64748b', unknown: '#94a3b8',
};

const DEPT_PALETTE = ['#38bdf8', '#a78bfa', '#f472b6', '#34d399', '#fbbf24', '#fb7185', '#60a5fa', '#c084fc',
  '#2dd4bf', '#f97316', '#a3e635', '#e879f9'];

/** A stable colour per department name (palette order by sorted name). */
export function departmentColors(names) {
  const out = new Map();
  names.forEach((n, i) => out.set(n, DEPT_PALETTE[i % DEPT_PALETTE.length]));
  return out;
}

const natural = (a, b) => a.localeCompare(b, undefined, { numeric: true });
const GROUP_GAP = 8;            // extra space between host groups

/**
 * The group a host belongs to on the map: `"group:NODE": "site"` in the positions file (a site, a
 * rack, a department), else its name without the trailing number (`gpu-node-7` → `gpu-node`,
 * `web-1` → `web`), the naming convention fleets use for these. Hosts of one group share a
 * labelled block.
 */
export function hostGroup(node, positions = {}) {
  const set = positions[`group:${node}`];
  if (typeof set === 'string' && set) return set;
  return String(node).replace(/[-_.]?\d+$/, '') || String(node);
}

/** Whether a group's name is drawn (a named group of more than one host). */
export function labelled(group) { return Boolean(group.name) && group.hosts.length > 1; }

/** Place host groups as blocks (each a small grid) in rows; returns node → {x, z} and the groups. */
function placeGroups(nodes, positions) {
  const byGroup = new Map();
  for (const n of nodes) { const g = hostGroup(n, positions); if (!byGroup.has(g)) byGroup.set(g, []); byGroup.get(g).push(n); }
  // hosts alone in their group share one unlabelled block ('') instead of a block each
  const single = [...byGroup].filter(([, m]) => m.length === 1);
  if (single.length > 1) { for (const [g] of single) byGroup.delete(g); byGroup.set('', single.map(([, m]) => m[0]).sort(natural)); }
  const blocks = [...byGroup].sort((a, b) => natural(a[0], b[0])).map(([name, members]) => {
    const cols = Math.ceil(Math.sqrt(members.length)); const rows = Math.ceil(members.length / cols);
    return { name, members, cols, w: cols * SPACING, d: rows * SPACING };
  });
  const area = blocks.reduce((s, b) => s + (b.w + GROUP_GAP) * (b.d + GROUP_GAP), 0);
  const maxW = Math.max(...blocks.map((b) => b.w), Math.sqrt(area) * 1.25);
  let x = 0; let z = 0; let rowD = 0;
  for (const b of blocks) {
    if (x > 0 && x + b.w > maxW) { x = 0; z += rowD + GROUP_GAP; rowD = 0; }
    b.x0 = x; b.z0 = z; x += b.w + GROUP_GAP; rowD = Math.max(rowD, b.d);
  }
  const width = Math.max(...blocks.map((b) => b.x0 + b.w), 0); const depth = Math.max(...blocks.map((b) => b.z0 + b.d), 0);
  const pos = new Map(); const groups = [];
  for (const b of blocks) {
    b.x0 -= width / 2; b.z0 -= depth / 2;
    b.members.forEach((n, i) => pos.set(n, {
      x: b.x0 + (i % b.cols) * SPACING + SPACING / 2, z: b.z0 + Math.floor(i / b.cols) * SPACING + SPACING / 2 }));
    groups.push({ name: b.name, hosts: b.members, x: b.x0 + b.w / 2, z: b.z0, w: b.w, d: b.d });
  }
  return { pos, groups };
}

/**
 * Compute world positions. Returns { hosts: Map(node → {x, z}), agents: Map(id → {x, y, z}),
 * pads: [{node, department, x, z, r}], hubs: Map(node → {x, y, z}),
 * groups: [{name, hosts, x, z (centre of the block's front edge), w, d}], bounds: {minX, maxX, minZ, maxZ} }.
 * `positions` is the agentPositions override: `{agent_id: [x, y, z]}` relative to the centre of the
 * agent's host platform, and optionally `{"host:NAME": [x, y, z]}` for a platform's centre in the world.
 */
export function computeLayout(fleet, positions = {}) {
  const nodes = [...fleet.hosts.keys()].sort(natural);
  // hosts grouped by name (see hostGroup), each group a block, the blocks about square overall
  const { pos, groups } = placeGroups(nodes, positions);
  const hosts = new Map();
  const hubs = new Map();
  nodes.forEach((node) => {
    const o = positions[`host:${node}`];
    const x = Array.isArray(o) ? Number(o[0]) || 0 : pos.get(node).x;
    const z = Array.isArray(o) ? Number(o[2]) || 0 : pos.get(node).z;
    hosts.set(node, { x, z });
    hubs.set(node, { x, y: 1.1, z });
  });

  const agents = new Map();
  const pads = [];
  for (const node of nodes) {
    const h = hosts.get(node);
    const list = fleet.agentsOf(node);
    const byDept = new Map();
    for (const a of list) { if (!byDept.has(a.department)) byDept.set(a.department, []); byDept.get(a.department).push(a); }
    const depts = [...byDept.keys()].sort();
    const ring = depts.length <= 1 ? 0 : depts.length === 2 ? DEPT_RING * 0.8 : DEPT_RING;
    const start = depts.length === 2 ? Math.PI : -Math.PI / 2; // two departments: side by side
    depts.forEach((dept, di) => {
      const ang = start + (di / depts.length) * Math.PI * 2;
      const cx = h.x + Math.cos(ang) * ring; const cz = h.z + Math.sin(ang) * ring;
      const members = byDept.get(dept);
      const k = members.length;
      const cr = depts.length <= 1 ? Math.min(4.2, 0.5 + k * 0.28) : k <= 1 ? 0 : Math.min(CLUSTER_R + (k - 3) * 0.12, 1.6);
      pads.push({ node, department: dept, x: cx, z: cz, r: Math.max(cr + AGENT_R + 0.35, 1.05) });
      members.forEach((a, ai) => {
        const o = positions[a.id];
        if (Array.isArray(o) && o.length >= 3) {
          agents.set(a.id, { x: h.x + Number(o[0]), y: Number(o[1]) || 0.9, z: h.z + Number(o[2]) });
          return;
        }
        const aa = ang + (ai / Math.max(1, k)) * Math.PI * 2;
        agents.set(a.id, { x: cx + Math.cos(aa) * cr, y: 0.9, z: cz + Math.sin(aa) * cr });
      });
    });
  }

  let minX = -PLATFORM / 2; let maxX = PLATFORM / 2; let minZ = -PLATFORM / 2; let maxZ = PLATFORM / 2;
  for (const h of hosts.values()) {
    minX = Math.min(minX, h.x - PLATFORM / 2); maxX = Math.max(maxX, h.x + PLATFORM / 2);
    minZ = Math.min(minZ, h.z - PLATFORM / 2); maxZ = Math.max(maxZ, h.z + PLATFORM / 2);
  }
  for (const g of groups) if (labelled(g)) minZ = Math.min(minZ, g.z - 2.5); // room for its name
  return { hosts, agents, pads, hubs, groups, bounds: { minX, maxX, minZ, maxZ } };
}

/** Endpoints of a link: agent → its host's hub when the peer is unknown, else agent → agent. */
export function linkEnds(layout, fleet, link) {
  const a = layout.agents.get(link.source);
  if (!a) return null;
  if (link.target) {
    const b = layout.agents.get(link.target);
    return b ? [a, b] : null;
  }
  const ag = fleet.agents.get(link.source);
  const hub = ag && layout.hubs.get(ag.node);
  return hub ? [a, hub] : null;
}

/** Load in [0, 1] for an agent or host: drives size and pulse. */
export function loadOf(e) {
  const m = e.metrics || {};
  if (e.kind === 'host') return Math.min(1, (m.cpu_usage_percent ?? 0) / 100);
  const cpu = (m.cpu_usage_percent ?? 0) / 100;
  const q = Math.min(1, (m.task_queue_depth ?? 0) / 20);
  const tps = Math.min(1, (m.tasks_per_s ?? 0) / 5);
  return Math.min(1, Math.max(cpu, q, tps * 0.8));
}
