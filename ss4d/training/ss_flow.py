"""``ss_flow``: the 4D structure flow (``SparseStructureFlow4DModel``), rectified flow on the frozen SS VAE's
per-frame latents [T, 8, 16, 16, 16] (raw, as TRELLIS), conditioned per frame on the condition encoder's
tokens of the conditioning frames. One t and one CFG-drop decision per clip. With ``dataset.mirror`` a window may be
of the clip's mirror image (:mod:`ss4d.training.mirror`): the set ``<ss_encoder>__mirror_x`` and flipped frames."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from trellis_ext.training.flow import apply_cfg_drop, cfg_drop_mask, dense_flow_loss, per_clip_t

from ..data.layout import mirrored_ss_set
from ..frames import fold_frames
from .errors import TrainingInputError
from .stage import Stage

__all__ = ["SSFlowStage"]


class SSFlowStage(Stage):
    name = "ss_flow"
    model_keys = ("denoiser",)
    needs_cond = True
    expected_classes = {"denoiser": ("SparseStructureFlow4DModel", "SparseStructureFlowPerFrame")}
    export = {"denoiser": ("sparse_structure_flow_model", "ckpts/ss_flow_video_4d")}
    folder_keys = {"denoiser": ("sparse_structure_flow_model", ("ckpts/ss_flow_img_dit_L_16l8_fp16",))}

    def requires(self):
        enc = self.cfg.dataset.get("ss_encoder")
        if not enc:
            raise TrainingInputError(f"{self.cfg.source}: dataset.ss_encoder is not set",
                                     "name the SS latent set (the SS encoder's checkpoint stem)")
        return {"ss_latents": (enc, mirrored_ss_set(enc)) if self.mirror.enabled else enc}

    def load(self, window, rng: np.random.Generator) -> Dict[str, Any]:
        enc = self.cfg.dataset["ss_encoder"]
        latent_set = mirrored_ss_set(enc) if window.mirrored else enc
        z = np.stack([self.reader.load_ss_latent(window.clip_id, latent_set, t) for t in window.frames])
        return {"x_0": torch.from_numpy(z)}

    def collate(self, samples: Sequence[Dict[str, Any]]):
        return {"x_0": torch.stack([s["x_0"] for s in samples]),                       # [B, T, C, r, r, r]
                "cond_images": torch.stack([s["cond_images"] for s in samples]),        # [B, T, 3, H, W]
                "windows": [s["window"] for s in samples]}

    def check_models(self, models, sample):
        m, z = models["denoiser"], sample["x_0"]
        if (m.in_channels, m.resolution) != (z.shape[1], z.shape[-1]):
            raise TrainingInputError(
                f"the structure flow takes {m.in_channels}×{m.resolution}³ latents but the dataset's SS latents are "
                f"{z.shape[1]}×{z.shape[-1]}³", "use an init/config matching the SS encoder of dataset.ss_encoder")
        _check_cond_channels(m, self.cond_encoder)

    def objective(self, models, batch, gen: torch.Generator, train: bool = True):
        model = models["denoiser"]
        device = next(model.parameters()).device
        b, t = batch["x_0"].shape[:2]
        x_0 = fold_frames(batch["x_0"]).to(device)
        t_rows = per_clip_t(b, t, gen, self.cfg.trainer["t_mean"], self.cfg.trainer["t_std"])
        noise = torch.randn(x_0.shape, generator=gen).to(device)
        cond = self.encode_cond(fold_frames(batch["cond_images"]), device)
        if train:
            cond = apply_cfg_drop(cond, cfg_drop_mask(b, self.cfg.trainer["p_uncond"], gen), t)
        loss = dense_flow_loss(model, x_0, noise, t_rows.to(device), cond, num_frames=t)
        return loss, {}


def _check_cond_channels(model, encoder) -> None:
    want, got = model.init_args.get("cond_channels"), getattr(encoder, "channels", None)
    if want is not None and got is not None and int(want) != int(got):
        raise TrainingInputError(f"the model expects {want}-channel condition tokens but the condition encoder gives "
                                 f"{got}", "set conditioning.encoder to the encoder the model was built for")
