"""``slat_vae``: the 4D sparse VAE, encoder (``SLatEncoder4D``) and Gaussian decoder (``SLatGaussianDecoder4D``)
trained jointly with TRELLIS's rendering loss, per frame against one random ground-truth view of that frame:

``L1 + 0.2·(1 - SSIM) + 0.2·LPIPS + 1e-6·KL + 1e4·mean(∏ scale) + 1e-3·mean((α - 1)²)`` (``loss`` weights)

rendered through :func:`trellis_ext.renderers.render_gaussians` (gsplat on CUDA, the PyTorch reference on
CPU) on a random black or white background, the ground truth composited on the same background. SSIM and
LPIPS come from :mod:`ss4d.evaluation` (SSIM with TRELLIS's zero padding); LPIPS needs local VGG16 weights
(``loss.lpips_weights``, or the evaluation's weight lookup).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Sequence

import numpy as np
import torch

from trellis_ext.renderers import render_gaussians
from trellis_ext.sparse import SparseTensor
from trellis_ext.training.render_losses import (RenderLossWeights, gaussian_regularizers, image_losses,
                                                kl_divergence)

from ..frames import fold_sparse_frames
from .errors import TrainingInputError
from .stage import Stage

__all__ = ["SLatVAEStage", "psnr_from_mse"]

BACKGROUNDS = ("random", "black", "white")


def psnr_from_mse(mse: float) -> float:
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


class SLatVAEStage(Stage):
    name = "slat_vae"
    model_keys = ("encoder", "decoder")
    expected_classes = {"encoder": ("SLatEncoder4D", "SLatEncoderPerFrame"),
                        "decoder": ("SLatGaussianDecoder4D", "SLatGaussianDecoderPerFrame")}
    export = {"decoder": ("slat_decoder_gs", "ckpts/slat_dec_gs_4d"), "encoder": (None, "ckpts/slat_enc_4d")}
    folder_keys = {"decoder": ("slat_decoder_gs", ("ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16",)),
                   "encoder": ("slat_encoder", ("ckpts/slat_enc_swin8_B_64l8_fp16",))}

    def __init__(self, cfg, reader, source="dataset"):
        super().__init__(cfg, reader, source)
        loss = cfg.loss
        self.weights = RenderLossWeights(**{k: float(loss[k]) for k in RenderLossWeights.__dataclass_fields__})
        if loss["background"] not in BACKGROUNDS:
            raise TrainingInputError(f"loss.background {loss['background']!r}", f"use one of {', '.join(BACKGROUNDS)}")
        self.ssim, self.lpips = _image_metrics(self.weights, loss.get("lpips_weights"))

    def setup(self, device):
        super().setup(device)
        if self.lpips is not None:
            self.lpips.to(device)

    def requires(self):
        name = self.cfg.dataset.get("feature_set")
        if not name:
            raise TrainingInputError(f"{self.cfg.source}: dataset.feature_set is not set",
                                     "name the feature set, e.g. dinov2_vitl14_reg_visible (docs/data.md)")
        return {"features": name}

    def load(self, window, rng: np.random.Generator) -> Dict[str, Any]:
        name, res = self.cfg.dataset["feature_set"], int(self.cfg.loss["render_resolution"])
        coords, feats, views, cams = [], [], [], []
        for t in window.frames:
            c, f = self.reader.load_features(window.clip_id, name, t)
            coords.append(c)
            feats.append(f)
            rgba, cameras = self.reader.load_views(window.clip_id, t)
            v = int(rng.integers(len(rgba)))
            img, cam = rgba[v], cameras[v]
            if res and res != img.shape[0]:
                from PIL import Image

                img = np.asarray(Image.fromarray(img, "RGBA").resize((res, res), Image.Resampling.BOX))
                cam = cam.resized(res, res)
            views.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0)
            cams.append(cam.to_camera())
        return {"coords": coords, "feats": feats, "views": torch.stack(views), "cameras": cams}

    def collate(self, samples: Sequence[Dict[str, Any]]):
        coords, feats = fold_sparse_frames([s["coords"] for s in samples], [s["feats"] for s in samples])
        return {"coords": coords, "feats": feats, "num_frames": len(samples[0]["coords"]),
                "views": torch.cat([s["views"] for s in samples]),            # [B·T, 4, H, W]
                "cameras": [c for s in samples for c in s["cameras"]],        # B·T renderer cameras
                "windows": [s["window"] for s in samples]}

    def check_models(self, models, sample):
        c = sample["feats"][0].shape[1]
        if models["encoder"].in_channels != c:
            raise TrainingInputError(f"the SLat encoder takes {models['encoder'].in_channels}-channel features but "
                                     f"{self.cfg.dataset['feature_set']} has {c}", "match the config to the feature set")

    def backgrounds(self, n: int, gen: torch.Generator) -> torch.Tensor:
        mode = self.cfg.loss["background"]
        if mode == "random":
            return (torch.rand(n, generator=gen) < 0.5).float()[:, None].expand(n, 3).contiguous()
        return torch.full((n, 3), 1.0 if mode == "white" else 0.0)

    def objective(self, models, batch, gen: torch.Generator, train: bool = True):
        enc, dec = models["encoder"], models["decoder"]
        device = next(enc.parameters()).device
        t = batch["num_frames"]
        x = SparseTensor(batch["feats"].to(device), batch["coords"].to(device))
        z, mean, logvar = enc(x, num_frames=t, sample_posterior=train, return_raw=True)
        gaussians = dec(z, num_frames=t)
        views = batch["views"].to(device)
        bg = self.backgrounds(len(gaussians), gen).to(device)
        preds, regs = [], {"volume": 0.0, "opacity": 0.0}
        for i, g in enumerate(gaussians):
            out = render_gaussians(g, batch["cameras"][i].to(device), bg_color=bg[i])
            preds.append(out.rgb)
            for k, v in gaussian_regularizers(g).items():
                regs[k] = regs[k] + v / len(gaussians)
        pred = torch.stack(preds)
        alpha = views[:, 3:4]
        gt = views[:, :3] * alpha + bg[:, :, None, None] * (1 - alpha)
        terms = image_losses(pred, gt, self.weights, self.ssim, self.lpips)
        terms["kl"] = kl_divergence(mean.float(), logvar.float())
        terms.update(regs)
        w = self.weights.as_dict()
        loss = sum(w[k] * v for k, v in terms.items())
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs["psnr"] = psnr_from_mse(float(((pred.detach().clamp(0, 1) - gt) ** 2).mean()))
        if not train:  # the evaluation's renders for the snapshot: renders over the ground truth
            self.last_renders = [pred.detach().clamp(0, 1).cpu(), gt.detach().cpu()]
        return loss, logs


def _image_metrics(weights: RenderLossWeights, lpips_weights):
    """(ssim, lpips) from ``ss4d.evaluation`` where their weight is non-zero: SSIM with TRELLIS's zero padding
    (its training loss), LPIPS-VGG from local weights (:class:`~ss4d.errors.MissingWeightsError` -> one line)."""
    from ..errors import MissingWeightsError
    from ..evaluation.metrics import ssim as ssim_metric

    ssim = functools.partial(ssim_metric, padding="zero") if weights.ssim else None
    lpips = None
    if weights.lpips:
        from ..evaluation.lpips import load_lpips

        try:
            lpips = load_lpips(net="vgg", backbone_weights=lpips_weights)
        except MissingWeightsError as e:
            raise TrainingInputError(f"LPIPS was asked for (loss.lpips = {weights.lpips}) but its weights are missing: "
                                     f"{e.problem}", "give loss.lpips_weights a local VGG16 file or set loss.lpips "
                                     "to 0") from None
    return ssim, lpips
