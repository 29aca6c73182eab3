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
        ss_latents/<encoder>__mirror_x/     the same of the frame's voxels mirrored across x = 0 (``--ss-mirror``)
        latents/<set>__<encoder>/<t>.npz    coords [M,3] uint8, feats [M,8] f32

Per-frame names are zero-padded to three digits (:func:`frame_file`, :func:`frame_dir_name`).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "CLIPS_DIR", "CLIP_RECORD", "STEP_RECORD", "METADATA_FILE", "FRAMES_FILE", "STATS_DIR", "TMP_MARK",
    "FAILED_ASSETS_DIR", "LOCK_FILE", "FORMAT_VERSION", "sanitize", "asset_key", "make_clip_id", "failed_asset_record",
    "current_record", "step_hash", "num_real_frames_of", "open_dataset", "SHARD_INDEX", "SHARD_PATTERN",
    "ShardMembers",
    "MESH_DIR", "VOXELS_DIR", "RENDERS_DIR", "COND_DIR", "FEATURES_DIR", "SS_LATENTS_DIR", "LATENTS_DIR",
    "METADATA_COLUMNS", "FRAMES_COLUMNS", "LATENT_SET_SEPARATOR", "STATUS_OK", "mirrored_ss_set", "mirror_voxels",
    "frame_file", "frame_dir_name", "view_file", "latent_set_name", "ss_stats_name",
    "ClipPaths", "iter_clip_records", "read_metadata", "read_latent_stats",
    "load_feature_frame", "load_ss_latent_frame", "load_slat_latent_frame", "DatasetReader", "FolderDataset",
    "read_rgba_files", "decode_rgba",
]

CLIPS_DIR = "clips"
CLIP_RECORD = "clip.json"
STEP_RECORD = "step.json"
METADATA_FILE = "metadata.csv"
FRAMES_FILE = "frames.csv"
STATS_DIR = "latent_stats"
FAILED_ASSETS_DIR = "failed_assets"  # failed_assets/*.json: assets that could not be opened
LOCK_FILE = ".lock"                  # clips/<id>/.lock: held by the process working on the clip
TMP_MARK = ".tmp-"
#: Bumped whenever a step's output format or code changes meaningfully; part of every step hash, so
#: a dataset written by older code is redone rather than mixed with new outputs.
FORMAT_VERSION = 2
CLIP_NAME_CHARS = 64  # longest sanitised animation name kept in a clip id
ID_SAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots: clip ids are WebDataset sample keys

MESH_DIR = "mesh"
VOXELS_DIR = "voxels"
RENDERS_DIR = "renders"
COND_DIR = "cond"
FEATURES_DIR = "features"
SS_LATENTS_DIR = "ss_latents"
LATENTS_DIR = "latents"

LATENT_SET_SEPARATOR = "__"  # latents/<feature set>__<encoder>/
SS_STATS_PREFIX = "ss_"      # latent_stats/ss_<encoder>.json
MIRROR_SUFFIX = "__mirror_x"  # ss_latents/<encoder>__mirror_x/: the SS latents of the mirrored voxels
MIRROR_AXIS = 0               # the voxel index axis a mirror reverses (world x; the front camera lies in x = 0)
STATUS_OK = "ok"

METADATA_COLUMNS = ["clip_id", "sha256", "source", "animation", "animation_index", "clip_duration", "num_frames",
                    "num_real_frames", "fps", "time_mode", "cyclic", "mesh_vertices", "mesh_faces", "voxel_resolution", "num_voxels_mean",
                    "num_voxels_max", "motion_iou_min", "flagged", "flags", "rendered", "renderer", "num_views",
                    "render_resolution", "cond_rendered", "status", "error"]
FRAMES_COLUMNS = ["sha256", "clip_id", "frame", "time", "past_end", "num_voxels", "flagged"]


def sanitize(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9_-]`` replaced by ``-`` (never empty)."""
    return ID_SAFE.sub("-", name).strip("-") or "x"


def asset_key(relative_path: str) -> str:
    """The asset's part of its clip ids: its path relative to the input folder, without the suffix,
    sanitised (``chars/Fox.glb`` -> ``chars-Fox``). Two assets with one key are an error (the builder
    reports both instead of letting them share clip folders)."""
    p = Path(relative_path)
    return sanitize(str(p.with_suffix("")))


def failed_asset_record(root: Path, relative_path: str) -> Path:
    """``failed_assets/<sanitised path>-<hash of the raw path>.json``: one file per asset, even for
    assets whose keys collide."""
    digest = hashlib.sha1(relative_path.encode()).hexdigest()[:8]
    return Path(root) / FAILED_ASSETS_DIR / f"{sanitize(relative_path)}-{digest}.json"


def make_clip_id(key: str, animation_index: int | None, animation_name: str) -> str:
    """``<asset key>__<animation index>-<sanitised name>`` (``__static`` for an asset without animation).

    The index makes ids unique within an asset even when animations share a name ("Take 001") or
    their names sanitise alike (non-ASCII names); ids are stable as long as the asset is."""
    if animation_index is None:
        return f"{key}__static"
    return f"{key}__{int(animation_index)}-{sanitize(animation_name)[:CLIP_NAME_CHARS]}"


def num_real_frames_of(record: dict) -> int:
    """Frames before the clip's end (older datasets without the field: all frames)."""
    return int(record.get("num_real_frames", record.get("num_frames", 0)))


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


def mirrored_ss_set(encoder: str) -> str:
    """Name of the SS latent set holding ``encoder``'s latents of every frame's voxels mirrored across the
    plane x = 0 (:func:`mirror_voxels`): the structure flows' mirror augmentation (``dataset.mirror``) reads it."""
    return f"{encoder}{MIRROR_SUFFIX}"


def mirror_voxels(indices: np.ndarray, resolution: int) -> np.ndarray:
    """Voxel indices [N, 3] (x, y, z) of the object mirrored across the plane x = 0: x -> resolution - 1 - x
    (the grid spans [-0.5, 0.5]³, so the mirror maps voxels onto voxels). A camera whose centre, viewing
    direction and up vector lie in that plane (the front conditioning camera) sees the mirrored object as its
    image of the original flipped left-right."""
    out = np.array(indices, copy=True)
    out[:, MIRROR_AXIS] = resolution - 1 - out[:, MIRROR_AXIS]
    return out


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

    @property
    def lock(self) -> Path:
        return self.dir / LOCK_FILE

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


# ------------------------------------------------------------------------------------ packed shards
SHARD_INDEX = "index.json"          # the shard folder's index (see ss4d.data.shards)
SHARD_PATTERN = "shard-%06d.tar"    # WebDataset tar shards: one sample per clip, key = clip id


class ShardMembers:
    """Names of one clip's files inside a shard: the WebDataset extensions after ``<clip_id>.``
    (member ``<clip_id>.<name>``). Mirrors :class:`ClipPaths` for what training reads::

        clip.json                       the clip's record (current sets only)
        voxels.<t>.npz                  as voxels/<t>.npz
        features.<set>.<t>.npz          as features/<set>/<t>.npz
        ss_latents.<encoder>.<t>.npz    as ss_latents/<encoder>/<t>.npz
        latents.<set>.<t>.npz           as latents/<set>/<t>.npz
        renders.<t>.transforms.json     as renders/<t>/transforms.json; renders.<t>.<v>.png the views
        cond.transforms.json            as cond/transforms.json; cond.<t>.png the conditioning frames
    """

    record = CLIP_RECORD
    cond_transforms = f"{COND_DIR}.transforms.json"  # cameras.TRANSFORMS_FILE

    @staticmethod
    def voxel_frame(t: int) -> str:
        return f"{VOXELS_DIR}.{frame_file(t)}"

    @staticmethod
    def features(feature_set: str, t: int) -> str:
        return f"{FEATURES_DIR}.{feature_set}.{frame_file(t)}"

    @staticmethod
    def ss_latent(encoder: str, t: int) -> str:
        return f"{SS_LATENTS_DIR}.{encoder}.{frame_file(t)}"

    @staticmethod
    def latent(latent_set: str, t: int) -> str:
        return f"{LATENTS_DIR}.{latent_set}.{frame_file(t)}"

    @staticmethod
    def render_transforms(t: int) -> str:
        return f"{RENDERS_DIR}.{frame_dir_name(t)}.transforms.json"

    @staticmethod
    def render_file(t: int, file: str) -> str:
        return f"{RENDERS_DIR}.{frame_dir_name(t)}.{file}"

    @staticmethod
    def cond_file(file: str) -> str:
        return f"{COND_DIR}.{file}"


def iter_clip_records(root: Path) -> Iterator[dict]:
    """Every readable ``clips/*/clip.json`` of a dataset, sorted by clip id."""
    for rec in sorted((Path(root) / CLIPS_DIR).glob(f"*/{CLIP_RECORD}")):
        try:
            yield json.loads(rec.read_text())
        except (json.JSONDecodeError, OSError):
            continue


def step_hash(folder: Path) -> str | None:
    """The parameter hash in ``folder/step.json`` (None when the step is absent or unreadable)."""
    return _step_record(folder).get("hash")


def _step_record(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / STEP_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _derived_from(folder: Path, parents: dict[str, str | None]) -> str | None:
    """``folder``'s hash if its step.json exists and names exactly the given parent hashes, else None."""
    rec = _step_record(folder)
    params = rec.get("params", {})
    if not rec.get("hash") or any(h is None or params.get(k) != h for k, h in parents.items()):
        return None
    return rec["hash"]


def _current_sets(sets: dict, folder_of, parents_of) -> dict:
    """The entries of ``sets`` whose folder (``folder_of(name)``) was computed from the parents
    ``parents_of(feature set named in its step.json or None)``."""
    kept = {}
    for name, v in sets.items():
        folder = folder_of(name)
        feat = _step_record(folder).get("params", {}).get("feature_set")
        if _derived_from(folder, parents_of(feat)) is not None:
            kept[name] = v
    return kept


def current_record(root: Path, record: dict) -> dict:
    """``record`` (a clip.json) with only the outputs that are current: every step folder must carry
    the hash of the parent it was computed from (voxels/renders/cond <- mesh, features <- renders +
    voxels, SS latents <- voxels (+ features), SLat latents <- features). A set computed from renders
    that were redone with other settings is dropped, ``rendered`` / ``cond_rendered`` follow their
    folders, and ``num_real_frames`` is filled in for older records."""
    rec = dict(record)
    rec["num_real_frames"] = num_real_frames_of(record)
    if "clip_id" not in rec:
        return rec
    paths = ClipPaths(root, rec["clip_id"])
    mesh = step_hash(paths.mesh)
    vox = _derived_from(paths.voxels, {"mesh": mesh})
    ren = _derived_from(paths.renders, {"mesh": mesh})
    rec["rendered"] = bool(record.get("rendered")) and ren is not None
    rec["cond_rendered"] = bool(record.get("cond_rendered")) and _derived_from(paths.cond, {"mesh": mesh}) is not None
    feats, feat_hash = {}, {}
    for name, v in record.get("features", {}).items():
        h = _derived_from(paths.features(name), {"renders": ren, "voxels": vox})
        if h is not None:
            feats[name], feat_hash[name] = v, h
    # latent sets name the feature set they came from (SLat always, SS when encoded from its voxels)
    ss = _current_sets(record.get("ss_latents", {}), paths.ss_latents,
                       lambda feat: {"voxels": vox} if feat is None else {"voxels": vox, "features": feat_hash.get(feat)})
    lat = _current_sets(record.get("latents", {}), paths.latents, lambda feat: {"features": feat_hash.get(feat)})
    for key, sets in (("features", feats), ("ss_latents", ss), ("latents", lat)):
        if key in record or sets:
            rec[key] = sets
    return rec


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
        """Every clip's record (``clip.json``, only current derived sets: :func:`current_record`),
        sorted by clip id, failed clips included (``status`` != ``"ok"``)."""
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
        return [current_record(self.root, r) for r in iter_clip_records(self.root)]

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
    return decode_rgba([folder / f for f in files])


def decode_rgba(images: list) -> np.ndarray:
    """Image files (paths or binary file objects) as one RGBA uint8 array [N, H, W, 4]."""
    from PIL import Image

    imgs = []
    for f in images:
        with Image.open(f) as im:
            imgs.append(np.asarray(im.convert("RGBA")))
    return np.stack(imgs)


def open_dataset(path: str | Path) -> DatasetReader:
    """The reader for a built dataset at ``path``: :class:`FolderDataset` for the folder layout, or
    :class:`ss4d.data.shards.ShardDataset` for a folder of packed shards (``ss4d-pack-dataset``).
    Both return the same records and arrays."""
    from .shards import SHARD_INDEX, ShardDataset

    root = Path(path)
    if (root / SHARD_INDEX).is_file():
        return ShardDataset(root)
    if (root / CLIPS_DIR).is_dir():
        return FolderDataset(root)
    raise FileNotFoundError(f"{root}: not a dataset (no {CLIPS_DIR}/ folder and no {SHARD_INDEX})")
