// Agents drawn as lit sphere impostors: one point per agent, shaded per pixel as a sphere. One
// vertex per agent instead of a tessellated sphere's dozens (software GL is bound by vertices and
// triangles there); picking still uses an instanced sphere mesh (scene3d.js).
import * as THREE from 'three';
import { GLOW, SKY, GROUND, HEMI_I, SUN_I, SUN_AT } from './scene-parts.js';

const VERTEX = `
attribute float size;
uniform float scale;
varying vec3 vCol;
#include <fog_pars_vertex>
void main() {
  vCol = color;
  vec4 mvPosition = modelViewMatrix * vec4(position, 1.0);
  gl_PointSize = size * scale / max(0.001, -mvPosition.z);
  gl_Position = projectionMatrix * mvPosition;
  #include <fog_vertex>
}`;

const FRAGMENT = `
uniform vec3 sun; uniform vec3 up; uniform vec3 sky; uniform vec3 ground;
varying vec3 vCol;
#include <fog_pars_fragment>
void main() {
  vec2 d = gl_PointCoord * 2.0 - 1.0; d.y = -d.y;
  float r2 = dot(d, d);
  if (r2 > 1.0) discard;
  vec3 n = vec3(d, sqrt(1.0 - r2));
  vec3 light = mix(ground, sky, 0.5 * dot(n, up) + 0.5) * ${(HEMI_I / Math.PI).toFixed(4)}
    + max(0.0, dot(n, sun)) * ${(SUN_I / Math.PI).toFixed(4)} + ${GLOW.toFixed(2)};
  gl_FragColor = vec4(vCol * light, 1.0);
  #include <colorspace_fragment>
  #include <fog_fragment>
}`;

/** `n` agents as sphere impostors: set each one's place, diameter and colour, then `commit()`. */
export class AgentPoints {
  constructor(n) {
    const g = this.geometry = new THREE.BufferGeometry();
    this.position = new THREE.BufferAttribute(new Float32Array(Math.max(1, n) * 3), 3).setUsage(THREE.DynamicDrawUsage);
    this.color = new THREE.BufferAttribute(new Float32Array(Math.max(1, n) * 3), 3);
    this.size = new THREE.BufferAttribute(new Float32Array(Math.max(1, n)), 1).setUsage(THREE.DynamicDrawUsage);
    g.setAttribute('position', this.position); g.setAttribute('color', this.color); g.setAttribute('size', this.size);
    g.setDrawRange(0, n);
    this.material = new THREE.ShaderMaterial({
      uniforms: THREE.UniformsUtils.merge([THREE.UniformsLib.fog, {
        scale: { value: 1 }, sun: { value: new THREE.Vector3() }, up: { value: new THREE.Vector3() },
        sky: { value: new THREE.Color(SKY) }, ground: { value: new THREE.Color(GROUND) },
      }]),
      vertexShader: VERTEX, fragmentShader: FRAGMENT, vertexColors: true, fog: true,
    });
    this.points = new THREE.Points(g, this.material);
    this.points.frustumCulled = false; this.points.raycast = () => {}; // picked through the mesh
    this._v = new THREE.Vector3();
  }

  /** Centre and diameter (world units) of agent `i`. */
  place(i, x, y, z, diameter) { this.position.setXYZ(i, x, y, z); this.size.setX(i, diameter); }

  /** Colour of agent `i` (uploaded at the next frame). */
  setColor(i, c) { this.color.setXYZ(i, c.r, c.g, c.b); this.color.needsUpdate = true; }

  /** Upload what changed; light directions and point scale for `camera` and a drawing-buffer height in px. */
  commit(camera, heightPx) {
    this.position.needsUpdate = true; this.size.needsUpdate = true;
    const u = this.material.uniforms; const view = camera.matrixWorldInverse;
    u.sun.value.copy(SUN_AT).normalize().transformDirection(view);
    u.up.value.set(0, 1, 0).transformDirection(view);
    u.scale.value = heightPx / (2 * Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2));
  }

  dispose() { this.geometry.dispose(); this.material.dispose(); }
}
