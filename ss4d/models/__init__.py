"""The four SS4D stages, built on trellis_ext.

| stage | class | checkpoint (official folder) |
|---|---|---|
| 4D structure VAE | TRELLIS ``SparseStructureDecoder`` / ``Encoder`` applied per frame | ``ckpts/ss_dec_conv3d_16l8_fp16`` |
| 4D structure flow | ``SparseStructureFlow4DModel`` | ``ckpts/ss_flow_video_4d`` |
| 4D sparse VAE | ``SLatGaussianDecoder4D`` / ``SLatEncoder4D`` (saved as ``SLatGaussianDecoder`` / ``SLatEncoder`` with ``pe_mode="rope_t"``) | ``ckpts/slat_dec_gs_4d`` |
| 4D sparse flow + CompNet | ``SLatFlow4DModel`` (``ElasticSLatFlow4DModel`` alias) | ``ckpts/slat_flow_video_4d`` |

``per_frame.py``: TRELLIS's 3D classes under the 4D calling convention (3D pretraining, the per-frame baseline).

Importing this package registers the 4D classes with ``trellis_ext.models``' registry, so
``trellis_ext.models.from_pretrained`` (and ``ss4d.models.from_pretrained``) load SS4D checkpoints.
"""
from ss4d.modules.rope import ROPE_T_MODE
from trellis_ext.models import CheckpointError, from_pretrained, get_model_class, save_pretrained
from trellis_ext.models.registry import register_model, register_variant

# the loader re-exported for convenience; the 4D classes resolve lazily through ``__getattr__``
__all__ = ["from_pretrained", "save_pretrained", "CheckpointError", "inflate_from_trellis", "is_4d_config"]

FOUR_D_ARG_KEYS = ("expand_self_attn",)
TEMPORAL_PE_MODES = (ROPE_T_MODE,)


def is_4d_config(args) -> bool:
    """SS4D saves its 4D VAE under TRELLIS's class names; these args mark the 4D variant."""
    return any(args.get(k) for k in FOUR_D_ARG_KEYS) or args.get("pe_mode") in TEMPORAL_PE_MODES


register_model("SparseStructureFlow4DModel", lazy=("ss4d.models.ss_flow_4d", "SparseStructureFlow4DModel"))
register_model("SLatFlow4DModel", lazy=("ss4d.models.slat_flow_4d", "SLatFlow4DModel"))
register_model("SLatGaussianDecoder4D", lazy=("ss4d.models.slat_vae_4d", "SLatGaussianDecoder4D"))
register_model("SLatEncoder4D", lazy=("ss4d.models.slat_vae_4d", "SLatEncoder4D"))
for _name in ("SparseStructureFlowPerFrame", "SLatFlowPerFrame", "SLatGaussianDecoderPerFrame", "SLatEncoderPerFrame"):
    register_model(_name, lazy=("ss4d.models.per_frame", _name))  # TRELLIS 3D models per frame (per_frame.py)
register_variant("SLatGaussianDecoder", is_4d_config, ("ss4d.models.slat_vae_4d", "SLatGaussianDecoder4D"))
register_variant("SLatEncoder", is_4d_config, ("ss4d.models.slat_vae_4d", "SLatEncoder4D"))


def inflate_from_trellis(source, config=None, device=None):
    """Build all four SS4D stages from a TRELLIS-image-large folder or models (see ``inflation``)."""
    from .inflation import inflate_from_trellis as _inflate

    return _inflate(source, config, device)


def __getattr__(name):
    try:
        return get_model_class(name)
    except KeyError:
        raise AttributeError(name) from None
