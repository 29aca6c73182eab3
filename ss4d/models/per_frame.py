"""TRELLIS's 3D models applied frame by frame, behind the 4D models' calling convention.

Each class here is the TRELLIS class itself (same constructor args, same state-dict keys and shapes,
same computation) whose ``forward`` also takes the 4D models' ``num_frames`` and ignores it: a folded
batch ``[(B·T), ...]`` (dense) or coords ``(b·T + t, x, y, z)`` (sparse) is just B·T independent 3D
samples to a TRELLIS model, so frame t of clip b never sees another frame. They serve two jobs:

* **3D pretraining** (the first phase of SS4D's recipe, ``docs/training.md``): ``ss4d-train`` trains
  them on single frames (``"frames": 1`` phases) with the 4D stages' data and losses; ``--init
  inflate:<run>`` then builds the 4D model from the result (``ss4d.models.inflation``).
* **the "no temporal layers" baseline**: an SS4D model folder whose stages are these classes runs the
  3D model on each frame through the unchanged 4D pipeline (``ss4d-eval`` compares it with the 4D model).

Every class maps back to its TRELLIS parent (:func:`trellis_class_name`) and is inflated like it.
"""
from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from trellis_ext.models.sparse_structure_flow import SparseStructureFlowModel
from trellis_ext.models.structured_latent_flow import SLatFlowModel
from trellis_ext.models.structured_latent_vae.decoder_gs import SLatGaussianDecoder
from trellis_ext.models.structured_latent_vae.encoder import SLatEncoder

__all__ = ["SparseStructureFlowPerFrame", "SLatFlowPerFrame", "SLatGaussianDecoderPerFrame", "SLatEncoderPerFrame",
           "PER_FRAME_CLASSES", "is_per_frame", "trellis_class_name"]


class SparseStructureFlowPerFrame(SparseStructureFlowModel):
    """TRELLIS's structure flow per frame: x [(B·T), C, r, r, r], t [(B·T)], cond [(B·T), L, C_cond]."""

    def forward(self, x, t, cond, num_frames: Optional[int] = None, **block_kwargs):
        return super().forward(x, t, cond, **block_kwargs)


class SLatFlowPerFrame(SLatFlowModel):
    """TRELLIS's SLat flow per frame: x feats [N, C] on coords (b·T + t, x, y, z); any T (no pair merge)."""

    def forward(self, x, t, cond, num_frames: Optional[int] = None):
        return super().forward(x, t, cond)


class SLatGaussianDecoderPerFrame(SLatGaussianDecoder):
    """TRELLIS's Gaussian decoder per frame: one ``Gaussian`` per (b·T + t) entry."""

    def forward(self, x, num_frames: Optional[int] = None, **block_kwargs):
        return super().forward(x, **block_kwargs)


class SLatEncoderPerFrame(SLatEncoder):
    """TRELLIS's SLat encoder per frame (features on coords (b·T + t, x, y, z) -> latents on the same coords)."""

    def forward(self, x, num_frames: Optional[int] = None, sample_posterior: bool = True, return_raw: bool = False,
                **block_kwargs):
        return super().forward(x, sample_posterior=sample_posterior, return_raw=return_raw, **block_kwargs)


#: per-frame class name -> its TRELLIS parent's name
PER_FRAME_CLASSES: Dict[str, str] = {
    cls.__name__: cls.__mro__[1].__name__
    for cls in (SparseStructureFlowPerFrame, SLatFlowPerFrame, SLatGaussianDecoderPerFrame, SLatEncoderPerFrame)}


def is_per_frame(model: nn.Module) -> bool:
    """True for the models of this module (3D computation, no temporal layers)."""
    return type(model).__name__ in PER_FRAME_CLASSES


def trellis_class_name(model: nn.Module) -> str:
    """The TRELLIS class a per-frame model computes (its own name for any other model)."""
    name = type(model).__name__
    return PER_FRAME_CLASSES.get(name, name)
