#!/usr/bin/env python
"""Where a pipeline loses shape after the structure: silhouette IoU at the dataset's rendered views, per stage.

    python scripts/train/stage_iou.py DATA [--model FOLDER] [--clips N] [--feature-set NAME] [--view-step K]
                                      [--seed 42]

For ``N`` training clips (drawn with a fixed seed) and every held-out clip (``--val-clips``, default the small
model's), the clip's first 8 frames are turned into Gaussians three ways and rendered at every ``K``-th of the
dataset's views of each frame; each render's silhouette (alpha > 0.5, the benchmark's rule,
:func:`ss4d.evaluation.metrics.silhouette_iou`) is compared with the ground-truth render's:

* ``vae``: the 4D SLat VAE's reconstruction (``ckpts/slat_enc_4d`` of the folder, when it has one) of the clip's
  features (``--feature-set``) on their voxels: the ceiling of the Gaussian stages;
* ``flow on true voxels``: the SLat flow sampled on those voxels (the conditioning video, ``--seed`` noise, the
  folder's sampler settings), decoded: the Gaussian stages alone, given a perfect structure;
* ``pipeline``: the whole pipeline on the conditioning video (``Pipeline.run``, seed ``--seed``).

The gap between the last two is what the structure stage costs (``structure_iou.py`` looks into that stage).
Prints one line per clip and the means; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ss4d.data.layout import open_dataset  # noqa: E402
from ss4d.evaluation.metrics import silhouette_iou  # noqa: E402
from ss4d.frames import fold_sparse_frames  # noqa: E402
from trellis_ext.renderers import render_gaussians  # noqa: E402
from trellis_ext.sparse import SparseTensor  # noqa: E402

FRAMES = 8                                          # frames scored per clip (the small model's clips have 8)
#: the small model's SLat VAE config: its feature set and held-out clips are the defaults
SMALL_MODEL_DATASET = json.loads((REPO / "configs" / "train" / "small" / "slat_vae_3d.json").read_text())["dataset"]
FEATURE_SET = SMALL_MODEL_DATASET["feature_set"]
SMALL_MODEL_VAL_CLIPS = SMALL_MODEL_DATASET["val_clips"]
SLAT_ENCODER = "ckpts/slat_enc_4d"                  # the trained 4D SLat encoder a pipeline folder may carry
MODES = ("vae", "flow on true voxels", "pipeline")


def view_iou(gaussians: Sequence, reader, clip: str, frames: Sequence[int], view_step: int = 1) -> float:
    """Mean silhouette IoU of ``gaussians[i]`` (frame ``frames[i]``) rendered at every ``view_step``-th view of
    that frame against the dataset's render of it."""
    scores = []
    for g, t in zip(gaussians, frames):
        rgba, cameras = reader.load_views(clip, t)
        for v in range(0, len(cameras), view_step):
            alpha = render_gaussians(g, cameras[v].to_camera(), bg_color=torch.zeros(3)).alpha
            truth = torch.from_numpy(rgba[v][..., 3].astype(np.float32) / 255.0)[None]
            scores.append(float(silhouette_iou(alpha.float().cpu(), truth)[0]))
    return float(np.mean(scores))


def true_voxels(reader, clip: str, frames: Sequence[int], feature_set: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's feature voxels and features, folded: (coords [N, 4] int32 as (t, x, y, z), feats [N, C])."""
    coords, feats = [], []
    for t in frames:
        c, f = reader.load_features(clip, feature_set, t)
        coords.append(torch.from_numpy(np.asarray(c)))
        feats.append(torch.from_numpy(np.asarray(f, dtype=np.float32)))
    return fold_sparse_frames([coords], [feats])


@torch.no_grad()
def score_clip(pipe, encoder, reader, clip: str, feature_set: str, seed: int, view_step: int) -> dict:
    frames = list(range(FRAMES))
    video, _ = reader.load_cond(clip)
    video = [video[t] for t in frames]
    coords, feats = true_voxels(reader, clip, frames, feature_set)
    out = {}
    if encoder is not None:
        z = encoder(SparseTensor(feats, coords.int()), num_frames=FRAMES, sample_posterior=False)
        out["vae"] = view_iou(pipe.decode_slat(z, FRAMES), reader, clip, frames, view_step)
    images, _ = pipe.preprocess(video)
    cond = pipe.encode_frames(images)
    torch.manual_seed(seed)
    noise = SparseTensor(torch.randn(len(coords), pipe.models["slat_flow_model"].in_channels), coords.int())
    slat, _ = pipe.sample_slat(cond, torch.zeros_like(cond), noise, FRAMES, **pipe.slat_params)
    out["flow on true voxels"] = view_iou(pipe.decode_slat(slat, FRAMES), reader, clip, frames, view_step)
    result = pipe.run(images, seed=seed, progress=False, preprocess_image=False)   # the frames preprocessed above
    out["pipeline"] = view_iou(result.gaussians, reader, clip, frames, view_step)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="an ss4d-build-dataset folder with renders, features and the conditioning video")
    ap.add_argument("--model", default=str(REPO / "checkpoints" / "ss4d-small"), help="a pipeline folder")
    ap.add_argument("--clips", type=int, default=0, help="training clips drawn (default 0)")
    ap.add_argument("--val-clips", nargs="*", default=SMALL_MODEL_VAL_CLIPS, help="held-out clip ids")
    ap.add_argument("--feature-set", default=FEATURE_SET, help=f"the SLat VAE's feature set (default {FEATURE_SET})")
    ap.add_argument("--view-step", type=int, default=2, help="score every K-th view of a frame (default 2)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.view_step < 1 or args.clips < 0:
        ap.error("--view-step must be >= 1 and --clips >= 0")

    import ss4d.models  # noqa: F401  (registers the 4D classes)
    from ss4d import Pipeline
    from ss4d.errors import InputError
    from trellis_ext.models.checkpoint import from_pretrained

    try:
        reader = open_dataset(args.data)
        pipe = Pipeline.from_pretrained(args.model, device="cpu")
    except (InputError, OSError) as e:
        ap.error(str(e))
    enc_path = Path(args.model) / SLAT_ENCODER
    encoder = from_pretrained(str(enc_path)).eval() if enc_path.with_suffix(".json").is_file() else None
    if encoder is None:
        print(f"no {SLAT_ENCODER} in {args.model}: the 'vae' column is skipped", flush=True)
    ok = [r["clip_id"] for r in reader.clip_records() if r.get("status") == "ok"]
    if not any(c in ok for c in args.val_clips) and args.clips < 1:
        ap.error(f"none of the held-out clips {args.val_clips} is in {args.data}; name some with --val-clips "
                 "or draw training clips with --clips N")
    train = sorted(c for c in ok if c not in args.val_clips)
    rng = np.random.default_rng(0)
    clips = list(rng.choice(train, min(args.clips, len(train)), replace=False)) + [c for c in args.val_clips if c in ok]
    try:                                # checked before any work: the feature set is on disk
        reader.load_features(clips[0], args.feature_set, 0)
    except OSError:
        ap.error(f"{args.data} has no feature set {args.feature_set!r} for {clips[0]}; name the set the SLat VAE was "
                 "trained on with --feature-set (docs/data.md)")
    scores = {"train": {m: [] for m in MODES}, "held out": {m: [] for m in MODES}}
    for clip in clips:
        group = "held out" if clip in args.val_clips else "train"
        s = score_clip(pipe, encoder, reader, clip, args.feature_set, args.seed, args.view_step)
        for m, v in s.items():
            scores[group][m].append(v)
        print(f"{group:8s} {clip:45s} " + "  ".join(f"{m} {v:.3f}" for m, v in s.items()), flush=True)
    for group, by_mode in scores.items():
        if any(by_mode.values()):
            print(f"mean {group}: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in by_mode.items() if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
