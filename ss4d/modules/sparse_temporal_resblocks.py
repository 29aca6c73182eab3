"""Timestep-modulated sparse res-blocks of SS4D's CompNet (the SLat flow's temporal stage).

All blocks are trellis_ext's ``SparseResBlock3d`` (keys ``norm1``, ``conv1.conv``, ``conv2.conv``,
``emb_layers.1``, ``skip_connection``; path LN -> SiLU -> conv1 -> LN·(1+scale)+shift -> SiLU -> conv2,
plus the skip; an up/down step first, applied to both paths) with:

* :class:`SparseResBlock1d` -- convs :class:`ss4d.sparse.SparseConv1d` (kernel (3,1,1,1) over
  (t, x, y, z)); ``downsample`` = temporal pair merge (T -> T/2), ``upsample`` = copy-back.
* :class:`SparseResBlock4d` -- convs :class:`ss4d.sparse.SparseConv4d` (3^4); temporal-only up/down.
* :class:`SparseResBlock3dFrames` -- the spatial 3D block fed with ``num_frames`` (ignored by its convs).

Inputs: x folded SparseTensor feats [N, channels] with coords (b·T + t, x, y, z); emb [B·T, C_emb]
(one row per original frame); ``num_frames`` = T, the clip's frame count before the pair merge (the
input's for a downsampling or plain block, the output's for an upsampling one). A downsampling block
convolves its merged output with T/2 frames; an upsampling block restores T. When emb has more rows
than x has batch entries (after a merge), consecutive rows are averaged per entry (SS4D:
``emb.view(entries, -1, C).mean(1)``) *before* ``emb_layers``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ss4d.frames import FrameLayoutError
from ss4d.sparse import (SparseConv1d, SparseConv4d, SparseDownsampleTemporal, SparseUpsampleTemporal,
                         TEMPORAL_FACTOR)
from trellis_ext.models.structured_latent_flow import SparseResBlock3d
from trellis_ext.sparse import SparseTensor

__all__ = ["average_emb_groups", "SparseResBlock3dFrames", "SparseResBlockTemporal", "SparseResBlock1d",
           "SparseResBlock4d", "TEMPORAL_KERNEL"]

TEMPORAL_KERNEL = 3


def average_emb_groups(emb: torch.Tensor, entries: int) -> torch.Tensor:
    """emb [R, C] -> [entries, C]: the mean of each run of R / entries consecutive rows (identity if R == entries)."""
    if emb.shape[0] == entries:
        return emb
    if entries == 0 or emb.shape[0] % entries:
        raise ValueError(f"cannot average {emb.shape[0]} embedding rows into {entries} batch entries")
    return emb.view(entries, -1, emb.shape[-1]).mean(dim=1)


class SparseResBlock3dFrames(SparseResBlock3d):
    """trellis_ext's spatial res-block inside the 4D model (per-frame 3D convs; ``num_frames`` ignored,
    emb rows averaged per entry when there are more rows than entries)."""

    def _broadcast_emb(self, emb: torch.Tensor, x: SparseTensor) -> torch.Tensor:
        return average_emb_groups(emb, x.batch_size)


class SparseResBlockTemporal(SparseResBlock3dFrames):
    """Res-block with temporal convs (``CONV_CLS``) and temporal up/down sampling.

    Args: as ``SparseResBlock3d`` plus ``mean_mode`` of the pair merge (``"trellis"`` / ``"exact"``).
    forward(x, emb, num_frames=T) -> SparseTensor (T/2 packed frames after a downsample, T after an
    upsample, else x's layout).
    """

    CONV_CLS = SparseConv1d

    def __init__(self, channels: int, emb_channels: int, out_channels: int = None, downsample: bool = False,
                 upsample: bool = False, mean_mode: str = "trellis"):
        super().__init__(channels, emb_channels, out_channels=out_channels, downsample=downsample,
                         upsample=upsample)
        self.downsample, self.upsample = downsample, upsample
        if downsample:
            self.updown = SparseDownsampleTemporal(TEMPORAL_FACTOR, mean_mode=mean_mode)
        elif upsample:
            self.updown = SparseUpsampleTemporal(TEMPORAL_FACTOR)

    def _make_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return self.CONV_CLS(in_channels, out_channels, TEMPORAL_KERNEL)

    def _frames_after_updown(self, num_frames: int) -> int:
        return num_frames // TEMPORAL_FACTOR if self.downsample else num_frames

    def _updown(self, x: SparseTensor, num_frames: int = None, **kwargs) -> SparseTensor:
        return x if self.updown is None else self.updown(x, num_frames)

    def _conv(self, conv: nn.Module, x: SparseTensor, num_frames: int = None, **kwargs) -> SparseTensor:
        if num_frames is None:
            raise FrameLayoutError(f"{type(self).__name__} needs num_frames")
        return conv(x, self._frames_after_updown(num_frames))


class SparseResBlock1d(SparseResBlockTemporal):
    """CompNet's released temporal block: ``SparseConv1d`` convs (weights [out, 3, 1, 1, 1, in])."""

    CONV_CLS = SparseConv1d


class SparseResBlock4d(SparseResBlockTemporal):
    """The ``conv_type="3D_4D"`` temporal block: ``SparseConv4d`` convs (weights [out, 3, 3, 3, 3, in])."""

    CONV_CLS = SparseConv4d
