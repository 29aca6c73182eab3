"""Fingerprints of a model folder's output on a fixed input, stored beside the weights (``reference.json``)
so that a test catches an accidental change of the weights or of the code path.

``reference.json``::

    {"input": "assets/dancing_robot_fg.mp4", "start": 0, "stride": 4, "frames": 4, "seed": 0, "steps": 4,
     "fingerprint": {"voxels_per_frame": [...], "xyz_mean": [[x, y, z] per frame], "rgb_mean": [...],
                     "opacity_mean": [...], "scale_mean": [...]}}

The input path is relative to the repository root; every generation parameter is in the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

__all__ = ["fingerprint", "generate_fingerprint", "write_reference", "REFERENCE_FILE", "DEFAULT_INPUT"]

REPO = Path(__file__).resolve().parents[1]
REFERENCE_FILE = "reference.json"
DEFAULT_INPUT = {"input": "assets/dancing_robot_fg.mp4", "start": 0, "stride": 4, "frames": 4, "seed": 0,
                 "steps": 4}
DIGITS = 6   # decimals kept in the stored means


def fingerprint(result) -> Dict[str, Any]:
    """Per-frame summaries of a :class:`~ss4d.pipeline.PipelineResult` (float means rounded to DIGITS)."""
    def means(values):
        return [[round(float(v), DIGITS) for v in row] for row in values]

    return {"voxels_per_frame": list(result.voxels_per_frame),
            "xyz_mean": means(g.get_xyz.mean(0) for g in result.gaussians),
            "rgb_mean": means(g.get_features.reshape(g.get_features.shape[0], -1).mean(0) for g in result.gaussians),
            "opacity_mean": means(g.get_opacity.mean(0) for g in result.gaussians),
            "scale_mean": means(g.get_scaling.mean(0) for g in result.gaussians)}


def generate_fingerprint(model: str | Path, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run ``model`` on CPU (fp32) on the input ``spec`` describes and fingerprint the result."""
    from .io.video import FrameSelection, read_frames
    from .pipeline import Pipeline

    clip = read_frames(REPO / spec["input"], FrameSelection(start=spec["start"], stride=spec["stride"],
                                                            num_frames=spec["frames"]))
    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    result = pipe.run(list(clip.frames), seed=spec["seed"], num_steps=spec["steps"], progress=False)
    return fingerprint(result)


def write_reference(model: str | Path, spec: Dict[str, Any] = DEFAULT_INPUT) -> Path:
    """Generate and store ``model/reference.json`` (atomically)."""
    from trellis_ext.atomic import atomic_file

    out = Path(model) / REFERENCE_FILE
    with atomic_file(str(out), "w") as f:
        json.dump({**spec, "fingerprint": generate_fingerprint(model, spec)}, f, indent=1)
    return out
