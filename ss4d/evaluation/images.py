"""``ss4d-eval images``: score a folder of predicted image sequences against ground truth.

Both folders follow :mod:`ss4d.evaluation.sequences`' layout; views are matched by name and must
hold the same frame numbers at one image size. With the Consistent4D layout the folders may also
hold several objects (``<root>/<object>/eval_*``): each object is scored, the overall value of a
metric is the mean over objects, and FVD is pooled over every (object, view) clip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .scoring import Evaluator, ViewScores, aggregate, summarize
from .sequences import CONSISTENT4D_VIEW_GLOB, list_views, read_view

__all__ = ["score_folders", "score_consistent4d", "LAYOUTS"]

LAYOUTS = {"folders": "*", "consistent4d": CONSISTENT4D_VIEW_GLOB}


def score_folders(pred_dir: str | Path, gt_dir: str | Path, evaluator: Evaluator, layout: str = "folders") -> dict:
    """The :func:`~ss4d.evaluation.scoring.summarize` dict of ``pred_dir`` against ``gt_dir``."""
    scores = _score_views(pred_dir, gt_dir, evaluator, LAYOUTS[layout])
    summary = summarize(scores, evaluator)
    summary["inputs"] = {"prediction": str(pred_dir), "ground_truth": str(gt_dir), "layout": layout,
                         "crop": evaluator.crop, "background": list(evaluator.background)}
    return summary


def score_consistent4d(pred_root: str | Path, gt_root: str | Path, evaluator: Evaluator) -> dict:
    """Every object of a Consistent4D-style root (or one object folder): ``{"objects": {name: summary},
    "metrics": overall}`` (means over objects, FVD pooled over all object views)."""
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    if any(gt_root.glob(CONSISTENT4D_VIEW_GLOB)):
        objects = {gt_root.name: (pred_root, gt_root)}
    else:
        objects = {p.name: (pred_root / p.name, p) for p in sorted(gt_root.iterdir())
                   if p.is_dir() and any(p.glob(CONSISTENT4D_VIEW_GLOB))}
    if not objects:
        raise InputError(f"{gt_root} holds no Consistent4D object (<object>/{CONSISTENT4D_VIEW_GLOB}/<frame>.png)",
                         "pass the test set's root or one object folder")
    missing = [name for name, (p, _) in objects.items() if not p.is_dir()]
    if missing:
        raise InputError(f"the prediction has no folder for object(s) {', '.join(missing)} in {pred_root}",
                         "render every test object, or pass one object folder")
    per_object, pooled = {}, {}
    for name, (p, g) in objects.items():
        scores = _score_views(p, g, evaluator, CONSISTENT4D_VIEW_GLOB)
        per_object[name] = summarize(scores, evaluator)
        pooled.update({f"{name}/{v}": s for v, s in scores.items()})
    return {"metrics": aggregate(per_object, pooled, evaluator), "objects": per_object,
            "inputs": {"prediction": str(pred_root), "ground_truth": str(gt_root), "layout": "consistent4d",
                       "crop": evaluator.crop, "background": list(evaluator.background)}}


def _score_views(pred_dir, gt_dir, evaluator: Evaluator, glob: str) -> dict[str, ViewScores]:
    pred_views, gt_views = list_views(pred_dir, glob), list_views(gt_dir, glob)
    missing = sorted(set(gt_views) - set(pred_views))
    extra = sorted(set(pred_views) - set(gt_views))
    if missing or extra:
        raise InputError(f"the views differ: missing in the prediction {missing or '-'}, not in the ground truth "
                         f"{extra or '-'}", "give both folders the same view folders")
    scores = {}
    for name in sorted(gt_views):
        pred, gt = read_view(pred_views[name], name), read_view(gt_views[name], name)
        if pred.frames != gt.frames:
            raise InputError(f"view {name}: the frames differ (prediction {len(pred.frames)} frames "
                             f"{_span(pred.frames)}, ground truth {len(gt.frames)} frames {_span(gt.frames)})",
                             "give both sides the same frame numbers")
        scores[name] = evaluator.score_view(pred.rgba.astype(np.float32) / 255.0, gt.rgba.astype(np.float32) / 255.0,
                                            pred_alpha=pred.has_alpha, gt_alpha=gt.has_alpha, name=name)
    return scores


def _span(frames: list[int]) -> str:
    return f"{frames[0]}..{frames[-1]}" if frames else "(none)"
