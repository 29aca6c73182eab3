"""The dataset's on-disk format, in one place: the builder (``ss4d.data.build``) writes through it and
the trainers (``ss4d.training``) read through it. ``docs/data.md`` ("On-disk format") documents it.

::

    OUT/
      metadata.csv, frames.csv              one row per clip / per frame
      latent_stats/<name>.json              {"mean": [C], "std": [C], "count": N}; SS sets as ss_<encoder>
      clips/<clip_id>/
        clip.json                           the clip's record
        mesh/  voxels/<t>.npz  renders/<t>/  cond/
        features/<set>/<t>.npz              indices [M,3] uint8, patchtokens [M,C] f16, num_views [M], resolution
        ss_latents/<encoder>/<t>.npz        mean [8,16,16,16] f32
        latents/<set>__<encoder>/<t>.npz    coords [M,3] uint8, feats [M,8] f32

Per-frame names are zero-padded to three digits (:func:`frame_file`, :func:`frame_dir_name`).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "CLIPS_DIR", "CLIP_RECORD", "STEP_RECORD", "METADATA_FILE", "FRAMES_FILE", "STATS_DIR", "TMP_MARK",
    "MESH_DIR", "VOXELS_DIR", "RENDERS_DIR", "COND_DIR", "FEATURES_DIR", "SS_LATENTS_DIR", "LATENTS_DIR",
    "METADATA_COLUMNS", "FRAMES_COLUMNS", "LATENT_SET_SEPARATOR", "STATUS_OK",
    "frame_file", "frame_dir_name", "view_file", "latent_set_name", "ss_stats_name",
    "ClipPaths", "iter_clip_records", "read_metadata", "read_latent_stats",
    "load_feature_frame", "load_ss_latent_frame", "load_slat_latent_frame", "DatasetReader", "FolderDataset",
    "read_rgba_files",
]

CLIPS_DIR = "clips"
CLIP_RECORD = "clip.json"
STEP_RECORD = "step.json"
METADATA_FILE = "metadata.csv"
FRAMES_FILE = "frames.csv"
STATS_DIR = "latent_stats"
TMP_MARK = ".tmp-"

MESH_DIR = "mesh"
VOXELS_DIR = "voxels"
RENDERS_DIR = "renders"
COND_DIR = "cond"
FEATURES_DIR = "features"
SS_LATENTS_DIR = "ss_latents"
LATENTS_DIR = "latents"

LATENT_SET_SEPARATOR = "__"  # latents/<feature set>__<encoder>/
SS_STATS_PREFIX = "ss_"      # latent_stats/ss_<encoder>.json
STATUS_OK = "ok"

METADATA_COLUMNS = ["clip_id", "sha256", "source", "animation", "animation_index", "clip_duration", "num_frames",
                    "fps", "time_mode", "mesh_vertices", "mesh_faces", "voxel_resolution", "num_voxels_mean",
                    "num_voxels_max", "motion_iou_min", "flagged", "flags", "rendered", "renderer", "num_views",
                    "render_resolution", "cond_rendered", "status", "error"]
FRAMES_COLUMNS = ["sha256", "clip_id", "frame", "time", "num_voxels", "flagged"]


def frame_file(t: int) -> str:
    """Per-frame file name inside a step folder (``voxels/``, ``features/<name>/``, ...)."""
    return f"{t:03d}.npz"


def frame_dir_name(t: int) -> str:
    """Per-frame folder name under ``renders/``."""
    return f"{t:03d}"


def view_file(v: int) -> str:
    """Per-view image name inside a frame's render folder (and per-frame name under ``cond/``)."""
    return f"{v:03d}.png"


def latent_set_name(feature_set: str, encoder: str) -> str:
    """Name of the SLat latent set encoded by ``encoder`` from feature set ``feature_set``."""
    return f"{feature_set}{LATENT_SET_SEPARATOR}{encoder}"


def ss_stats_name(encoder: str) -> str:
    """Name of the statistics file of the SS latent set of ``encoder`` (under ``latent_stats/``)."""
    return f"{SS_STATS_PREFIX}{encoder}"


@dataclass(frozen=True)
class ClipPaths:
    """Every path of one clip folder. ``root`` is the dataset folder, ``clip_id`` the clip's id."""

    root: Path
    clip_id: str

    @property
    def dir(self) -> Path:
        return Path(self.root) / CLIPS_DIR / self.clip_id

    @property
    def record(self) -> Path:
        return self.dir / CLIP_RECORD

    @property
    def mesh(self) -> Path:
        return self.dir / MESH_DIR

    @property
    def voxels(self) -> Path:
        return self.dir / VOXELS_DIR

    @property
    def renders(self) -> Path:
        return self.dir / RENDERS_DIR

    @property
    def cond(self) -> Path:
        return self.dir / COND_DIR

    def voxel_frame(self, t: int) -> Path:
        return self.voxels / frame_file(t)

    def render_frame(self, t: int) -> Path:
        return self.renders / frame_dir_name(t)

    def features(self, feature_set: str) -> Path:
        return self.dir / FEATURES_DIR / feature_set

    def ss_latents(self, encoder: str) -> Path:
        return self.dir / SS_LATENTS_DIR / encoder

    def latents(self, latent_set: str) -> Path:
        return self.dir / LATENTS_DIR / latent_set


def iter_clip_records(root: Path) -> Iterator[dict]:
    """Every readable ``clips/*/clip.json`` of a dataset, sorted by clip id."""
    for rec in sorted((Path(root) / CLIPS_DIR).glob(f"*/{CLIP_RECORD}")):
        try:
            yield json.loads(rec.read_text())
        except (json.JSONDecodeError, OSError):
            continue


def read_metadata(root: Path) -> list[dict]:
    """Rows of ``metadata.csv`` as dicts of strings (empty list when the file is absent)."""
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_latent_stats(root: Path, name: str) -> dict:
    """``latent_stats/<name>.json``: {"mean": [C], "std": [C], "count": N}."""
    return json.loads((Path(root) / STATS_DIR / f"{name}.json").read_text())


def load_feature_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a feature set: (indices [M, 3] int64 (x, y, z), patchtokens [M, C] float32)."""
    with np.load(path) as z:
        return z["indices"].astype(np.int64), z["patchtokens"].astype(np.float32)


def load_ss_latent_frame(path: Path) -> np.ndarray:
    """One frame of an SS latent set: mean [C, r, r, r] float32 (not normalised)."""
    with np.load(path) as z:
        return z["mean"].astype(np.float32)


def load_slat_latent_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a SLat latent set: (coords [M, 3] int64 (x, y, z), feats [M, C] float32, not normalised)."""
    with np.load(path) as z:
        return z["coords"].astype(np.int64), z["feats"].astype(np.float32)


# ------------------------------------------------------------------------------------ reading a dataset
class DatasetReader:
    """Read access to a built dataset, whatever its storage. The trainers and the evaluation read only
    through this interface, so the folder layout (:class:`FolderDataset`) and packed shards give the same
    samples. Frame indices ``t`` are the clip's frame numbers (0-based).

    Clip record keys the readers rely on (``clip.json``): ``clip_id``, ``status``, ``flagged``,
    ``num_frames`` (frames written), ``num_real_frames`` (frames before the clip's end; equals
    ``num_frames`` for datasets built before it was recorded), ``voxels_per_frame``, and the dicts
    ``features`` / ``ss_latents`` / ``latents`` keyed by set name.
    """

    def clip_records(self) -> list[dict]:
        """Every clip's record (``clip.json``), sorted by clip id."""
        raise NotImplementedError

    def load_voxels(self, clip_id: str, t: int) -> tuple[np.ndarray, int]:
        """(indices [N, 3] int64 (x, y, z), resolution)."""
        raise NotImplementedError

    def load_features(self, clip_id: str, feature_set: str, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices [M, 3] int64, patchtokens [M, C] float32)."""
        raise NotImplementedError

    def load_ss_latent(self, clip_id: str, encoder: str, t: int) -> np.ndarray:
        """SS latent mean [C, r, r, r] float32 (not normalised)."""
        raise NotImplementedError

    def load_slat_latent(self, clip_id: str, latent_set: str, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(coords [M, 3] int64, feats [M, C] float32), not normalised."""
        raise NotImplementedError

    def load_views(self, clip_id: str, t: int) -> tuple[np.ndarray, list]:
        """Ground-truth views of frame t: (RGBA uint8 [V, H, W, 4], cameras as ``BlenderCamera``)."""
        raise NotImplementedError

    def load_cond(self, clip_id: str) -> tuple[np.ndarray, list]:
        """The conditioning video: (RGBA uint8 [T, H, W, 4], one ``BlenderCamera`` per frame)."""
        raise NotImplementedError

    def latent_stats(self, name: str) -> dict:
        """``{"mean": [C], "std": [C], "count": N}`` of a latent set (SS sets: :func:`ss_stats_name`)."""
        raise NotImplementedError


class FolderDataset(DatasetReader):
    """:class:`DatasetReader` over the folder layout written by ``ss4d-build-dataset``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def paths(self, clip_id: str) -> ClipPaths:
        return ClipPaths(self.root, clip_id)

    def clip_records(self) -> list[dict]:
        return list(iter_clip_records(self.root))

    def load_voxels(self, clip_id, t):
        from .voxelize import load_voxels

        return load_voxels(self.paths(clip_id).voxel_frame(t))

    def load_features(self, clip_id, feature_set, t):
        return load_feature_frame(self.paths(clip_id).features(feature_set) / frame_file(t))

    def load_ss_latent(self, clip_id, encoder, t):
        return load_ss_latent_frame(self.paths(clip_id).ss_latents(encoder) / frame_file(t))

    def load_slat_latent(self, clip_id, latent_set, t):
        return load_slat_latent_frame(self.paths(clip_id).latents(latent_set) / frame_file(t))

    def load_views(self, clip_id, t):
        from .cameras import TRANSFORMS_FILE, read_transforms

        folder = self.paths(clip_id).render_frame(t)
        cams, files, _ = read_transforms(folder / TRANSFORMS_FILE)
        return read_rgba_files(folder, files), cams

    def load_cond(self, clip_id):
        from .cameras import TRANSFORMS_FILE, read_transforms

        folder = self.paths(clip_id).cond
        cams, files, _ = read_transforms(folder / TRANSFORMS_FILE)
        return read_rgba_files(folder, files), cams

    def latent_stats(self, name):
        return read_latent_stats(self.root, name)


def read_rgba_files(folder: Path, files: list[str]) -> np.ndarray:
    """The images ``folder/<file>`` as one RGBA uint8 array [N, H, W, 4]."""
    from PIL import Image

    imgs = []
    for f in files:
        with Image.open(folder / f) as im:
            imgs.append(np.asarray(im.convert("RGBA")))
    return np.stack(imgs)
