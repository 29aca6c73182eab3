"""The stage registry: ``stage`` name in the config -> :class:`~ss4d.training.stage.Stage` class."""
from __future__ import annotations

from .slat_flow import SLatFlowStage
from .slat_vae import SLatVAEStage
from .ss_flow import SSFlowStage
from .ss_vae import SSVAEStage

__all__ = ["STAGES"]

STAGES = {cls.name: cls for cls in (SSFlowStage, SLatVAEStage, SLatFlowStage, SSVAEStage)}
