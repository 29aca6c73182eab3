"""``ss_vae``: TRELLIS's sparse-structure VAE (``SparseStructureEncoder`` / ``SparseStructureDecoder``, applied
per frame) trained on the dataset's 64³ occupancy — only so that a small system can be trained from scratch
here (the paper keeps it frozen). Loss: ``bce·BCE(logits, occupancy) + dice·Dice + kl·KL`` (``loss.bce``,
``loss.dice``, ``loss.kl``; TRELLIS's SS VAE trainer offers BCE and Dice). Occupancy is ~1-2 % of the grid, so BCE
alone first learns "all empty"; the Dice term ``1 - (2Σpg + 1) / (Σp + Σg + 1)`` (p = sigmoid(logits)) does not."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trellis_ext.training.render_losses import kl_divergence

from ..data.voxelize import dense_grid
from ..frames import fold_frames
from .errors import TrainingInputError
from .stage import Stage

__all__ = ["SSVAEStage", "dice_loss"]


class SSVAEStage(Stage):
    name = "ss_vae"
    model_keys = ("encoder", "decoder")
    expected_classes = {"encoder": ("SparseStructureEncoder",), "decoder": ("SparseStructureDecoder",)}
    export = {"decoder": ("sparse_structure_decoder", "ckpts/ss_dec_conv3d"), "encoder": (None, "ckpts/ss_enc_conv3d")}
    folder_keys = {"decoder": ("sparse_structure_decoder", ("ckpts/ss_dec_conv3d_16l8_fp16",)),
                   "encoder": ("sparse_structure_encoder", ("ckpts/ss_enc_conv3d_16l8_fp16",))}

    def load(self, window, rng) -> Dict[str, Any]:
        grids = []
        for t in window.frames:
            idx, res = self.reader.load_voxels(window.clip_id, t)
            grids.append(dense_grid(idx, res))
        return {"occupancy": torch.from_numpy(np.stack(grids)[:, None]).float()}   # [T, 1, R, R, R]

    def collate(self, samples: Sequence[Dict[str, Any]]):
        return {"occupancy": torch.stack([s["occupancy"] for s in samples]), "windows": [s["window"] for s in samples]}

    def check_models(self, models, sample):
        if models["encoder"].input_layer.in_channels != 1:
            raise TrainingInputError("the SS encoder must take 1-channel occupancy", "set models.encoder.args.in_channels 1")

    def objective(self, models, batch, gen: torch.Generator, train: bool = True):
        enc, dec = models["encoder"], models["decoder"]
        device = next(enc.parameters()).device
        x = fold_frames(batch["occupancy"]).to(device)
        z, mean, logvar = enc(x, sample_posterior=train, return_raw=True)
        logits = dec(z)
        pos_weight = torch.tensor(float(self.cfg.loss.get("pos_weight", 1.0)), device=device)
        bce = F.binary_cross_entropy_with_logits(logits.float(), x, pos_weight=pos_weight)
        dice = dice_loss(logits.float(), x)
        kl = kl_divergence(mean.float(), logvar.float())
        w = self.cfg.loss
        loss = float(w["bce"]) * bce + float(w["dice"]) * dice + float(w["kl"]) * kl
        with torch.no_grad():
            pred, gt = logits > 0, x > 0.5
            iou = float((pred & gt).sum()) / max(1.0, float((pred | gt).sum()))
        return loss, {"bce": float(bce.detach()), "dice": float(dice.detach()), "kl": float(kl.detach()), "iou": iou}


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2Σ p·g + s) / (Σ p + Σ g + s) over the whole batch, p = sigmoid(logits)."""
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)
