"""Packed shards: a built dataset as WebDataset tar shards plus an index, for streaming training.

``ss4d-pack-dataset DATASET -o SHARDS`` writes::

    SHARDS/
      shard-000000.tar ...   WebDataset tars: one sample per clip (key = clip id), members
                             ``<clip_id>.<name>`` with the names of :class:`~ss4d.data.layout.ShardMembers`
                             (record, voxels, features, SS / SLat latents, views + cameras, conditioning
                             frames; the stored bytes of the folder layout, unchanged)
      index.json             {"format", "version", "shards": [file], "clips": {clip_id: {"shard": i,
                             "members": {name: [byte offset, size]}}}, "latent_stats": {name: stats}}

A clip never spans two shards; a shard is closed once it holds ``--shard-size`` bytes. Two ways to
read them, with the same result as the folder layout:

* :class:`ShardDataset`, a :class:`~ss4d.data.layout.DatasetReader` (random access: one ``pread`` of a
  member's byte range, which is also what an HTTP range request on object storage would fetch);
* :func:`iter_clip_samples`: sequential streaming with ``webdataset.WebDataset`` (local paths or any
  URL webdataset opens, e.g. ``pipe:aws s3 cp ...``), one dict of member bytes per clip.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np

from trellis_ext.atomic import atomic_directory, atomic_file

from ..exit_codes import EXIT_BAD_INPUT, EXIT_OK
from .cameras import TRANSFORMS_FILE
from .layout import (SHARD_INDEX, SHARD_PATTERN, STATS_DIR, STATUS_OK, ClipPaths, DatasetReader, ShardMembers,
                     current_record, decode_rgba, frame_file, iter_clip_records)

log = logging.getLogger("ss4d.data.shards")

SHARD_FORMAT = "ss4d-shards"
SHARD_VERSION = 1
DEFAULT_SHARD_BYTES = 1 << 30  # 1 GiB: large enough for streaming, small enough to spread over workers
MAX_SAMPLES_PER_SHARD = 100_000

__all__ = ["pack_dataset", "ShardDataset", "iter_clip_samples", "clip_members", "main"]


# ------------------------------------------------------------------------------------ packing
def clip_members(root: Path, record: dict) -> dict[str, Path]:
    """{member name: file} of one clip's training data (only sets current for its record)."""
    paths = ClipPaths(root, record["clip_id"])
    n = int(record.get("num_frames", 0)) if record.get("status") == STATUS_OK else 0
    files: dict[str, Path] = {}
    for t in range(n):
        if paths.voxel_frame(t).is_file():
            files[ShardMembers.voxel_frame(t)] = paths.voxel_frame(t)
        for name in record.get("features", {}):
            files[ShardMembers.features(name, t)] = paths.features(name) / frame_file(t)
        for name in record.get("ss_latents", {}):
            files[ShardMembers.ss_latent(name, t)] = paths.ss_latents(name) / frame_file(t)
        for name in record.get("latents", {}):
            files[ShardMembers.latent(name, t)] = paths.latents(name) / frame_file(t)
        if record.get("rendered"):
            folder = paths.render_frame(t)
            files[ShardMembers.render_transforms(t)] = folder / TRANSFORMS_FILE
            for f in _transform_files(folder / TRANSFORMS_FILE):
                files[ShardMembers.render_file(t, f)] = folder / f
    if record.get("cond_rendered"):
        files[ShardMembers.cond_transforms] = paths.cond / TRANSFORMS_FILE
        for f in _transform_files(paths.cond / TRANSFORMS_FILE):
            files[ShardMembers.cond_file(f)] = paths.cond / f
    return files


def _transform_files(path: Path) -> list[str]:
    return [fr["file_path"] for fr in json.loads(path.read_text())["frames"]]


def pack_dataset(src: Path, dst: Path, shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True) -> dict:
    """Pack the dataset folder ``src`` into shards in ``dst`` (written atomically; an existing shard
    folder is replaced, any other existing path is refused). Returns the index."""
    import webdataset as wds

    src, dst = Path(src), Path(dst)
    if dst.exists() and not (dst / SHARD_INDEX).is_file():
        raise FileExistsError(f"{dst} exists and is not a shard folder; choose a new output path")
    records = [current_record(src, r) for r in iter_clip_records(src)]
    if not records:
        raise FileNotFoundError(f"{src}: no clips (is it a dataset built by ss4d-build-dataset?)")
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc="pack", unit="clip", dynamic_ncols=True)
    with atomic_directory(dst, prefix=f".{dst.name}.tmp-") as tmp:
        pattern = str(Path(tmp) / SHARD_PATTERN)
        # PAX headers: member names longer than ustar's 100 characters; fixed mtime: reproducible tars
        with wds.ShardWriter(pattern, maxsize=shard_bytes, maxcount=MAX_SAMPLES_PER_SHARD, encoder=False,
                             mtime=0.0, format="PAX_FORMAT", verbose=0) as sink:
            for rec in records:
                sample = {"__key__": rec["clip_id"], ShardMembers.record: json.dumps(rec, sort_keys=True).encode()}
                for name, f in clip_members(src, rec).items():
                    sample[name] = f.read_bytes()
                sink.write(sample)
        shards = sorted(p.name for p in Path(tmp).glob("*.tar"))
        index = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "shards": shards,
                 "clips": _member_offsets(Path(tmp), shards), "latent_stats": _latent_stats(src)}
        with atomic_file(Path(tmp) / SHARD_INDEX, "w") as f:
            json.dump(index, f)
    return index


def _member_offsets(folder: Path, shards: list[str]) -> dict:
    clips: dict[str, dict] = {}
    for i, name in enumerate(shards):
        with tarfile.open(folder / name) as tar:
            for m in tar:
                key, member = m.name.split(".", 1)  # clip ids have no dots (layout.sanitize)
                entry = clips.setdefault(key, {"shard": i, "members": {}})
                entry["members"][member] = [m.offset_data, m.size]
    return dict(sorted(clips.items()))


def _latent_stats(src: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted((src / STATS_DIR).glob("*.json"))}


# ------------------------------------------------------------------------------------ reading
class ShardDataset(DatasetReader):
    """:class:`~ss4d.data.layout.DatasetReader` over packed shards (random access through the index)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.index = json.loads((self.root / SHARD_INDEX).read_text())
        if self.index.get("format") != SHARD_FORMAT:
            raise ValueError(f"{self.root / SHARD_INDEX}: not an ss4d shard index")
        self._fds: dict[int, int] = {}

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)

    def read(self, clip_id: str, member: str) -> bytes:
        """The bytes of one member of a clip (``KeyError`` when the clip or member is absent)."""
        entry = self.index["clips"][clip_id]
        offset, size = entry["members"][member]
        shard = entry["shard"]
        if shard not in self._fds:
            self._fds[shard] = os.open(self.root / self.index["shards"][shard], os.O_RDONLY)
        return os.pread(self._fds[shard], size, offset)

    def _npz(self, clip_id: str, member: str):
        return io.BytesIO(self.read(clip_id, member))

    def clip_records(self) -> list[dict]:
        return [json.loads(self.read(c, ShardMembers.record)) for c in sorted(self.index["clips"])]

    def load_voxels(self, clip_id, t):
        from .voxelize import load_voxels

        return load_voxels(self._npz(clip_id, ShardMembers.voxel_frame(t)))

    def load_features(self, clip_id, feature_set, t):
        from .layout import load_feature_frame

        return load_feature_frame(self._npz(clip_id, ShardMembers.features(feature_set, t)))

    def load_ss_latent(self, clip_id, encoder, t):
        from .layout import load_ss_latent_frame

        return load_ss_latent_frame(self._npz(clip_id, ShardMembers.ss_latent(encoder, t)))

    def load_slat_latent(self, clip_id, latent_set, t):
        from .layout import load_slat_latent_frame

        return load_slat_latent_frame(self._npz(clip_id, ShardMembers.latent(latent_set, t)))

    def _images(self, clip_id: str, transforms: str, member) -> tuple[np.ndarray, list]:
        from .cameras import cameras_from_transforms

        cams, files = cameras_from_transforms(json.loads(self.read(clip_id, transforms)))
        return decode_rgba([io.BytesIO(self.read(clip_id, member(f))) for f in files]), cams

    def load_views(self, clip_id, t):
        return self._images(clip_id, ShardMembers.render_transforms(t), lambda f: ShardMembers.render_file(t, f))

    def load_cond(self, clip_id):
        return self._images(clip_id, ShardMembers.cond_transforms, ShardMembers.cond_file)

    def latent_stats(self, name):
        return self.index["latent_stats"][name]


def iter_clip_samples(root: Path | None = None, urls: list[str] | None = None) -> Iterator[dict]:
    """Stream the clips of a shard folder (or of ``urls``, e.g. object-storage pipes) in order with
    ``webdataset``: dicts ``{"__key__": clip_id, "__url__": shard, <member name>: bytes}``."""
    import webdataset as wds

    if urls is None:
        index = json.loads((Path(root) / SHARD_INDEX).read_text())
        urls = [str(Path(root) / s) for s in index["shards"]]
    yield from wds.WebDataset(urls, shardshuffle=False, empty_check=False)


# ------------------------------------------------------------------------------------ CLI
def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 1G, 1000000)") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ss4d-pack-dataset",
                                description="Pack a dataset folder built by ss4d-build-dataset into WebDataset "
                                            "tar shards with an index (docs/data.md, 'Shards').")
    p.add_argument("dataset", help="dataset folder (with clips/)")
    p.add_argument("-o", "--output", required=True, help="shard folder to write (replaced if it holds shards)")
    p.add_argument("--shard-size", type=_size, default=DEFAULT_SHARD_BYTES,
                   help="bytes per shard before the next one starts (default 1G)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        index = pack_dataset(Path(a.dataset), Path(a.output), a.shard_size, progress=not a.no_progress)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"ss4d-pack-dataset: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"packed {len(index['clips'])} clips into {len(index['shards'])} shards -> {a.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
