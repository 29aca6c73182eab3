"""Scoring a generated 4D output (an ``ss4d-generate`` folder) against a dataset sample.

The sample is one clip of a dataset built by ``ss4d-build-dataset`` (read through
:class:`ss4d.data.layout.FolderDataset`): its ground-truth views ``renders/<t>/`` with their cameras
(``transforms.json``), its conditioning camera (``cond/transforms.json``) and its voxels. The
output's Gaussians of frame ``i`` are rendered at every ground-truth camera of frame
``source_frames[i]`` (``result.json``: the input frames the generator used; frame ``i`` when absent)
through the alignment of :mod:`ss4d.evaluation.alignment`, then scored view by view
(:class:`ss4d.evaluation.scoring.Evaluator`). Geometry: the Chamfer distance between the output's
voxel centres (``coords/``, aligned) and the sample's voxel centres, per frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..data.layout import CLIPS_DIR, CLIP_RECORD, FolderDataset
from ..data.voxelize import voxel_centers
from ..errors import InputError
from .alignment import aligned_camera, input_alignment, transform_points
from .metrics import chamfer_distance
from .scoring import Evaluator, ViewScores, summarize

__all__ = ["GeneratedOutput", "read_output", "open_sample", "render_views", "score_asset", "AssetScore",
           "RESULT_FILE", "GAUSSIANS_DIR", "COORDS_DIR"]

RESULT_FILE = "result.json"
GAUSSIANS_DIR = "gaussians"
COORDS_DIR = "coords"


@dataclass
class GeneratedOutput:
    """An ``ss4d-generate`` output folder: per-frame PLY and voxel files, and the input frame numbers."""

    root: Path
    ply_files: list[Path]
    coord_files: list[Path]
    resolution: int
    source_frames: list[int]
    random_weights: bool

    @property
    def num_frames(self) -> int:
        return len(self.ply_files)


def read_output(path: str | Path) -> GeneratedOutput:
    """Check and index an ``ss4d-generate`` output folder (:class:`InputError` if it is not one)."""
    from ..export import frame_name

    root = Path(path)
    hint = "pass the folder that ss4d-generate wrote (result.json + gaussians/frame_000.ply ...)"
    if not (root / RESULT_FILE).is_file():
        raise InputError(f"{root} is not an ss4d output folder (no {RESULT_FILE})", hint)
    try:
        result = json.loads((root / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{root / RESULT_FILE} is not readable JSON ({exc})", hint) from None
    n = int(result.get("num_frames") or 0)
    plys = [root / GAUSSIANS_DIR / frame_name(t, "ply") for t in range(n)]
    missing = [p.name for p in plys if not p.is_file()]
    if n < 1 or missing:
        raise InputError(f"{root} is not a complete ss4d output (num_frames {n}, missing {missing[:3]})", hint)
    coords = [root / COORDS_DIR / frame_name(t, "npz") for t in range(n)]
    source = result.get("input", {}).get("source_frames") or list(range(n))
    return GeneratedOutput(root, plys, coords if all(p.is_file() for p in coords) else [],
                           int(result.get("resolution") or 64), [int(s) for s in source[:n]],
                           bool(result.get("model", {}).get("random_weights", False)))


def open_sample(sample: str | Path, clip_id: Optional[str] = None) -> tuple[FolderDataset, dict]:
    """(dataset, clip record) of ``sample``: a clip folder ``<dataset>/clips/<id>``, or a dataset folder
    with ``clip_id`` (or holding exactly one clip)."""
    p = Path(sample)
    if (p / CLIP_RECORD).is_file() and p.parent.name == CLIPS_DIR:
        ds, clip_id = FolderDataset(p.parent.parent), p.name
    else:
        ds = FolderDataset(p)
    records = {r["clip_id"]: r for r in ds.clip_records()}
    if not records:
        raise InputError(f"{p} is not a dataset sample (no {CLIPS_DIR}/*/{CLIP_RECORD})",
                         "pass a clip folder of a dataset built by ss4d-build-dataset")
    if clip_id is None:
        if len(records) != 1:
            raise InputError(f"{p} holds {len(records)} clips", f"choose one with --clip ({', '.join(sorted(records))})")
        clip_id = next(iter(records))
    if clip_id not in records:
        raise InputError(f"clip {clip_id!r} is not in {p}", f"choose one of {', '.join(sorted(records))}")
    return ds, records[clip_id]


def _load_gaussians(path: Path, device: torch.device):
    from trellis_ext.representations.gaussian import load_ply

    return load_ply(path, device=device)


def _to_float_rgba(rgba_u8: np.ndarray, size: Optional[int]) -> np.ndarray:
    """uint8 [V, H, W, 4] -> float32 [V, s, s, 4] (straight alpha; resized on premultiplied colour)."""
    x = torch.from_numpy(rgba_u8).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and size != x.shape[-1]:
        a = x[:, 3:4]
        rgb = torch.nn.functional.interpolate(x[:, :3] * a, size=(size, size), mode="area")
        a = torch.nn.functional.interpolate(a, size=(size, size), mode="area")
        x = torch.cat([rgb / a.clamp_min(1e-6) * (a > 0), a], 1)
    return x.permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def render_views(gaussians, cameras, alignment: np.ndarray, size: int, device: torch.device) -> np.ndarray:
    """Straight-alpha RGBA float32 [V, size, size, 4] of ``gaussians`` (model frame) at ground-truth cameras."""
    from trellis_ext.renderers import render_gaussians

    out = []
    for cam in cameras:
        c = aligned_camera(cam, alignment).resized(size, size).to_camera().to(device)
        r = render_gaussians(gaussians, c, bg_color=(0.0, 0.0, 0.0))
        a = r.alpha.clamp(0, 1)
        rgb = (r.rgb / a.clamp_min(1e-6)).clamp(0, 1) * (a > 0)
        out.append(torch.cat([rgb, a], 0).permute(1, 2, 0).cpu().numpy())
    return np.stack(out).astype(np.float32)


@dataclass
class AssetScore:
    """The summary (JSON-ready), the per-view scores (for pooling FVD), and sample images for a sheet:
    ``frames[(t, v)] = (pred uint8 [H, W, 3], gt uint8 [H, W, 3])`` over white."""

    summary: dict
    views: dict[str, ViewScores]
    frames: dict


def _to_u8(rgba: np.ndarray) -> np.ndarray:
    return (np.clip(rgba, 0, 1) * 255).round().astype(np.uint8)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    return (np.clip(rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]), 0, 1) * 255).round().astype(np.uint8)


def score_asset(output: GeneratedOutput, dataset: FolderDataset, record: dict, evaluator: Evaluator,
                views: Optional[int] = None, resolution: Optional[int] = None, alignment: str = "input-view",
                device: str | torch.device = "cpu", keep_frames: tuple[int, ...] = (),
                progress: Optional[Callable[[], None]] = None) -> AssetScore:
    """Render ``output`` at the sample's ground-truth cameras and score it (see the module docstring).

    ``views``: the first N ground-truth views (default all); ``resolution``: render / compare size
    (default the ground truth's); ``keep_frames``: view indices whose images are kept for a sheet.
    """
    device = torch.device(device)
    clip_id = record["clip_id"]
    n_gt = int(record.get("num_frames") or 0)
    bad = [t for t in output.source_frames if not 0 <= t < n_gt]
    if bad:
        raise InputError(f"the output uses input frames {bad[:3]}, the sample {clip_id} has {n_gt} frames",
                         "generate from this sample's conditioning video (cond/)")
    cond_rgba, cond_cams = dataset.load_cond(clip_id)
    align = input_alignment(cond_cams[0], alignment)
    pred_views: dict[int, list] = {}
    gt_views: dict[int, list] = {}
    chamfer = []
    frames = {}
    size = None
    for i, t in enumerate(output.source_frames):
        rgba, cams = dataset.load_views(clip_id, t)
        if views is not None:
            if views > len(cams):
                raise InputError(f"--views {views}: the sample has {len(cams)} views", f"use --views <= {len(cams)}")
            rgba, cams = rgba[:views], cams[:views]
        size = resolution or int(rgba.shape[1])
        gt = _to_float_rgba(rgba, size)
        g = _load_gaussians(output.ply_files[i], device)
        pred = render_views(g, cams, align, size, device)
        for v in range(len(cams)):  # kept as uint8 (8-bit images, like saved renders): 4x less memory
            pred_views.setdefault(v, []).append(_to_u8(pred[v]))
            gt_views.setdefault(v, []).append(_to_u8(gt[v]))
            if v in keep_frames:
                frames[(i, v)] = (_over_white(pred[v]), _over_white(gt[v]))
        if output.coord_files:
            from ..export import load_coords

            pts = transform_points(voxel_centers(load_coords(output.coord_files[i]), output.resolution), align)
            gt_idx, gt_res = dataset.load_voxels(clip_id, t)
            if len(pts) and len(gt_idx):
                chamfer.append(float(chamfer_distance(torch.from_numpy(pts), torch.from_numpy(
                    voxel_centers(gt_idx, gt_res).astype(np.float64)))))
        if progress is not None:
            progress()
    scores = {}
    for v in pred_views:
        scores[f"{v:03d}"] = evaluator.score_view(np.stack(pred_views[v]).astype(np.float32) / 255.0,
                                                  np.stack(gt_views[v]).astype(np.float32) / 255.0, name=f"{v:03d}")
    extra = {"chamfer": {"value": float(np.mean(chamfer)) if chamfer else None, "per_frame": chamfer,
                         "reason": None if chamfer else "the output has no coords/ voxels"}}
    summary = summarize(scores, evaluator, extra)
    summary["chamfer_per_frame"] = chamfer
    summary["sample"] = {"clip_id": clip_id, "frames": output.source_frames, "views": len(pred_views),
                         "resolution": size, "alignment": alignment, "alignment_matrix": align.tolist(),
                         "cond_frames": int(cond_rgba.shape[0])}
    summary["output"] = {"path": str(output.root), "random_weights": output.random_weights}
    return AssetScore(summary, scores, frames)
