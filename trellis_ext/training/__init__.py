"""Generic training pieces (not 4D-specific): the flow objective's draws, EMA, the adaptive gradient
clipper, a step-keyed resumable sampler, atomic checkpoint folders, and render-loss glue.

Nothing in ``trellis_ext`` (models, pipelines) imports this package.
"""
from .checkpoint import COMPLETE_MARKER, CheckpointFolders, latest_complete, list_complete, step_of
from .ema import EMA
from .flow import (apply_cfg_drop, cfg_drop_mask, dense_flow_loss, flow_training_pair, keyed_generator,
                   keyed_seed, logit_normal_t, per_clip_t, sparse_flow_loss)
from .grad_clip import AdaptiveGradClipper
from .render_losses import TRELLIS_VAE_WEIGHTS, RenderLossWeights, gaussian_regularizers, image_losses, kl_divergence
from .sampler import ResumableSampler, StepBatchSampler

__all__ = ["COMPLETE_MARKER", "CheckpointFolders", "latest_complete", "list_complete", "step_of", "EMA", "apply_cfg_drop",
           "cfg_drop_mask", "dense_flow_loss", "sparse_flow_loss", "keyed_seed", "flow_training_pair", "keyed_generator", "logit_normal_t", "per_clip_t",
           "AdaptiveGradClipper", "ResumableSampler", "StepBatchSampler", "TRELLIS_VAE_WEIGHTS",
           "RenderLossWeights", "gaussian_regularizers", "image_losses", "kl_divergence"]
