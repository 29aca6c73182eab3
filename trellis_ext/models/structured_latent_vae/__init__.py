from .base import SparseTransformerBase, block_attn_config
from .decoder_gs import SLatGaussianDecoder
from .decoder_rf import SLatRadianceFieldDecoder, split_radiance_field
from .encoder import SLatEncoder
from .decoder_mesh import SLatMeshDecoder, split_mesh_features

__all__ = ["SparseTransformerBase", "block_attn_config", "SLatGaussianDecoder", "SLatRadianceFieldDecoder",
           "split_radiance_field", "SLatEncoder", "SLatMeshDecoder", "split_mesh_features"]
