#!/usr/bin/env python
"""Where a structure stage loses shape: silhouette IoU of sampled structures against the dataset's voxels.

    python scripts/train/structure_iou.py DATA (--model FOLDER | --flow-run RUN --vae-run RUN|FOLDER)
                                          [--clips N] [--cfg 3] [--steps 25] [--seed 42] [--threshold 0]

For ``N`` training clips (drawn with a fixed seed) and every held-out clip (``--val-clips``, default the small
model's), each of the clip's first 8 frames is generated from the clip's conditioning video (the front camera,
as the trainers see it; ``--seed`` noise) and compared with the ground-truth voxels: IoU of the three axis projections
(silhouettes; robust to the one-voxel shifts that make a raw IoU of thin surface shells meaningless), averaged.
With ``--vae-run`` the SS VAE's reconstruction of the dataset latents is scored the same way: the ceiling any
flow on those latents can reach. Prints one line per clip and the means; nothing is written.

``--threshold`` moves the decoder's occupancy rule (the pipelines' is logit > 0) for both the samples and the
reconstruction: with the voxel counts on each line it tells whether a stage loses shape by leaving voxels out
(a lower threshold recovers them) or by putting them in the wrong place (it does not).

* ``--model FOLDER``: a pipeline folder (its structure flow, decoder and condition encoder);
* ``--flow-run RUN``: an ``ss4d-train`` structure-flow run (EMA weights of its last checkpoint, the condition
  encoder of its config, or the one it trained), decoded by ``--vae-run`` (an ``ss_vae`` run or a pipeline folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ss4d.data.layout import open_dataset  # noqa: E402
from ss4d.models.ss_vae_4d import decode_frames  # noqa: E402
from ss4d.training.cond_encoder import encoder_source, load_encoder  # noqa: E402
from ss4d.training.data import Window, conditioning_frames  # noqa: E402
from ss4d.training.export import CFG_INTERVAL, RESCALE_T, load_run_models  # noqa: E402
from ss4d.training.masking import MaskConfig  # noqa: E402
from trellis_ext.pipelines.samplers.flow_euler import FlowEulerGuidanceIntervalSampler  # noqa: E402

FRAMES = 8                       # frames scored per clip (the small model's clips have 8)
SS_ENCODER = "ss_enc_conv3d"     # the SS latent set the trainers use (dataset.ss_encoder of the configs)
SMALL_MODEL_VAL_CLIPS = ["QuaterniusRobot__12-Robot_Wave", "Fox__2-Run", "MorphStressTest__1-Pulse"]
SIGMA_MIN = 1e-5
OCCUPIED_LOGIT = 0.0             # the pipelines' rule: a voxel is occupied where the decoder's logit is above this


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of the three axis projections of two boolean grids [R, R, R]."""
    ious = []
    for axis in range(3):
        pa, pb = a.any(axis=axis), b.any(axis=axis)
        ious.append((pa & pb).sum() / max(1, (pa | pb).sum()))
    return float(np.mean(ious))


def load_stage(args):
    """(structure flow, structure decoder, condition encoder)."""
    if args.model:
        from ss4d import Pipeline

        pipe = Pipeline.from_pretrained(args.model, device="cpu")
        return (pipe.models["sparse_structure_flow_model"], pipe.models["sparse_structure_decoder"],
                pipe.image_cond_model)
    _, models, _ = load_run_models(Path(args.flow_run))
    conditioning = json.loads((Path(args.flow_run) / "config.json").read_text())["conditioning"]
    encoder = load_encoder(encoder_source(Path(args.flow_run), conditioning))   # trained by the run, if it did
    if (Path(args.vae_run) / "pipeline.json").is_file():
        from ss4d import Pipeline

        decoder = Pipeline.from_pretrained(args.vae_run, device="cpu").models["sparse_structure_decoder"]
    else:
        _, vae, _ = load_run_models(Path(args.vae_run))
        decoder = vae["decoder"]
    return models["denoiser"], decoder, encoder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="an ss4d-build-dataset folder with SS latents")
    ap.add_argument("--model", help="a pipeline folder")
    ap.add_argument("--flow-run", help="an ss_flow training run")
    ap.add_argument("--vae-run", help="the ss_vae run (or a pipeline folder) whose decoder reads the flow's latents")
    ap.add_argument("--clips", type=int, default=4, help="training clips drawn (default 4)")
    ap.add_argument("--val-clips", nargs="*", default=SMALL_MODEL_VAL_CLIPS, help="held-out clip ids")
    ap.add_argument("--cfg", type=float, default=3.0, help="guidance strength (default 3, the small model's)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threshold", type=float, default=OCCUPIED_LOGIT,
                    help=f"occupied where the decoder's logit > this (default {OCCUPIED_LOGIT:g}, the pipelines' rule)")
    args = ap.parse_args()
    if bool(args.model) == bool(args.flow_run) or (args.flow_run and not args.vae_run):
        ap.error("give --model FOLDER, or --flow-run RUN with --vae-run")
    flow, decoder, encoder = load_stage(args)
    reader = open_dataset(args.data)
    ok = [r["clip_id"] for r in reader.clip_records() if r.get("status") == "ok"]
    train = sorted(c for c in ok if c not in args.val_clips)
    rng = np.random.default_rng(0)
    clips = list(rng.choice(train, min(args.clips, len(train)), replace=False)) + [c for c in args.val_clips if c in ok]
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=SIGMA_MIN)
    scores = {"train": [], "held out": [], "vae": []}
    for clip in clips:
        frames = list(range(FRAMES))
        voxels = [reader.load_voxels(clip, t) for t in frames]      # (indices [N, 3], grid resolution)
        truth = np.zeros((FRAMES,) + (voxels[0][1],) * 3, bool)
        for t, (idx, _) in enumerate(voxels):
            truth[t][tuple(idx.T)] = True
        latents = torch.from_numpy(np.stack([reader.load_ss_latent(clip, SS_ENCODER, t) for t in frames]))
        with torch.no_grad():
            images = conditioning_frames(reader, Window(clip, frames), "cond", MaskConfig(), rng, augment=False)
            cond = encoder.encode(images).float()
            torch.manual_seed(args.seed)
            out = sampler.sample(flow, torch.randn(latents.shape), cond, neg_cond=torch.zeros_like(cond),
                                 num_frames=FRAMES, steps=args.steps, cfg_strength=args.cfg,
                                 cfg_interval=CFG_INTERVAL, rescale_t=RESCALE_T, keep_trajectory=False)
            generated = (decode_frames(decoder, out.samples[None])[0][:, 0] > args.threshold).numpy()
            recon = None if args.model else (decode_frames(decoder, latents[None])[0][:, 0] > args.threshold).numpy()
        gen = float(np.mean([silhouette_iou(generated[t], truth[t]) for t in frames]))
        group = "held out" if clip in args.val_clips else "train"
        scores[group].append(gen)
        line = f"{group:8s} {clip:45s} generated {gen:.3f}"
        if recon is not None:
            scores["vae"].append(float(np.mean([silhouette_iou(recon[t], truth[t]) for t in frames])))
            line += f"  VAE reconstruction {scores['vae'][-1]:.3f}"
        print(line + f"  voxels/frame {truth.sum() / FRAMES:.0f} truth, {generated.sum() / FRAMES:.0f} generated",
              flush=True)
    print("mean: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items() if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
