"""Mirror augmentation of the structure flows: a clip and its mirror image across the world plane x = 0.

A camera's image of the mirrored world, seen from the mirrored camera, is its image of the original world
flipped left-right: reflecting both the scene and the camera changes nothing but the handedness of the image
axes. So a conditioning video flipped left-right, paired with the SS latents of the clip's voxels mirrored
across x = 0 (:func:`ss4d.data.layout.mirror_voxels`; the set ``<encoder>__mirror_x`` that
``ss4d-build-dataset --ss-mirror`` writes), is a real training pair: the same motion of a left-right mirrored
object, filmed by the same kind of camera. The front conditioning camera lies in the plane x = 0, so its
mirrored camera is itself. Every object stays upright and facing the same way (z up, front at -y), so no
sample leaves the canonical frame the flows generate in. It doubles the distinct (image, structure) pairs a
small dataset offers.

Off by default (``prob`` 0; the paper does not describe one). Structure flows only (``ss_flow``): the SLat
flows' targets are latents of DINOv2 features, and the features of a flipped image are not the flipped features,
so there is no mirrored SLat without re-extracting features; ``TrainConfig`` refuses it for other stages.

``dataset.mirror``: ``{"prob": p}``; a window (all its frames) is mirrored with probability ``p``, drawn from the
sample's generator after its window, only when ``p`` > 0 (so the other draws stay as they were without it), and
only in training (evaluation batches are never mirrored).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

__all__ = ["MirrorConfig", "draw_mirror", "mirror_images"]


@dataclass(frozen=True)
class MirrorConfig:
    prob: float = 0.0

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "MirrorConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        try:
            prob = float(d.get("prob", 0.0))
        except (TypeError, ValueError):
            prob = -1.0
        if unknown or not 0.0 <= prob <= 1.0:
            from .errors import TrainingInputError

            raise TrainingInputError(f"bad dataset.mirror {d}", "use {\"prob\": p} with p in [0, 1]")
        return cls(prob=prob)

    @property
    def enabled(self) -> bool:
        return self.prob > 0.0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def draw_mirror(cfg: MirrorConfig, rng: np.random.Generator) -> bool:
    """Whether a window is mirrored; draws from ``rng`` only when the augmentation is on."""
    return cfg.enabled and bool(rng.random() < cfg.prob)


def mirror_images(images: Sequence[np.ndarray]) -> list:
    """Frames [H, W, C] flipped left-right (new contiguous arrays)."""
    return [np.ascontiguousarray(im[:, ::-1]) for im in images]
