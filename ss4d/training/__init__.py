"""SS4D training: Accelerate trainers for the four stages (``ss_flow``, ``slat_vae``, ``slat_flow``, ``ss_vae``),
a progressive frame schedule, masking augmentation of the conditioning frames, exact resume, and the export
to a pipeline folder. Entry points: ``ss4d-train`` (:mod:`.cli`), ``ss4d-export-pipeline`` (:mod:`.export`).
See ``docs/training.md``."""
from .config import Phase, TrainConfig, load_config
from .errors import TrainingInputError, TrainingStopped

__all__ = ["Phase", "TrainConfig", "load_config", "TrainingInputError", "TrainingStopped"]
