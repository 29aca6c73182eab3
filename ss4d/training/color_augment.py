"""Colour augmentation of the conditioning frames: one random colour change per clip, the same on every frame
(the motion stays consistent), so a generator conditions on shape and shading more than on the exact colours of
its training objects. Off by default (``prob`` 0: the paper does not describe one); the small model's configs use
it because its random condition encoder would otherwise mostly see colour.

Only for stages whose target has no colour (the structure flows: occupancy). A SLat flow's target carries the
object's colours, which a change of the conditioning frames alone leaves as they are; trained with it, the flow
learns to ignore the input's colours, so ``TrainConfig`` refuses it there.

Applied to the *preprocessed* conditioning frames (518² premultiplied RGB on black), before the masks: every
change keeps black pixels black, so the background and the masks' holes stay black.

With probability ``prob`` a clip gets, in this order:

* a channel permutation (uniform over the 6, with probability ``permute_prob``);
* a saturation factor s ~ U(``saturation``): ``grey + s · (rgb - grey)`` with ``grey`` the pixel's mean
  (s = 0: grey);
* a brightness factor b ~ U(``brightness``): ``b · rgb`` (b < 1 darkens, as a dark object on the black
  background; values clipped to [0, 255]).

Every draw comes from the generator the caller passes (keyed by (seed, step, rank, sample)).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import permutations
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["ColorConfig", "draw_color", "apply_color"]

PERMUTATIONS = tuple(permutations(range(3)))


@dataclass(frozen=True)
class ColorConfig:
    prob: float = 0.0
    permute_prob: float = 0.5
    saturation: Tuple[float, float] = (0.0, 1.0)
    brightness: Tuple[float, float] = (0.25, 1.0)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "ColorConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        bad = [k for k in ("saturation", "brightness") if k in d and (len(d[k]) != 2 or not 0 <= d[k][0] <= d[k][1])]
        if unknown or bad or not 0 <= float(d.get("prob", 0)) <= 1:
            from .errors import TrainingInputError

            raise TrainingInputError(f"bad conditioning.color {d}",
                                     f"keys {', '.join(cls.__dataclass_fields__)}; prob in [0, 1]; "
                                     "saturation / brightness as [low, high] with 0 <= low <= high")
        d.update({k: tuple(map(float, d[k])) for k in ("saturation", "brightness") if k in d})
        return cls(**d)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def draw_color(cfg: ColorConfig, rng: np.random.Generator) -> Optional[Dict[str, Any]]:
    """One clip's colour change (None: unchanged)."""
    if cfg.prob <= 0 or rng.random() >= cfg.prob:
        return None
    permute = rng.random() < cfg.permute_prob
    order = PERMUTATIONS[int(rng.integers(len(PERMUTATIONS)))] if permute else (0, 1, 2)
    return {"order": order, "saturation": float(rng.uniform(*cfg.saturation)),
            "brightness": float(rng.uniform(*cfg.brightness))}


def apply_color(images: np.ndarray, change: Optional[Dict[str, Any]]) -> np.ndarray:
    """``images`` [T, H, W, 3] uint8 with ``change`` applied to every frame; a new array."""
    if change is None:
        return images.copy()
    x = images[..., list(change["order"])].astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + change["saturation"] * (x - grey)
    x = x * change["brightness"]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
