"""``slat_flow``: the 4D sparse flow with CompNet (``SLatFlow4DModel``) on normalised structured latents
(``(z - mean) / std`` with the dataset's ``latent_stats/<latent_set>.json``), T even. Per-clip t and CFG drop;
t is gathered per voxel; the MSE is over every voxel of the micro-batch (TRELLIS)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from trellis_ext.sparse import SparseTensor
from trellis_ext.training.flow import apply_cfg_drop, cfg_drop_mask, per_clip_t, sparse_flow_loss

from ..frames import fold_frames, fold_sparse_frames
from ..models.per_frame import is_per_frame
from .errors import TrainingInputError
from .ss_flow import _check_cond_channels
from .stage import Stage

__all__ = ["SLatFlowStage"]


class SLatFlowStage(Stage):
    name = "slat_flow"
    model_keys = ("denoiser",)
    needs_cond = True
    expected_classes = {"denoiser": ("SLatFlow4DModel", "SLatFlowPerFrame")}
    export = {"denoiser": ("slat_flow_model", "ckpts/slat_flow_video_4d")}
    folder_keys = {"denoiser": ("slat_flow_model", ("ckpts/slat_flow_img_dit_L_64l8p2_fp16",))}

    def __init__(self, cfg, reader, source="dataset"):
        super().__init__(cfg, reader, source)
        stats = reader.latent_stats(cfg.dataset["latent_set"])
        self.mean = np.asarray(stats["mean"], np.float32)
        self.std = np.asarray(stats["std"], np.float32)
        if (self.std <= 0).any():
            raise TrainingInputError(f"latent statistics of {cfg.dataset['latent_set']!r} have a zero std",
                                     "recompute them over more clips (ss4d-build-dataset --merge-only)")

    def requires(self):
        name = self.cfg.dataset.get("latent_set")
        if not name:
            raise TrainingInputError(f"{self.cfg.source}: dataset.latent_set is not set",
                                     "name the SLat latent set, <feature set>__<encoder> (docs/data.md)")
        return {"latents": name}

    def run_info(self):
        return {"slat_normalization": {"mean": self.mean.tolist(), "std": self.std.tolist()},
                "latent_set": self.cfg.dataset["latent_set"]}

    def load(self, window, rng) -> Dict[str, Any]:
        name = self.cfg.dataset["latent_set"]
        coords, feats = [], []
        for t in window.frames:
            c, f = self.reader.load_slat_latent(window.clip_id, name, t)
            coords.append(c)
            feats.append((f - self.mean) / self.std)
        return {"coords": coords, "feats": feats}

    def collate(self, samples: Sequence[Dict[str, Any]]):
        coords, feats = fold_sparse_frames([s["coords"] for s in samples], [s["feats"] for s in samples])
        return {"coords": coords, "feats": feats, "num_frames": len(samples[0]["coords"]),
                "cond_images": torch.stack([s["cond_images"] for s in samples]),
                "windows": [s["window"] for s in samples]}

    def check_models(self, models, sample):
        m = models["denoiser"]
        c = sample["feats"][0].shape[1]
        if m.in_channels != c:
            raise TrainingInputError(f"the SLat flow takes {m.in_channels}-channel latents but {self.cfg.dataset['latent_set']}"
                                     f" has {c}", "encode the latents with the matching SLat encoder")
        _check_cond_channels(m, self.cond_encoder)
        odd = [p.frames for p in self.cfg.phases if p.frames % 2]
        if odd and not is_per_frame(m):
            raise TrainingInputError(f"the phases use {odd[0]} frames, but the 4D SLat flow packs frames in pairs",
                                     "use an even number of frames (or a per-frame 3D model for 3D pretraining)")

    def objective(self, models, batch, gen: torch.Generator, train: bool = True):
        model = models["denoiser"]
        device = next(model.parameters()).device
        t = batch["num_frames"]
        b = batch["cond_images"].shape[0]
        x_0 = SparseTensor(batch["feats"].to(device), batch["coords"].to(device))
        t_rows = per_clip_t(b, t, gen, self.cfg.trainer["t_mean"], self.cfg.trainer["t_std"])
        noise = torch.randn(x_0.feats.shape, generator=gen).to(device)
        cond = self.encode_cond(fold_frames(batch["cond_images"]), device)
        if train:
            cond = apply_cfg_drop(cond, cfg_drop_mask(b, self.cfg.trainer["p_uncond"], gen), t)
        loss = sparse_flow_loss(model, x_0, noise, t_rows.to(device), cond, num_frames=t)
        return loss, {"voxels": float(x_0.feats.shape[0])}
