"""Files other tools open: an animated GLB, mesh sequences (OBJ / PLY) and ``.splat`` files.

``write_exports(gaussians, kinds, folder, fps)`` writes the requested kinds (``EXPORT_KINDS``) of a 4D
result into ``folder`` (the CLI passes its temporary output folder, so everything appears
atomically with the rest) and returns the written files per kind, relative to ``folder``::

    glb        animation.glb              one animated GLB (per-frame meshes switched in time)
    obj        mesh/frame_000.obj ...     vertex-coloured OBJ per frame (Y-up)
    ply-mesh   mesh/frame_000.ply ...     vertex-coloured PLY mesh per frame (Y-up)
    splat      splat/frame_000.splat ...  compressed 3DGS per frame (antimatter15 .splat)

Meshes come from :func:`ss4d.exports.mesh.gaussians_to_mesh` (computed once for glb/obj/ply-mesh).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ss4d.export import frame_name
from trellis_ext.atomic import atomic_file

from .mesh import MESH_QUALITY, Y_UP_TRANSFORM, MeshSettings, gaussians_to_mesh

__all__ = ["MESH_QUALITY", "EXPORT_KINDS", "MESH_KINDS", "GLB_FILE", "parse_export_list", "write_exports", "MeshSettings",
           "gaussians_to_mesh"]

EXPORT_KINDS = ("glb", "obj", "ply-mesh", "splat")
MESH_KINDS = ("glb", "obj", "ply-mesh")
GLB_FILE = "animation.glb"
MESH_DIR, SPLAT_DIR = "mesh", "splat"
MESH_SUFFIX = {"obj": "obj", "ply-mesh": "ply"}


def parse_export_list(text: str) -> List[str]:
    """``"glb,splat"`` / ``"all"`` / ``"none"`` -> kinds; raises ``ValueError`` naming the bad ones."""
    text = text.strip().lower()
    if text in ("", "none"):
        return []
    if text == "all":
        return list(EXPORT_KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in EXPORT_KINDS]
    if bad:
        raise ValueError(f"unknown export kind(s) {', '.join(bad)}; use a comma list of {', '.join(EXPORT_KINDS)}, "
                         f"or all / none")
    return list(dict.fromkeys(kinds))


def _y_up(mesh):
    out = mesh.copy()
    if len(out.vertices):
        out.vertices = np.asarray(out.vertices) @ np.asarray(Y_UP_TRANSFORM).T
    return out


def write_exports(gaussians: Sequence, kinds: Sequence[str], folder, fps: float,
                  mesh_settings: Optional[MeshSettings] = None, progress: bool = False) -> Dict[str, List[str]]:
    """Write ``kinds`` of the per-frame ``gaussians`` under ``folder``; returns relative paths per kind."""
    from tqdm.auto import tqdm

    from .glb import write_animated_glb
    from .splat import save_splat

    folder = Path(folder)
    files: Dict[str, List[str]] = {}
    if "splat" in kinds:
        (folder / SPLAT_DIR).mkdir(parents=True, exist_ok=True)
        files["splat"] = [os.path.join(SPLAT_DIR, frame_name(t, "splat")) for t in range(len(gaussians))]
        for g, rel in zip(gaussians, files["splat"]):
            save_splat(g, folder / rel)
    if not any(k in kinds for k in MESH_KINDS):
        return files
    settings = mesh_settings or MeshSettings()
    meshes = [_y_up(gaussians_to_mesh(g, settings)) for g in tqdm(gaussians, desc="Meshing", disable=not progress)]
    for kind in ("obj", "ply-mesh"):
        if kind in kinds:
            (folder / MESH_DIR).mkdir(parents=True, exist_ok=True)
            files[kind] = [os.path.join(MESH_DIR, frame_name(t, MESH_SUFFIX[kind])) for t in range(len(meshes))]
            for mesh, rel in zip(meshes, files[kind]):
                data = mesh.export(file_type=MESH_SUFFIX[kind])
                with atomic_file(folder / rel, "wb") as f:
                    f.write(data.encode("utf-8") if isinstance(data, str) else data)
    if "glb" in kinds:
        write_animated_glb(meshes, folder / GLB_FILE, fps)
        files["glb"] = [GLB_FILE]
    return files
