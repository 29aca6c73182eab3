"""Animated triangle meshes with constant topology, clip normalisation and on-disk format.

World frame: **Z-up**, right-handed (as TRELLIS and Blender). glTF is Y-up; loaders convert with
:data:`Y_UP_TO_Z_UP`, the same rotation Blender's glTF importer applies: ``(x, y, z)_gltf ->
(x, -z, y)``, i.e. +90 degrees about +X. The glTF "front" (+Z) therefore faces -Y.

Normalisation (one per clip, so motion is preserved): the union axis-aligned bounding box of all
frames is centred at the origin and scaled so its largest side is 1, i.e. everything lies in
[-0.5, 0.5]^3 (TRELLIS convention). ``v_normalised = v * scale + offset``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
NORMALIZED_EXTENT = 1.0  # largest side of the clip's union bbox after normalisation
DEGENERATE_EXTENT = 1e-12
CYCLIC_TOLERANCE = 1e-3  # first/last pose distance, as a fraction of the poses' largest bbox side
WRAP_MODES = ("repeat", "clamp", "mirror")
MESH_FILE = "mesh.npz"
MESH_META_FILE = "mesh.json"


class MeshError(ValueError):
    """Raised for unusable geometry (one-line message)."""


@dataclass
class Material:
    """Base-colour part of a PBR material (what the renderers use).

    Attributes:
        name: material name.
        base_color_factor: [4] linear RGBA multiplier.
        texture: optional uint8 RGBA [H, W, 4] base-colour image, **sRGB-encoded** (glTF rule).
            Row 0 is the top of the image; UV (0, 0) is its top-left corner (glTF convention).
        wrap_s, wrap_t: ``repeat`` | ``clamp`` | ``mirror``.
        double_sided: glTF doubleSided (renderers here always draw both sides).
        alpha_mode: glTF alphaMode (OPAQUE / MASK / BLEND); rendered as opaque.
    """

    name: str = "default"
    base_color_factor: np.ndarray = field(default_factory=lambda: np.ones(4, np.float32))
    texture: np.ndarray | None = None
    wrap_s: str = "repeat"
    wrap_t: str = "repeat"
    double_sided: bool = True
    alpha_mode: str = "OPAQUE"


@dataclass
class MeshSequence:
    """T frames of one triangle mesh (shared faces, per-frame vertex positions).

    Attributes:
        vertices: [T, V, 3] float32 positions per frame.
        faces: [F, 3] int32 vertex indices (counter-clockwise front faces).
        times: [T] float64 sample times in seconds (clip-relative).
        uv: [V, 2] float32 texture coordinates or None.
        colors: [V, 4] float32 linear vertex colours (multiplied with the material) or None.
        face_material: [F] int32 index into ``materials``.
        materials: list of :class:`Material` (at least one).
        name: clip name, e.g. ``"Fox/Survey"``.
        source: path of the source asset.
        normalization: dict with ``scale`` (float), ``offset`` ([3]) and ``up`` once normalised.
    """

    vertices: np.ndarray
    faces: np.ndarray
    times: np.ndarray
    uv: np.ndarray | None = None
    colors: np.ndarray | None = None
    face_material: np.ndarray | None = None
    materials: list[Material] = field(default_factory=lambda: [Material()])
    name: str = ""
    source: str = ""
    normalization: dict | None = None

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, np.float32)
        self.faces = np.asarray(self.faces, np.int32).reshape(-1, 3)
        self.times = np.asarray(self.times, np.float64).reshape(-1)
        if self.vertices.ndim != 3 or self.vertices.shape[-1] != 3:
            raise MeshError(f"vertices must be [T, V, 3], got {self.vertices.shape}")
        if len(self.times) != self.vertices.shape[0]:
            raise MeshError(f"{len(self.times)} times for {self.vertices.shape[0]} frames")
        if self.face_material is None:
            self.face_material = np.zeros(len(self.faces), np.int32)
        self.face_material = np.asarray(self.face_material, np.int32)
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= self.num_vertices):
            raise MeshError("face index out of range")

    @property
    def num_frames(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[1]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Union bbox over all frames of the vertices used by faces: (min [3], max [3])."""
        used = np.unique(self.faces) if len(self.faces) else np.arange(0)
        if used.size == 0:
            raise MeshError("mesh has no triangles")
        pts = self.vertices[:, used]
        finite = np.isfinite(pts).all()
        if not finite:
            raise MeshError("mesh has non-finite vertex positions")
        return pts.min(axis=(0, 1)).astype(np.float64), pts.max(axis=(0, 1)).astype(np.float64)


def normalize_clip(seq: MeshSequence) -> MeshSequence:
    """Return a copy scaled/centred so the union bbox of all frames fits [-0.5, 0.5]^3.

    The largest bbox side becomes exactly 1 (``NORMALIZED_EXTENT``), the bbox centre the origin.
    Composes with an existing normalisation record.
    """
    lo, hi = seq.bounds()
    extent = float((hi - lo).max())
    if extent < DEGENERATE_EXTENT:
        raise MeshError(f"degenerate clip: bounding box extent {extent:g}")
    scale = NORMALIZED_EXTENT / extent
    offset = -(lo + hi) / 2.0 * scale
    verts = (seq.vertices.astype(np.float64) * scale + offset).astype(np.float32)
    prev = seq.normalization or {"scale": 1.0, "offset": [0.0, 0.0, 0.0]}
    norm = {
        "scale": float(prev["scale"]) * scale,
        "offset": (np.asarray(prev["offset"], np.float64) * scale + offset).tolist(),
        "up": "z",
    }
    return replace(seq, vertices=verts, normalization=norm)


def save_mesh_sequence(seq: MeshSequence, folder: str | Path) -> None:
    """Write ``mesh.npz`` + ``mesh.json`` + ``texture_<i>.png`` into ``folder``.

    ``mesh.npz`` keys: ``vertices`` [T,V,3] f32, ``faces`` [F,3] i32, ``times`` [T] f64,
    ``face_material`` [F] i32, optional ``uv`` [V,2] f32, ``colors`` [V,4] f32.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"vertices": seq.vertices, "faces": seq.faces, "times": seq.times, "face_material": seq.face_material}
    if seq.uv is not None:
        arrays["uv"] = np.asarray(seq.uv, np.float32)
    if seq.colors is not None:
        arrays["colors"] = np.asarray(seq.colors, np.float32)
    np.savez(folder / MESH_FILE, **arrays)
    mats = []
    for i, m in enumerate(seq.materials):
        tex_name = None
        if m.texture is not None:
            tex_name = f"texture_{i}.png"
            Image.fromarray(np.asarray(m.texture, np.uint8), "RGBA").save(folder / tex_name)
        mats.append({"name": m.name, "base_color_factor": np.asarray(m.base_color_factor, float).tolist(),
                     "texture": tex_name, "wrap_s": m.wrap_s, "wrap_t": m.wrap_t,
                     "double_sided": bool(m.double_sided), "alpha_mode": m.alpha_mode})
    meta = {"name": seq.name, "source": seq.source, "normalization": seq.normalization, "materials": mats}
    (folder / MESH_META_FILE).write_text(json.dumps(meta, indent=1))


def load_mesh_sequence(folder: str | Path) -> MeshSequence:
    """Inverse of :func:`save_mesh_sequence`."""
    from PIL import Image

    folder = Path(folder)
    meta = json.loads((folder / MESH_META_FILE).read_text())
    with np.load(folder / MESH_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    mats = []
    for m in meta["materials"]:
        tex = None
        if m.get("texture"):
            with Image.open(folder / m["texture"]) as im:
                tex = np.asarray(im.convert("RGBA")).copy()
        mats.append(Material(name=m["name"], base_color_factor=np.asarray(m["base_color_factor"], np.float32),
                             texture=tex, wrap_s=m["wrap_s"], wrap_t=m["wrap_t"],
                             double_sided=m["double_sided"], alpha_mode=m["alpha_mode"]))
    return MeshSequence(vertices=arrays["vertices"], faces=arrays["faces"], times=arrays["times"],
                        uv=arrays.get("uv"), colors=arrays.get("colors"), face_material=arrays["face_material"],
                        materials=mats, name=meta["name"], source=meta["source"],
                        normalization=meta["normalization"])


def poses_match(first: np.ndarray, last: np.ndarray, tolerance: float = CYCLIC_TOLERANCE) -> bool:
    """True when two poses [V, 3] of one mesh coincide: every vertex moves at most ``tolerance`` times
    the largest side of their union bounding box (a cyclic clip's first and last poses)."""
    both = np.concatenate([first, last]).astype(np.float64)
    extent = float((both.max(0) - both.min(0)).max()) if len(both) else 0.0
    if extent <= DEGENERATE_EXTENT:
        return True
    return float(np.abs(np.asarray(first, np.float64) - last).max()) <= tolerance * extent
