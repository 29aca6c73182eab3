"""An animated GLB (binary glTF 2.0) from one mesh per frame, written with pygltflib.

Structure: a root node ``ss4d`` with one child node per frame (``frame_000``, ...), each holding its
own mesh (``POSITION``, ``NORMAL``, ``COLOR_0`` as normalised uint8 RGBA, uint32 indices; one
unlit-looking material: white, metallic 0, roughness 1, so the vertex colours show). One
animation ``play`` switches the frames: every frame node has a ``scale`` channel with ``STEP``
interpolation that is 1 during its own frame time ``[t / fps, (t + 1) / fps)`` and 0 otherwise;
the last key at ``T / fps`` shows frame 0 again, so a looping player wraps around seamlessly. With
the animation stopped (static viewers) frame 0 is shown and the other frames have scale 0.

This is the per-frame-mesh fallback of issue 14: the Gaussian decoder gives no correspondence
between the surfaces of different frames, so there is no single topology to store as morph targets
or skinning. Blender (File > Import > glTF 2.0), three.js ``GLTFLoader`` / ``<model-viewer>`` and
the Khronos glTF validator all accept and play it.

Vertices are expected in the Y-up file frame already (``ss4d.exports.mesh.Y_UP_TRANSFORM``).
"""
from __future__ import annotations

import os
from typing import List, Sequence, Union

import numpy as np

from trellis_ext.atomic import atomic_file

__all__ = ["write_animated_glb", "GLB_GENERATOR"]

GLB_GENERATOR = "ss4d (ss4d.exports.glb)"
#: glTF buffer views are aligned to 4 bytes.
ALIGN = 4
#: Material: pure white base colour (vertex colours multiply it), fully rough dielectric.
BASE_COLOR = [1.0, 1.0, 1.0, 1.0]
ROUGHNESS = 1.0
METALLIC = 0.0
#: Normals shorter than this are replaced by FALLBACK_NORMAL (+Y, "up" in the file frame).
MIN_NORMAL_LENGTH = 1e-8
FALLBACK_NORMAL = (0.0, 1.0, 0.0)


class _Buffer:
    """Accumulates binary chunks; one buffer view + accessor per array."""

    def __init__(self, gltf):
        self.gltf = gltf
        self.data = bytearray()

    def add(self, array: np.ndarray, component_type: int, accessor_type: str, target=None, normalized=False,
            with_bounds=False) -> int:
        import pygltflib as g

        array = np.ascontiguousarray(array)
        offset = len(self.data)
        self.data += array.tobytes()
        self.data += b"\0" * (-len(self.data) % ALIGN)
        view = g.BufferView(buffer=0, byteOffset=offset, byteLength=array.nbytes, target=target)
        self.gltf.bufferViews.append(view)
        count = array.shape[0]
        acc = g.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=component_type, count=count,
                         type=accessor_type, normalized=normalized or None)
        if with_bounds:
            flat = array.reshape(count, -1)
            acc.min = [float(v) for v in flat.min(axis=0)]
            acc.max = [float(v) for v in flat.max(axis=0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


def _unit_normals(normals: np.ndarray) -> np.ndarray:
    """[V, 3] -> unit float32 normals (glTF requires unit length); a zero or non-finite normal (a vertex
    of only degenerate faces) becomes :data:`FALLBACK_NORMAL`."""
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    ok = np.isfinite(length) & (length > MIN_NORMAL_LENGTH)
    unit = np.where(ok, normals / np.where(ok, length, 1.0), np.asarray(FALLBACK_NORMAL))
    return unit.astype(np.float32)


def _mesh_primitive(buf: _Buffer, mesh, material: int):
    import pygltflib as g

    verts = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.uint32).reshape(-1)
    normals = _unit_normals(np.asarray(mesh.vertex_normals, dtype=np.float64))
    colors = np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)[:, :4]
    attrs = g.Attributes(
        POSITION=buf.add(verts, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, with_bounds=True),
        NORMAL=buf.add(normals, g.FLOAT, g.VEC3, g.ARRAY_BUFFER),
        COLOR_0=buf.add(colors, g.UNSIGNED_BYTE, g.VEC4, g.ARRAY_BUFFER, normalized=True))
    indices = buf.add(faces, g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
    return g.Primitive(attributes=attrs, indices=indices, material=material, mode=g.TRIANGLES)


def write_animated_glb(meshes: Sequence, path: Union[str, os.PathLike], fps: float) -> str:
    """Write ``meshes`` (``trimesh.Trimesh`` per frame, Y-up, vertex colours) as one animated GLB.

    Frames with an empty mesh get a node without a mesh (nothing shows during them). Returns the path.
    """
    import pygltflib as g

    if not meshes:
        raise ValueError("write_animated_glb: no frames")
    if not fps > 0:
        raise ValueError(f"write_animated_glb: fps must be > 0, got {fps}")
    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator=GLB_GENERATOR), scene=0)
    gltf.materials.append(g.Material(name="vertex_colors", doubleSided=False, pbrMetallicRoughness=g.PbrMetallicRoughness(
        baseColorFactor=BASE_COLOR, metallicFactor=METALLIC, roughnessFactor=ROUGHNESS)))
    buf = _Buffer(gltf)
    num = len(meshes)
    frame_nodes: List[int] = []
    for t, mesh in enumerate(meshes):
        node = g.Node(name=f"frame_{t:03d}", scale=[1.0, 1.0, 1.0] if t == 0 else [0.0, 0.0, 0.0])
        if len(mesh.faces):
            gltf.meshes.append(g.Mesh(name=f"frame_{t:03d}", primitives=[_mesh_primitive(buf, mesh, 0)]))
            node.mesh = len(gltf.meshes) - 1
        gltf.nodes.append(node)
        frame_nodes.append(len(gltf.nodes) - 1)
    gltf.nodes.append(g.Node(name="ss4d", children=frame_nodes))
    gltf.scenes.append(g.Scene(name="ss4d", nodes=[len(gltf.nodes) - 1]))

    if num > 1:
        times = np.arange(num + 1, dtype=np.float32) / np.float32(fps)
        time_acc = buf.add(times, g.FLOAT, g.SCALAR, with_bounds=True)
        samplers, channels = [], []
        for t, node in enumerate(frame_nodes):
            visible = (np.arange(num + 1) % num == t).astype(np.float32)
            scales = np.repeat(visible[:, None], 3, axis=1)
            samplers.append(g.AnimationSampler(input=time_acc, output=buf.add(scales, g.FLOAT, g.VEC3),
                                               interpolation=g.ANIM_STEP))
            channels.append(g.AnimationChannel(sampler=t, target=g.AnimationChannelTarget(node=node, path="scale")))
        gltf.animations.append(g.Animation(name="play", samplers=samplers, channels=channels))

    gltf.buffers.append(g.Buffer(byteLength=len(buf.data)))
    gltf.set_binary_blob(bytes(buf.data))
    with atomic_file(path, "wb") as f:
        f.write(b"".join(gltf.save_to_bytes()))
    return os.fspath(path)
