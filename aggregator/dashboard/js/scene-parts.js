// Small three.js building blocks for the 3D view.
import * as THREE from 'three';

/**
 * A lit material: physically based, or Lambert when `cheap` (software GL renders Lambert about
 * twice as fast; roughness/metalness are then ignored).
 */
export function litMaterial(opts, cheap = false) {
  if (!cheap) return new THREE.MeshStandardMaterial(opts);
  const { roughness, metalness, ...rest } = opts; // eslint-disable-line no-unused-vars
  return new THREE.MeshLambertMaterial(rest);
}

/** A lit material whose instance colour also glows a little (emissive = colour * k). */
export function glowMaterial(opts, cheap = false) {
  const m = litMaterial(opts, cheap);
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
