"""Scoring predicted against ground-truth image sequences: per frame, per view, pooled.

Input per view: ``pred`` and ``gt`` float arrays ``[T, H, W, 4]`` in [0, 1] (RGBA, straight alpha),
the same ``T`` and size. Images are composited over ``background`` (white by default, as the
Consistent4D protocol) before the image metrics. Optionally both are cropped to the ground truth's
box (``crop="gt-bbox"``: the union of the view's ground-truth alpha over all frames, squared and
widened by :data:`CROP_MARGIN`, padded with the background where it leaves the image) and
resized back to the ground truth's height, so every frame of a view keeps one camera (flicker, FVD).

Per frame: PSNR, SSIM, LPIPS-VGG, LPIPS-Alex, CLIP-S, silhouette IoU (when both sides carry alpha).
Per view: flicker of the prediction and of the ground truth (the view's fixed camera). Pooled over
views (and, in the benchmark, over assets): FVD, one I3D clip per view and side.

A metric whose network is missing is reported as ``null`` with the reason, never computed from
random weights; asking for it explicitly (``metrics=[...]``) raises :class:`MissingWeightsError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MissingWeightsError
from . import metrics as M

__all__ = ["METRICS", "HIGHER_IS_BETTER", "CROPS", "CROP_MARGIN", "DEFAULT_BACKGROUND", "Evaluator", "ViewScores",
           "summarize", "aggregate", "composite", "gt_bbox_crop"]

METRICS = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "clip", "iou", "flicker", "fvd")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips_vgg": False, "lpips_alex": False, "clip": True, "iou": True,
                    "flicker": False, "fvd": False, "chamfer": False}
PER_FRAME = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "clip", "iou")
NETWORK_METRICS = {"lpips_vgg": "vgg", "lpips_alex": "alex", "clip": "clip", "fvd": "i3d"}
CROPS = ("none", "gt-bbox")
CROP_MARGIN = 1.1  # box side = this x the longer side of the ground truth's alpha box
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)
DEFAULT_BATCH = 4  # frames per network batch


def composite(rgba: torch.Tensor, background: Sequence[float]) -> torch.Tensor:
    """``[N, 4, H, W]`` straight-alpha RGBA -> ``[N, 3, H, W]`` over ``background``."""
    bg = torch.tensor(background, dtype=rgba.dtype, device=rgba.device).view(1, 3, 1, 1)
    a = rgba[:, 3:4]
    return rgba[:, :3] * a + bg * (1.0 - a)


def gt_bbox_crop(pred: torch.Tensor, gt: torch.Tensor, gt_alpha: torch.Tensor, margin: float = CROP_MARGIN,
                 fill: Sequence[float] = DEFAULT_BACKGROUND, fill_pred_alpha: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``pred``/``gt`` ``[T, C, H, W]`` to the square box around the union of ``gt_alpha`` [T, H, W] > 0,
    widened by ``margin``, padded with ``fill`` (per channel; alpha padded with 0), resized to H x H."""
    mask = (gt_alpha > 0).any(0)
    if not mask.any():
        raise InputError("the ground truth's alpha is empty in every frame of a view; cannot crop to its box",
                         "check the ground-truth images, or use --crop none")
    h, w = mask.shape
    ys = torch.nonzero(mask.any(1)).flatten()
    xs = torch.nonzero(mask.any(0)).flatten()
    cy, cx = (float(ys[0]) + float(ys[-1]) + 1) / 2, (float(xs[0]) + float(xs[-1]) + 1) / 2
    half = max(float(ys[-1] - ys[0] + 1), float(xs[-1] - xs[0] + 1)) * margin / 2
    y0, x0 = int(math.floor(cy - half)), int(math.floor(cx - half))
    side = int(math.ceil(2 * half))
    pad = max(0, -y0, -x0, y0 + side - h, x0 + side - w)

    def crop(x: torch.Tensor) -> torch.Tensor:
        if pad:
            padded = []
            for c in range(x.shape[1]):
                value = float(fill[c]) if c < len(fill) else 0.0
                padded.append(F.pad(x[:, c:c + 1], (pad, pad, pad, pad), value=value))
            x = torch.cat(padded, 1)
        x = x[..., y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
        return F.interpolate(x, size=(h, h), mode="area") if side != h else x

    return crop(pred), crop(gt)


@dataclass
class ViewScores:
    """Scores of one view: per-frame lists, the view's flicker, its I3D features (None if not computed)."""

    per_frame: dict[str, list[float]] = field(default_factory=dict)
    flicker_pred: Optional[float] = None
    flicker_gt: Optional[float] = None
    i3d_pred: Optional[np.ndarray] = None
    i3d_gt: Optional[np.ndarray] = None

    def mean(self, metric: str) -> Optional[float]:
        vals = self.per_frame.get(metric)
        return float(np.mean(vals)) if vals else None


class Evaluator:
    """The metric networks plus the settings; :meth:`score_view` scores one view.

    Build it with :meth:`create`: ``metrics="auto"`` computes what the local weights allow and
    records why the rest is skipped; a list of metric names requires each of them.
    """

    def __init__(self, lpips: dict, clip, i3d, skipped: dict[str, str], device: torch.device,
                 background: Sequence[float] = DEFAULT_BACKGROUND, crop: str = "none", batch_size: int = DEFAULT_BATCH,
                 wanted: Sequence[str] = METRICS):
        if crop not in CROPS:
            raise InputError(f"unknown crop {crop!r}", f"use one of {', '.join(CROPS)}")
        self.lpips, self.clip, self.i3d = lpips, clip, i3d
        self.skipped = dict(skipped)
        self.device = torch.device(device)
        self.background = tuple(float(v) for v in background)
        self.crop = crop
        self.batch_size = batch_size
        self.wanted = tuple(wanted)

    @classmethod
    def create(cls, metrics: str | Sequence[str] = "auto", weights_folder=None, vgg_weights=None, alex_weights=None,
               clip_model=None, i3d_weights=None, device: str | torch.device = "cpu", **kwargs) -> "Evaluator":
        from .clip_score import load_clip_encoder
        from .fvd import load_i3d
        from .lpips import load_lpips

        required = metrics != "auto"
        wanted = METRICS if metrics == "auto" else tuple(metrics)
        unknown = [m for m in wanted if m not in METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)}", f"choose from {', '.join(METRICS)}")
        skipped = {m: "not requested" for m in METRICS if m not in wanted}
        loaders = {
            "lpips_vgg": lambda: load_lpips("vgg", vgg_weights, weights_folder=weights_folder, device=device),
            "lpips_alex": lambda: load_lpips("alex", alex_weights, weights_folder=weights_folder, device=device),
            "clip": lambda: load_clip_encoder(clip_model, weights_folder, device=device),
            "fvd": lambda: load_i3d(i3d_weights, weights_folder, device=device),
        }
        nets = {}
        for name, load in loaders.items():
            if name not in wanted:
                continue
            try:
                nets[name] = load()
            except MissingWeightsError as exc:
                if required:
                    raise
                skipped[name] = f"no weights: {exc.problem}"
        lpips = {net: nets[f"lpips_{net}"] for net in ("vgg", "alex") if f"lpips_{net}" in nets}
        return cls(lpips, nets.get("clip"), nets.get("fvd"), skipped, device, wanted=wanted, **kwargs)

    def active(self, metric: str) -> bool:
        return metric in self.wanted and metric not in self.skipped

    @torch.no_grad()
    def score_view(self, pred: np.ndarray, gt: np.ndarray, pred_alpha: bool = True, gt_alpha: bool = True,
                   name: str = "") -> ViewScores:
        """Score one view: ``pred``/``gt`` float32 [T, H, W, 4] in [0, 1] (straight alpha)."""
        where = f" (view {name})" if name else ""
        if pred.shape[0] != gt.shape[0]:
            raise InputError(f"frame counts differ{where}: prediction {pred.shape[0]}, ground truth {gt.shape[0]}",
                             "give both sides the same frames")
        if pred.shape[1:3] != gt.shape[1:3]:
            raise InputError(f"image sizes differ{where}: prediction {pred.shape[2]}x{pred.shape[1]}, ground truth "
                             f"{gt.shape[2]}x{gt.shape[1]}", "render the prediction at the ground truth's size")
        if gt_alpha and not (gt[..., 3] > 0).any():
            raise InputError(f"the ground truth's alpha is empty in every frame{where}",
                             "check the ground-truth images (RGBA with the object opaque)")
        p = torch.from_numpy(np.ascontiguousarray(pred)).permute(0, 3, 1, 2).float()
        g = torch.from_numpy(np.ascontiguousarray(gt)).permute(0, 3, 1, 2).float()
        if self.crop == "gt-bbox":
            if not gt_alpha:
                raise InputError(f"--crop gt-bbox needs ground-truth alpha{where}", "give RGBA ground truth")
            p, g = gt_bbox_crop(p, g, g[:, 3], fill=self.background + (0.0,))
        p_rgb, g_rgb = composite(p, self.background), composite(g, self.background)
        out = ViewScores()
        per = {m: [] for m in PER_FRAME if self.active(m)}
        if not (pred_alpha and gt_alpha):
            per.pop("iou", None)
        for i in range(0, p.shape[0], self.batch_size):
            pb = p_rgb[i:i + self.batch_size].to(self.device)
            gb = g_rgb[i:i + self.batch_size].to(self.device)
            vals = {}
            if "psnr" in per:
                vals["psnr"] = M.psnr(pb, gb)
            if "ssim" in per:
                vals["ssim"] = M.ssim(pb, gb)
            for net, model in self.lpips.items():
                vals[f"lpips_{net}"] = model(pb, gb)
            if "clip" in per and self.clip is not None:
                from .clip_score import clip_similarity

                vals["clip"] = clip_similarity(self.clip, pb, gb)
            if "iou" in per:
                vals["iou"] = M.silhouette_iou(p[i:i + self.batch_size, 3], g[i:i + self.batch_size, 3])
            for k, v in vals.items():
                per[k].extend(float(x) for x in v.float().cpu())
        out.per_frame = per
        if self.active("flicker") and p.shape[0] >= 2:
            out.flicker_pred = float(M.flicker(p_rgb))
            out.flicker_gt = float(M.flicker(g_rgb))
        if self.active("fvd") and self.i3d is not None:
            from .fvd import I3D_MIN_FRAMES, i3d_features

            if p.shape[0] >= I3D_MIN_FRAMES:
                out.i3d_pred = i3d_features(self.i3d, p_rgb[None])[0]
                out.i3d_gt = i3d_features(self.i3d, g_rgb[None])[0]
        return out


def summarize(views: dict[str, ViewScores], evaluator: Evaluator, extra: Optional[dict] = None) -> dict:
    """The JSON-ready summary: per metric ``{"value", "status", "reason", "higher_is_better"}``, the means
    per view and the per-frame values. ``extra`` adds metrics computed elsewhere (e.g. Chamfer),
    as ``{name: {"value": .., "per_frame": [..]}}``."""
    from .fvd import I3D_MIN_FRAMES

    num_frames = {len(next(iter(v.per_frame.values()), [])) for v in views.values()}
    result: dict = {}
    for m in METRICS:
        entry = {"value": None, "status": "skipped", "reason": None, "higher_is_better": HIGHER_IS_BETTER[m]}
        if m in evaluator.skipped:
            entry["reason"] = evaluator.skipped[m]
        elif m in PER_FRAME:
            vals = [x for v in views.values() for x in v.per_frame.get(m, [])]
            if vals:
                entry.update(value=float(np.mean(vals)), status="computed", count=len(vals))
            else:
                entry["reason"] = ("a side has no alpha channel (RGB images)" if m == "iou" else "no frames")
        elif m == "flicker":
            fp = [v.flicker_pred for v in views.values() if v.flicker_pred is not None]
            if fp:
                entry.update(value=float(np.mean(fp)), status="computed",
                             ground_truth=float(np.mean([v.flicker_gt for v in views.values()
                                                         if v.flicker_gt is not None])))
            else:
                entry["reason"] = "needs at least 2 frames per view"
        elif m == "fvd":
            feats = [(v.i3d_pred, v.i3d_gt) for v in views.values() if v.i3d_pred is not None]
            if len(feats) >= 2:
                entry.update(value=M.frechet_distance(np.stack([f[0] for f in feats]), np.stack([f[1] for f in feats])),
                             status="computed", clips=len(feats))
            elif not feats:
                entry["reason"] = f"needs clips of at least {I3D_MIN_FRAMES} frames"
            else:
                entry["reason"] = "needs at least 2 clips (views) per side for a covariance"
        result[m] = entry
    for name, e in (extra or {}).items():
        result[name] = {"value": e.get("value"), "status": "computed" if e.get("value") is not None else "skipped",
                        "reason": e.get("reason"), "higher_is_better": HIGHER_IS_BETTER.get(name, False)}
    per_view = {}
    for vname, v in views.items():
        per_view[vname] = {"means": {m: v.mean(m) for m in v.per_frame},
                           "flicker": {"prediction": v.flicker_pred, "ground_truth": v.flicker_gt},
                           "per_frame": v.per_frame}
    return {"metrics": result, "views": per_view, "num_views": len(views),
            "num_frames": sorted(num_frames)[0] if len(num_frames) == 1 else sorted(num_frames)}


def aggregate(per_item: dict[str, dict], pooled_views: dict[str, ViewScores], evaluator: Evaluator) -> dict:
    """Overall metrics of several summaries (assets, objects): the mean over items of each metric, and FVD
    pooled over every (item, view) clip in ``pooled_views`` (keys must be unique across items)."""
    pooled = summarize(pooled_views, evaluator)["metrics"] if pooled_views else {}
    names = list(dict.fromkeys(m for item in per_item.values() for m in item["metrics"]))
    out = {}
    for m in names:
        if m == "fvd" and pooled:
            out[m] = dict(pooled["fvd"])
            continue
        entries = [item["metrics"][m] for item in per_item.values() if m in item["metrics"]]
        vals = [e["value"] for e in entries if e["value"] is not None]
        entry = {"value": float(np.mean(vals)) if vals else None, "status": "computed" if vals else "skipped",
                 "reason": None if vals else next((e.get("reason") for e in entries if e.get("reason")), "no data"),
                 "higher_is_better": entries[0]["higher_is_better"], "items": len(vals)}
        gts = [e["ground_truth"] for e in entries if e.get("ground_truth") is not None]
        if gts:
            entry["ground_truth"] = float(np.mean(gts))
        out[m] = entry
    return out
