// Software GL draws instanced meshes slowly per instance (~30 µs each in SwiftShader: 600 pads cost
// more than every other object together). For static instances it draws one merged copy instead.
import * as THREE from 'three';

/**
 * One mesh holding every instance of `inst` (placed by its instance matrices, coloured by its
 * instance colours times the geometry's vertex colours, e.g. baked light). The instanced mesh
 * stays the source of truth (and what rays hit); call `syncColors()` after changing its colours.
 */
export class MergedCopy {
  constructor(inst) {
    this.inst = inst;
    const g = inst.geometry; const n = inst.count; const vc = g.attributes.position.count;
    const pos = new Float32Array(n * vc * 3); const v = new THREE.Vector3(); const m = new THREE.Matrix4();
    const idx = g.index ? g.index.array : null; const ni = idx ? idx.length : 0;
    const index = new (n * vc > 65535 ? Uint32Array : Uint16Array)(n * ni);
    for (let i = 0; i < n; i++) {
      inst.getMatrixAt(i, m);
      for (let k = 0; k < vc; k++) {
        v.fromBufferAttribute(g.attributes.position, k).applyMatrix4(m);
        pos.set([v.x, v.y, v.z], (i * vc + k) * 3);
      }
      for (let k = 0; k < ni; k++) index[i * ni + k] = idx[k] + i * vc;
    }
    this.base = g.attributes.color ? g.attributes.color.array : null;
    this.colors = new THREE.BufferAttribute(new Float32Array(n * vc * 3), 3);
    this.geometry = new THREE.BufferGeometry();
    this.geometry.setAttribute('position', new THREE.BufferAttribute(pos, 3));
    this.geometry.setAttribute('color', this.colors);
    if (idx) this.geometry.setIndex(new THREE.BufferAttribute(index, 1));
    this.geometry.computeBoundingSphere();
    this.mesh = new THREE.Mesh(this.geometry, inst.material);
    this.mesh.raycast = () => {}; // rays hit the instanced mesh
    inst.visible = false;
    this.syncColors();
  }

  /** Copy the instanced mesh's colours (they multiply the geometry's vertex colours). */
  syncColors() {
    const n = this.inst.count; const vc = this.colors.count / Math.max(1, n); const out = this.colors.array;
    const ic = this.inst.instanceColor ? this.inst.instanceColor.array : null;
    for (let i = 0; i < n; i++) {
      const r = ic ? ic[i * 3] : 1; const gg = ic ? ic[i * 3 + 1] : 1; const b = ic ? ic[i * 3 + 2] : 1;
      for (let k = 0; k < vc; k++) {
        const o = (i * vc + k) * 3; const s = k * 3;
        out[o] = r * (this.base ? this.base[s] : 1); out[o + 1] = gg * (this.base ? this.base[s + 1] : 1); out[o + 2] = b * (this.base ? this.base[s + 2] : 1);
      }
    }
    this.colors.needsUpdate = true;
  }
}
