"""``ss4d-eval images``: score a folder of predicted image sequences against ground truth.

Both folders follow :mod:`ss4d.evaluation.sequences`' layout; views are matched by name and must
hold the same frame numbers at one image size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .scoring import Evaluator, summarize
from .sequences import CONSISTENT4D_VIEW_GLOB, list_views, read_view

__all__ = ["score_folders", "LAYOUTS"]

LAYOUTS = {"folders": "*", "consistent4d": CONSISTENT4D_VIEW_GLOB}


def score_folders(pred_dir: str | Path, gt_dir: str | Path, evaluator: Evaluator, layout: str = "folders") -> dict:
    """The :func:`~ss4d.evaluation.scoring.summarize` dict of ``pred_dir`` against ``gt_dir``."""
    glob = LAYOUTS[layout]
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
    summary = summarize(scores, evaluator)
    summary["inputs"] = {"prediction": str(pred_dir), "ground_truth": str(gt_dir), "layout": layout,
                         "crop": evaluator.crop, "background": list(evaluator.background)}
    return summary


def _span(frames: list[int]) -> str:
    return f"{frames[0]}..{frames[-1]}" if frames else "(none)"
