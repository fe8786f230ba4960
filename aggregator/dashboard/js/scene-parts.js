// Small three.js building blocks for the 3D view.
import * as THREE from 'three';
import { HEALTH_COLORS } from './layout.js';

/** Health colours (layout.js) as three.js colours, and the colour of message flows. */
export const HEALTH_3D = Object.fromEntries(Object.entries(HEALTH_COLORS).map(([k, v]) => [k, new THREE.Color(v)]));
export const FLOW = new THREE.Color('#67e8f9');

/**
 * A lit material: physically based, or, when `cheap` (software GL), an unlit one that shows the
 * light baked into the geometry's vertex colours by `shaded()` (no per-pixel lighting: SwiftShader
 * spends most of a frame shading pixels). Geometries drawn with it must come from `shaded()`.
 */
export function litMaterial(opts, cheap = false) {
  if (!cheap) return new THREE.MeshStandardMaterial(opts);
  const { roughness, metalness, ...rest } = opts; // eslint-disable-line no-unused-vars
  return new THREE.MeshBasicMaterial({ ...rest, vertexColors: true });
}

/** A lit material whose instance colour also glows a little (emissive = colour * k). */
export function glowMaterial(opts, cheap = false) {
  const m = litMaterial(opts, cheap);
  if (cheap) return m; // the glow is baked by shaded(geometry, GLOW)
  m.onBeforeCompile = (s) => {
    s.fragmentShader = s.fragmentShader.replace('#include <emissivemap_fragment>',
      `#include <emissivemap_fragment>\n#ifdef USE_COLOR\n totalEmissiveRadiance += vColor.rgb * ${GLOW};\n#endif`);
  };
  return m;
}

/** How much of its own colour a glowing surface adds. */
export const GLOW = 0.55;

// the scene's lights (scene3d.js adds them for the lit materials; shaded() bakes the same ones)
export const SKY = 0xbcd7ff; export const GROUND = 0x0b1020; export const HEMI_I = 1.4;
export const SUN_I = 1.6; export const SUN_AT = new THREE.Vector3(30, 60, 20);

/**
 * `geometry`, indexed (shared vertices are shaded once: SwiftShader has a vertex cache only for
 * indexed draws), with vertex colours holding the diffuse light of the scene's hemisphere and sun
 * lights (plus `glow`), for `litMaterial(…, cheap)`. Objects must not be rotated per instance.
 */
export function shaded(geometry, glow = 0) {
  const g = geometry.index ? geometry : indexed(geometry);
  const n = g.attributes.normal; const sun = SUN_AT.clone().normalize();
  const sky = new THREE.Color(SKY); const ground = new THREE.Color(GROUND); const c = new THREE.Color();
  const col = new Float32Array(n.count * 3); const v = new THREE.Vector3();
  for (let i = 0; i < n.count; i++) {
    v.fromBufferAttribute(n, i);
    c.copy(ground).lerp(sky, 0.5 * v.y + 0.5).multiplyScalar(HEMI_I / Math.PI); // Lambert: E * albedo / pi
    const d = Math.max(0, v.dot(sun)) * SUN_I / Math.PI + glow;
    col[i * 3] = c.r + d; col[i * 3 + 1] = c.g + d; col[i * 3 + 2] = c.b + d;
  }
  g.setAttribute('color', new THREE.BufferAttribute(col, 3));
  return g;
}

/** A non-indexed geometry with equal (position, normal) vertices merged. */
function indexed(geometry) {
  const p = geometry.attributes.position; const n = geometry.attributes.normal;
  const keys = new Map(); const idx = []; const pos = []; const nor = [];
  const r = (x) => Math.round(x * 1e4);
  for (let i = 0; i < p.count; i++) {
    const k = `${r(p.getX(i))},${r(p.getY(i))},${r(p.getZ(i))},${r(n.getX(i))},${r(n.getY(i))},${r(n.getZ(i))}`;
    let j = keys.get(k);
    if (j === undefined) {
      j = keys.size; keys.set(k, j);
      pos.push(p.getX(i), p.getY(i), p.getZ(i)); nor.push(n.getX(i), n.getY(i), n.getZ(i));
    }
    idx.push(j);
  }
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.Float32BufferAttribute(pos, 3));
  g.setAttribute('normal', new THREE.Float32BufferAttribute(nor, 3));
  g.setIndex(idx); geometry.dispose();
  return g;
}

/** A text sprite (host, group and agent names); long names are shortened (hover shows them). */
export function labelSprite(text, { color = 'rgba(226, 232, 240, 0.92)', plate = false, cheap = false } = {}) {
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
  const tex = new THREE.CanvasTexture(c); tex.colorSpace = THREE.SRGBColorSpace; tex.anisotropy = cheap ? 1 : 4; // software GL: plain mipmaps
  const sp = new THREE.Sprite(new THREE.SpriteMaterial({ map: tex, transparent: true, depthWrite: false }));
  sp.scale.set(6.4, 1.2, 1);
  return sp;
}

/** Point at u in [0, 1] on the quadratic curve {a, m, b}, written into `out` ([x, y, z]). */
export function bezInto(cv, u, out) {
  const v = 1 - u; const a = cv.a; const m = cv.m; const b = cv.b;
  out[0] = v * v * a.x + 2 * v * u * m.x + u * u * b.x;
  out[1] = v * v * a.y + 2 * v * u * m.y + u * u * b.y;
  out[2] = v * v * a.z + 2 * v * u * m.z + u * u * b.z;
  return out;
}
