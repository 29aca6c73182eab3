"""ss4d: native 4D generation (SS4D) on a TRELLIS-compatible 3D core (``trellis_ext``).

``ss4d.Pipeline`` (video frames -> per-frame 3D Gaussians) is imported lazily, so ``import ss4d``
stays light (no torch import until it is used).
"""
__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineResult", "__version__"]


def __getattr__(name):
    if name in ("Pipeline", "PipelineResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ss4d' has no attribute {name!r}")
