"""Evaluate glTF 2.0 animations into per-frame triangle meshes (numpy only).

Supported: node TRS animation (translation / rotation / scale, LINEAR / STEP / CUBICSPLINE),
skins (linear blend skinning over any number of ``JOINTS_n`` / ``WEIGHTS_n`` sets, inverse bind
matrices), morph targets (mesh default weights, node weights, animated ``weights``), node
hierarchies, mesh instancing, triangle lists / strips / fans, vertex colours ``COLOR_0``,
base-colour textures (and ``KHR_materials_pbrSpecularGlossiness`` diffuse as a fallback).
Points and lines are skipped. One animation ("clip") is played at a time.

Typical use::

    clips = list_clips("Fox.glb")                     # [ClipInfo(index=0, name="Survey", ...), ...]
    times = sample_times(clips[0], num_frames=8, fps=24)
    seq = load_animated_mesh("Fox.glb", clips[0].index, times)   # MeshSequence, Z-up, normalised
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .animation import sample_keyframes, trs_to_matrix
from .gltf import GLTFDocument, GLTFError, load_gltf
from .mesh import Y_UP_TO_Z_UP, Material, MeshError, MeshSequence, normalize_clip

log = logging.getLogger(__name__)

MODE_TRIANGLES, MODE_TRIANGLE_STRIP, MODE_TRIANGLE_FAN = 4, 5, 6
TRIANGLE_MODES = (MODE_TRIANGLES, MODE_TRIANGLE_STRIP, MODE_TRIANGLE_FAN)
WRAP_CODES = {10497: "repeat", 33071: "clamp", 33648: "mirror"}
TIME_MODES = ("clamp", "loop", "stretch")
STATIC_CLIP_NAME = "static"
WEIGHT_SUM_EPS = 1e-8
FRAME_EPS = 1e-6  # in frames: a sample this close to the clip's end still counts as before it


@dataclass(frozen=True)
class ClipInfo:
    """One playable animation of an asset. ``index`` is None for the static (rest) pose."""

    index: int | None
    name: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def list_clips(source: str | Path | GLTFDocument) -> list[ClipInfo]:
    """All animations of a glTF asset (time span from the samplers' input accessors).

    An asset without animations yields one static clip named ``"static"``.
    """
    doc = source if isinstance(source, GLTFDocument) else load_gltf(source)
    clips = []
    for i, anim in enumerate(doc.get("animations")):
        lo, hi = np.inf, -np.inf
        for ch in anim.get("channels", []):
            sampler = anim["samplers"][ch["sampler"]]
            t = doc.accessor(sampler["input"])
            if len(t):
                lo, hi = min(lo, float(t.min())), max(hi, float(t.max()))
        if not np.isfinite(lo):
            lo = hi = 0.0
        clips.append(ClipInfo(index=i, name=anim.get("name") or f"animation_{i}", start=lo, end=hi))
    if not clips:
        clips.append(ClipInfo(index=None, name=STATIC_CLIP_NAME, start=0.0, end=0.0))
    return clips


def sample_times(clip: ClipInfo, num_frames: int, fps: float, time_mode: str = "clamp") -> np.ndarray:
    """[num_frames] sample times (absolute, in the clip's time base).

    ``clamp``: ``start + k / fps``, holding the last pose past the end; ``loop``: wraps around the
    clip duration; ``stretch``: ``num_frames`` evenly spaced samples covering the whole clip
    (``fps`` ignored).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if time_mode != "stretch" and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    k = np.arange(num_frames, dtype=np.float64)
    if time_mode == "stretch":
        return np.linspace(clip.start, clip.end, num_frames)
    rel = k / fps
    if time_mode == "loop" and clip.duration > 0:
        rel = np.mod(rel, clip.duration)
    return clip.start + np.minimum(rel, clip.duration)


def count_real_frames(clip: ClipInfo, num_frames: int, fps: float, time_mode: str = "clamp",
                      cyclic: bool = False) -> int:
    """How many of the :func:`sample_times` frames lie before the clip's end (the rest repeat poses).

    ``clamp``: frames with ``k / fps <= duration`` (later ones hold the last pose); ``loop``: all
    frames of a cyclic clip (first and last pose match, so wrapping continues the motion), else as
    ``clamp`` (the wrap is a jump); ``stretch``: all frames. A clip without duration (a static pose)
    has no end to run past: all frames (such clips are flagged ``low_motion`` by the builder).
    """
    if time_mode == "stretch" or clip.duration <= 0:
        return num_frames
    if time_mode == "loop" and cyclic:
        return num_frames
    return int(min(num_frames, math.floor(clip.duration * fps + FRAME_EPS) + 1))


@dataclass
class _Primitive:
    node: int
    positions: np.ndarray  # [V, 3]
    morph_deltas: np.ndarray | None  # [K, V, 3]
    joints: np.ndarray | None  # [V, I] node-independent joint slots
    weights: np.ndarray | None  # [V, I]
    uv: np.ndarray | None
    colors: np.ndarray | None
    faces: np.ndarray  # [F, 3]
    material: int  # index into the output material list


class GLTFAnimator:
    """Scene graph of one glTF document, evaluable at arbitrary times for any animation."""

    def __init__(self, doc: GLTFDocument, scene: int | None = None):
        self.doc = doc
        nodes = doc.get("nodes")
        self.num_nodes = len(nodes)
        self.parent = np.full(self.num_nodes, -1, np.int64)
        for i, n in enumerate(nodes):
            for c in n.get("children", []) or []:
                if not 0 <= c < self.num_nodes:
                    raise GLTFError(f"{doc.path.name}: node {i} has invalid child {c}")
                self.parent[c] = i
        self.order = self._topological_order()
        self.rest_t = np.zeros((self.num_nodes, 3))
        self.rest_r = np.tile([0.0, 0.0, 0.0, 1.0], (self.num_nodes, 1))
        self.rest_s = np.ones((self.num_nodes, 3))
        self.fixed_matrix: dict[int, np.ndarray] = {}
        for i, n in enumerate(nodes):
            if "matrix" in n:
                self.fixed_matrix[i] = np.asarray(n["matrix"], np.float64).reshape(4, 4).T  # column-major
            self.rest_t[i] = n.get("translation", self.rest_t[i])
            self.rest_r[i] = n.get("rotation", self.rest_r[i])
            self.rest_s[i] = n.get("scale", self.rest_s[i])

        scenes = doc.get("scenes")
        if scenes:
            idx = doc.json.get("scene", 0) if scene is None else scene
            if not 0 <= idx < len(scenes):
                raise GLTFError(f"{doc.path.name}: scene {idx} out of range")
            roots = scenes[idx].get("nodes", []) or []
        else:
            roots = [i for i in range(self.num_nodes) if self.parent[i] < 0]
        self.scene_nodes = self._descendants(roots)
        self.materials: list[Material] = []
        self._material_map: dict[int | None, int] = {}
        self._image_cache: dict[int, np.ndarray | None] = {}
        self.primitives = self._collect_primitives()
        if not self.primitives:
            raise MeshError(f"{doc.path.name}: scene contains no triangle geometry")

    # ------------------------------------------------------------------ graph helpers
    def _topological_order(self) -> list[int]:
        order, state = [], np.zeros(self.num_nodes, np.int8)  # 0 new, 1 visiting, 2 done
        for start in range(self.num_nodes):
            chain = []
            i = start
            while i >= 0 and state[i] == 0:
                state[i] = 1
                chain.append(i)
                i = int(self.parent[i])
            if i >= 0 and state[i] == 1:
                raise GLTFError(f"{self.doc.path.name}: node hierarchy has a cycle")
            for j in reversed(chain):
                state[j] = 2
                order.append(j)
        return order

    def _descendants(self, roots: list[int]) -> list[int]:
        nodes, out, stack = self.doc.get("nodes"), [], list(roots)
        seen = set()
        while stack:
            i = stack.pop()
            if i in seen or not 0 <= i < self.num_nodes:
                continue
            seen.add(i)
            out.append(i)
            stack.extend(nodes[i].get("children", []) or [])
        return out

    # ------------------------------------------------------------------ materials
    def _texture_image(self, tex_info: dict | None) -> tuple[np.ndarray | None, str, str, int]:
        if not tex_info:
            return None, "repeat", "repeat", 0
        textures = self.doc.get("textures")
        tex_idx = tex_info.get("index", -1)
        if not 0 <= tex_idx < len(textures):
            return None, "repeat", "repeat", 0
        tex = textures[tex_idx]
        src = tex.get("source")
        if src is None:  # e.g. KHR_texture_basisu / EXT_texture_webp only
            for ext in (tex.get("extensions") or {}).values():
                if isinstance(ext, dict) and "source" in ext:
                    src = ext["source"]
                    break
        image = None
        if src is not None:
            if src not in self._image_cache:
                try:
                    self._image_cache[src] = self.doc.image_rgba(src)
                except GLTFError as exc:
                    log.warning("%s; using the base colour factor only", exc)
                    self._image_cache[src] = None
            image = self._image_cache[src]
        wrap_s, wrap_t = "repeat", "repeat"
        if "sampler" in tex:
            smp = self.doc.get("samplers")[tex["sampler"]]
            wrap_s = WRAP_CODES.get(smp.get("wrapS", 10497), "repeat")
            wrap_t = WRAP_CODES.get(smp.get("wrapT", 10497), "repeat")
        return image, wrap_s, wrap_t, int(tex_info.get("texCoord", 0))

    def _material(self, index: int | None) -> tuple[int, int]:
        """(output material index, texCoord set) for a glTF material index."""
        mats = self.doc.get("materials")
        if index is not None and not 0 <= index < len(mats):
            index = None
        src = mats[index] if index is not None else {}
        pbr = src.get("pbrMetallicRoughness") or {}
        factor = pbr.get("baseColorFactor")
        tex_info = pbr.get("baseColorTexture")
        spec_gloss = (src.get("extensions") or {}).get("KHR_materials_pbrSpecularGlossiness")
        if spec_gloss and factor is None and tex_info is None:
            factor = spec_gloss.get("diffuseFactor")
            tex_info = spec_gloss.get("diffuseTexture")
        image, wrap_s, wrap_t, texcoord = self._texture_image(tex_info)
        if index not in self._material_map:
            self.materials.append(Material(
                name=src.get("name") or (f"material_{index}" if index is not None else "default"),
                base_color_factor=np.asarray(factor if factor is not None else [1, 1, 1, 1], np.float32),
                texture=image, wrap_s=wrap_s, wrap_t=wrap_t,
                double_sided=bool(src.get("doubleSided", False)), alpha_mode=src.get("alphaMode", "OPAQUE")))
            self._material_map[index] = len(self.materials) - 1
        return self._material_map[index], texcoord

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _faces(mode: int, indices: np.ndarray) -> np.ndarray:
        if mode == MODE_TRIANGLES:
            n = len(indices) // 3 * 3
            return indices[:n].reshape(-1, 3)
        if len(indices) < 3:
            return np.zeros((0, 3), np.int64)
        if mode == MODE_TRIANGLE_STRIP:
            k = np.arange(len(indices) - 2)
            even = (k % 2) == 0
            a = indices[k]
            b = np.where(even, indices[k + 1], indices[k + 2])
            c = np.where(even, indices[k + 2], indices[k + 1])
            return np.stack([a, b, c], 1)
        k = np.arange(1, len(indices) - 1)  # fan
        return np.stack([np.full_like(k, indices[0]), indices[k], indices[k + 1]], 1)

    def _collect_primitives(self) -> list[_Primitive]:
        doc, nodes, meshes = self.doc, self.doc.get("nodes"), self.doc.get("meshes")
        prims = []
        for ni in self.scene_nodes:
            node = nodes[ni]
            if "mesh" not in node:
                continue
            if not 0 <= node["mesh"] < len(meshes):
                raise GLTFError(f"{doc.path.name}: node {ni} references missing mesh {node['mesh']}")
            mesh = meshes[node["mesh"]]
            skinned = "skin" in node
            for pi, prim in enumerate(mesh.get("primitives", [])):
                mode = prim.get("mode", MODE_TRIANGLES)
                if mode not in TRIANGLE_MODES:
                    log.info("%s: skipping non-triangle primitive (mode %d)", doc.path.name, mode)
                    continue
                attrs = prim.get("attributes", {})
                if "POSITION" not in attrs:
                    continue
                pos = doc.accessor(attrs["POSITION"]).astype(np.float64)
                nv = len(pos)
                idx = doc.accessor(prim["indices"]).astype(np.int64) if "indices" in prim else np.arange(nv)
                faces = self._faces(mode, idx)
                if len(faces) and (faces.min() < 0 or faces.max() >= nv):
                    raise GLTFError(f"{doc.path.name}: mesh {node['mesh']} primitive {pi} index out of range")
                deltas = None
                if prim.get("targets"):
                    deltas = np.zeros((len(prim["targets"]), nv, 3))
                    for k, tgt in enumerate(prim["targets"]):
                        if "POSITION" in tgt:
                            deltas[k] = doc.accessor(tgt["POSITION"])
                joints = weights = None
                if skinned:
                    jsets, wsets, s = [], [], 0
                    while f"JOINTS_{s}" in attrs and f"WEIGHTS_{s}" in attrs:
                        jsets.append(doc.accessor(attrs[f"JOINTS_{s}"]).reshape(nv, -1))
                        wsets.append(doc.accessor(attrs[f"WEIGHTS_{s}"]).reshape(nv, -1).astype(np.float64))
                        s += 1
                    if jsets:
                        joints = np.concatenate(jsets, 1).astype(np.int64)
                        weights = np.concatenate(wsets, 1)
                        total = weights.sum(1, keepdims=True)
                        weights = np.where(total > WEIGHT_SUM_EPS, weights / np.maximum(total, WEIGHT_SUM_EPS), 0.0)
                mat_idx, texcoord = self._material(prim.get("material"))
                uv_key = f"TEXCOORD_{texcoord}"
                uv = doc.accessor(attrs[uv_key]).astype(np.float32) if uv_key in attrs else None
                colors = None
                if "COLOR_0" in attrs:
                    c = doc.accessor(attrs["COLOR_0"]).astype(np.float32).reshape(nv, -1)
                    colors = np.concatenate([c, np.ones((nv, 4 - c.shape[1]), np.float32)], 1) if c.shape[1] < 4 else c
                prims.append(_Primitive(ni, pos, deltas, joints, weights, uv, colors, faces, mat_idx))
        return prims

    # ------------------------------------------------------------------ evaluation
    def _channels(self, anim_index: int | None) -> list[tuple[int, str, np.ndarray, np.ndarray, str]]:
        if anim_index is None:
            return []
        anims = self.doc.get("animations")
        if not 0 <= anim_index < len(anims):
            raise GLTFError(f"{self.doc.path.name}: animation {anim_index} out of range")
        anim, out = anims[anim_index], []
        for ch in anim.get("channels", []):
            tgt = ch.get("target", {})
            if "node" not in tgt or tgt.get("path") not in ("translation", "rotation", "scale", "weights"):
                continue  # KHR_animation_pointer and friends
            smp = anim["samplers"][ch["sampler"]]
            out.append((tgt["node"], tgt["path"], self.doc.accessor(smp["input"]),
                        self.doc.accessor(smp["output"]), smp.get("interpolation", "LINEAR")))
        return out

    def world_matrices(self, anim_index: int | None, times: np.ndarray) -> np.ndarray:
        """Global node matrices [T, N, 4, 4] (glTF Y-up world) at the given times."""
        times = np.asarray(times, np.float64)
        n_t = len(times)
        t = np.broadcast_to(self.rest_t, (n_t,) + self.rest_t.shape).copy()
        r = np.broadcast_to(self.rest_r, (n_t,) + self.rest_r.shape).copy()
        s = np.broadcast_to(self.rest_s, (n_t,) + self.rest_s.shape).copy()
        animated = set()
        for node, path, kt, kv, interp in self._channels(anim_index):
            if path == "weights":
                continue
            vals = sample_keyframes(kt, kv, interp, times, is_rotation=(path == "rotation"))
            {"translation": t, "rotation": r, "scale": s}[path][:, node] = vals
            animated.add(node)
        local = trs_to_matrix(t, r, s)
        for i, m in self.fixed_matrix.items():
            if i not in animated:
                local[:, i] = m
        world = np.empty_like(local)
        for i in self.order:
            p = self.parent[i]
            world[:, i] = local[:, i] if p < 0 else world[:, p] @ local[:, i]
        return world

    def morph_weights(self, anim_index: int | None, times: np.ndarray) -> dict[int, np.ndarray]:
        """Morph weights per mesh node: {node: [T, K]}."""
        nodes, meshes = self.doc.get("nodes"), self.doc.get("meshes")
        n_t = len(times)
        out = {}
        for p in self.primitives:
            if p.morph_deltas is None or p.node in out:
                continue
            k = p.morph_deltas.shape[0]
            default = nodes[p.node].get("weights", meshes[nodes[p.node]["mesh"]].get("weights", [0.0] * k))
            w = np.zeros(k)
            w[:min(k, len(default))] = default[:k]
            out[p.node] = np.tile(w, (n_t, 1))
        for node, path, kt, kv, interp in self._channels(anim_index):
            if path == "weights" and node in out:
                k = out[node].shape[1]
                vals = sample_keyframes(kt, np.asarray(kv).reshape(-1, k), interp, times)
                out[node] = vals
        return out

    def evaluate(self, anim_index: int | None, times: np.ndarray) -> MeshSequence:
        """Per-frame meshes in the glTF (Y-up) world frame, not normalised."""
        times = np.asarray(times, np.float64).reshape(-1)
        world = self.world_matrices(anim_index, times)
        weights = self.morph_weights(anim_index, times)
        nodes = self.doc.get("nodes")
        n_t = len(times)
        verts, faces, uvs, cols, fmat = [], [], [], [], []
        offset = 0
        any_uv = any(p.uv is not None for p in self.primitives)
        any_col = any(p.colors is not None for p in self.primitives)
        skin_cache: dict[int, np.ndarray] = {}
        for p in self.primitives:
            nv = len(p.positions)
            base = np.broadcast_to(p.positions, (n_t, nv, 3))
            if p.morph_deltas is not None:
                base = base + np.einsum("tk,kvc->tvc", weights[p.node], p.morph_deltas)
            homo = np.concatenate([base, np.ones((n_t, nv, 1))], -1)  # [T, V, 4]
            skin_idx = nodes[p.node].get("skin")
            if skin_idx is not None and p.joints is not None:
                if skin_idx not in skin_cache:
                    skin_cache[skin_idx] = self._joint_matrices(skin_idx, world)  # [T, J, 4, 4]
                jm = skin_cache[skin_idx]
                if p.joints.max(initial=0) >= jm.shape[1]:
                    raise GLTFError(f"{self.doc.path.name}: JOINTS index exceeds skin {skin_idx} joint count")
                pos = np.empty((n_t, nv, 3))
                for t in range(n_t):  # per frame keeps memory at O(V) for big meshes / long clips
                    blended = np.einsum("vs,vsij->vij", p.weights, jm[t][p.joints])  # [V, 4, 4]
                    pos[t] = np.einsum("vij,vj->vi", blended, homo[t])[:, :3]
            else:
                pos = np.einsum("tij,tvj->tvi", world[:, p.node], homo)[..., :3]
            verts.append(pos)
            faces.append(p.faces + offset)
            fmat.append(np.full(len(p.faces), p.material, np.int32))
            if any_uv:
                uvs.append(p.uv if p.uv is not None else np.zeros((nv, 2), np.float32))
            if any_col:
                cols.append(p.colors if p.colors is not None else np.ones((nv, 4), np.float32))
            offset += nv
        return MeshSequence(
            vertices=np.concatenate(verts, 1), faces=np.concatenate(faces, 0), times=times,
            uv=np.concatenate(uvs, 0) if any_uv else None, colors=np.concatenate(cols, 0) if any_col else None,
            face_material=np.concatenate(fmat), materials=list(self.materials), source=str(self.doc.path))

    def _joint_matrices(self, skin_index: int, world: np.ndarray) -> np.ndarray:
        skins = self.doc.get("skins")
        if not 0 <= skin_index < len(skins):
            raise GLTFError(f"{self.doc.path.name}: skin {skin_index} out of range")
        skin = skins[skin_index]
        joints = np.asarray(skin["joints"], np.int64)
        if "inverseBindMatrices" in skin:
            ibm = self.doc.accessor(skin["inverseBindMatrices"]).astype(np.float64)
            if len(ibm) < len(joints):
                raise GLTFError(f"{self.doc.path.name}: skin {skin_index} has too few inverse bind matrices")
        else:
            ibm = np.tile(np.eye(4), (len(joints), 1, 1))
        return world[:, joints] @ ibm[None, :len(joints)]


def to_z_up(seq: MeshSequence) -> MeshSequence:
    """Rotate a Y-up (glTF) sequence into the Z-up world frame (see :data:`Y_UP_TO_Z_UP`)."""
    seq.vertices = (seq.vertices.astype(np.float64) @ Y_UP_TO_Z_UP.T).astype(np.float32)
    return seq


def load_animated_mesh(path: str | Path, animation: int | None, times: np.ndarray, *,
                       normalize: bool = True, scene: int | None = None,
                       doc: GLTFDocument | None = None) -> MeshSequence:
    """Load a glTF/GLB, play ``animation`` (index, None = rest pose) at ``times`` (seconds).

    Returns a Z-up :class:`MeshSequence`; with ``normalize`` the whole clip is fitted into
    [-0.5, 0.5]^3 with one transform (see :func:`ss4d.data.mesh.normalize_clip`).
    """
    doc = doc or load_gltf(path)
    animator = GLTFAnimator(doc, scene=scene)
    seq = to_z_up(animator.evaluate(animation, times))
    anims = doc.get("animations")
    if animation is None:
        anim_name = STATIC_CLIP_NAME
    else:
        anim_name = anims[animation].get("name") or f"animation_{animation}"
    seq.name = f"{Path(path).stem}/{anim_name}"
    return normalize_clip(seq) if normalize else seq
