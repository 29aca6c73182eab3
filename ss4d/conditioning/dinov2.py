"""DINOv2 ViT-L/14 with registers (``dinov2_vitl14_reg``) as the image/condition encoder.

One loader for the data toolkit (per-voxel features) and the 4D pipeline (frame conditioning),
built on transformers' ``Dinov2WithRegistersModel``. Sources accepted by :func:`load_dinov2`:

* ``"tiny-random"`` - a tiny randomly initialised model of the same class (seeded, for tests);
  ``"random-vitl14-reg"`` - the full-size architecture, randomly initialised;
  ``"small-sincos"`` - a small random model of the same class whose position embeddings are a fixed 2D
  sin-cos table (:data:`SMALL_SINCOS`): the condition encoder of the small model trained here
  (``checkpoints/ss4d-small``; its model card measures what it gains over ``tiny-random``). A random
  DINOv2's learned-position slot holds tiny random vectors (norm ~0.1 against ~5 for a patch's content), so
  its tokens hardly say *where* a patch is and a flow conditioned on them cannot place an object's parts;
  the sin-cos table (norm ~6 at width 64) makes the patch grid readable.
* a transformers folder (``config.json`` + weights), e.g. ``facebook/dinov2-with-registers-large``
  saved locally;
* a torch.hub checkpoint in the facebookresearch/dinov2 layout (``dinov2_vitl14_reg4_pretrain.pth``,
  or a folder holding exactly one ``.pth``/``.pt``/``.safetensors`` file); its keys are renamed to
  the transformers layout and the architecture is inferred from the tensor shapes.

Token layout (both libraries): ``[CLS, 4 registers, 37 x 37 patches]`` = 1374 tokens at 518^2.
TRELLIS uses the hub model's ``x_prenorm`` (the output of the last block, *before* the final
LayerNorm): the pipeline conditions on ``layer_norm(x_prenorm)`` without affine parameters
(:meth:`DINOv2Encoder.encode`), and the SLat features are the raw ``x_prenorm`` patch tokens
(:meth:`DINOv2Encoder.patch_features`). transformers' ``last_hidden_state`` is *after* the final
LayerNorm, so ``x_prenorm`` is taken from ``hidden_states[-1]``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 518
PATCH_SIZE = 14
NUM_REGISTERS = 4
LAYER_NORM_EPS = 1e-6
VITL14_REG = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                  patch_size=PATCH_SIZE, image_size=INPUT_SIZE, num_register_tokens=NUM_REGISTERS,
                  layerscale_value=1e-5, layer_norm_eps=LAYER_NORM_EPS)
TINY_RANDOM = dict(VITL14_REG, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)
#: ``"small-sincos"``: width 64 (more of each 14x14 patch survives the random projection than at 32), one
#: head per layer; the blocks start near identity (DINOv2's layer scale), so a token is the patch's random
#: projection plus its grid position, layer-normalised by :meth:`DINOv2Encoder.encode`.
SMALL_SINCOS = dict(VITL14_REG, hidden_size=64, num_hidden_layers=2, num_attention_heads=1, mlp_ratio=2)
#: Frequency base of its position table: over a 37-patch grid the usual 10000 leaves half the frequencies
#: almost constant; with 100 the periods run from ~6 patches to a few grid widths.
SMALL_SINCOS_BASE = 100.0
HEAD_DIM = 64  # ViT-S/B/L/g all use 64-dim heads; used to infer num_heads from a hub checkpoint
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
TINY_RANDOM_NAME = "tiny-random"
FULL_RANDOM_NAME = "random-vitl14-reg"
SMALL_SINCOS_NAME = "small-sincos"
#: The encoder's name in official ``pipeline.json`` files (``image_cond_model``) and torch.hub.
DINOV2_NAME = "dinov2_vitl14_reg"


#: Parameters the conditioning tokens never use: the mask token (masked-image pretraining only) and the final
#: LayerNorm (the tokens are ``x_prenorm``, taken before it). An encoder trained with a flow keeps them frozen
#: (DDP refuses trainable parameters that get no gradient).
UNUSED_BY_TOKENS = ("embeddings.mask_token", "layernorm.")


class DINOv2Encoder(nn.Module):
    """Wraps a ``Dinov2WithRegistersModel``; inputs are RGB images in [0, 1].

    Attributes:
        name: identifier used in output folder names (e.g. ``dinov2_vitl14_reg``).
        channels: token width C. grid_size: patches per side at 518^2 (37).
        num_prefix_tokens: CLS + registers (5).
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model = model.eval()
        self.name = name
        cfg = model.config
        self.channels = int(cfg.hidden_size)
        self.patch_size = int(cfg.patch_size)
        self.image_size = INPUT_SIZE
        self.grid_size = INPUT_SIZE // self.patch_size
        self.num_prefix_tokens = 1 + int(cfg.num_register_tokens)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[T, 3, H, W] in [0, 1] -> resized to 518^2 (bicubic) and ImageNet-normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [T, 3, H, W], got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            shrink = max(x.shape[-2:]) > self.image_size  # antialiasing only matters when downsampling
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=shrink).clamp(0.0, 1.0)
        return ((x - self.mean) / self.std).to(self.dtype)

    def forward(self, images: torch.Tensor, layer_norm: bool = True) -> torch.Tensor:
        """:meth:`encode` with autograd: the tokens of an encoder trained with a flow (``ss4d-train``'s
        ``conditioning.train_encoder``)."""
        x = self.model(pixel_values=self.preprocess(images), output_hidden_states=True).hidden_states[-1].float()
        return F.layer_norm(x, x.shape[-1:]) if layer_norm else x

    @torch.no_grad()
    def prenorm_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``x_prenorm``: [T, 1 + R + g*g, C] (float32)."""
        return self.forward(images, layer_norm=False)

    def train_for_conditioning(self) -> "DINOv2Encoder":
        """Train mode with every parameter the tokens use trainable (:data:`UNUSED_BY_TOKENS` stay frozen)."""
        for name, p in self.model.named_parameters():
            p.requires_grad_(not name.startswith(UNUSED_BY_TOKENS))
        return self.train()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, layer_norm: bool = True) -> torch.Tensor:
        """Conditioning tokens [T, 1 + R + 37*37, C] as the TRELLIS/SS4D pipelines use them:
        ``layer_norm(x_prenorm)`` without affine parameters (``layer_norm=False``: raw)."""
        return self.forward(images, layer_norm)

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``x_prenorm`` patch tokens as a feature map [T, C, 37, 37] (row-major patches)."""
        x = self.prenorm_tokens(images)[:, self.num_prefix_tokens:]
        t, n, c = x.shape
        g = self.grid_size
        if n != g * g:
            raise RuntimeError(f"expected {g * g} patch tokens, got {n}")
        return x.transpose(1, 2).reshape(t, c, g, g)


def _new_model(config_kwargs: dict, seed: int | None = None) -> nn.Module:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    if seed is not None:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**config_kwargs))
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)


def _with_sincos_positions(model: nn.Module) -> nn.Module:
    """Overwrite the patch positions of ``model.embeddings.position_embeddings`` [1, 1 + g², C] with the fixed
    2D sin-cos table of the g x g grid (the CLS slot gets zeros). Saved with the weights, so the folder loads
    as any DINOv2 checkpoint."""
    from trellis_ext.modules.embeddings import sincos_grid_2d

    pos = model.embeddings.position_embeddings
    side = model.config.image_size // model.config.patch_size
    table = sincos_grid_2d(side, pos.shape[-1], SMALL_SINCOS_BASE)
    with torch.no_grad():
        pos.zero_()
        pos[0, 1:] = table.to(pos.dtype)
    return model


def dinov2_name(source: str | Path) -> str:
    """The name :func:`load_dinov2` gives the encoder of ``source``, without loading any weights."""
    src = str(source)
    if src == TINY_RANDOM_NAME:
        return "dinov2_tiny_random"
    if src == FULL_RANDOM_NAME:
        return f"{DINOV2_NAME}_random"
    if src == SMALL_SINCOS_NAME:
        return "dinov2_small_sincos_random"
    return DINOV2_NAME


def load_dinov2(source: str | Path = TINY_RANDOM_NAME, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, seed: int = 0) -> DINOv2Encoder:
    """Load the DINOv2-reg encoder from ``source`` (see module docstring). Never downloads."""
    src, name = str(source), dinov2_name(source)
    if src == TINY_RANDOM_NAME:
        enc = DINOv2Encoder(_new_model(TINY_RANDOM, seed), name)
    elif src == FULL_RANDOM_NAME:
        enc = DINOv2Encoder(_new_model(VITL14_REG, seed), name)
    elif src == SMALL_SINCOS_NAME:
        enc = DINOv2Encoder(_with_sincos_positions(_new_model(SMALL_SINCOS, seed)), name)
    else:
        path = Path(src)
        if path.is_dir() and (path / "config.json").is_file():
            from transformers import Dinov2WithRegistersModel

            model = Dinov2WithRegistersModel.from_pretrained(str(path), local_files_only=True)
            enc = DINOv2Encoder(model, name)
        else:
            ckpt = _find_checkpoint(path)
            enc = DINOv2Encoder(_model_from_hub_state_dict(_read_state_dict(ckpt)), name)
    return enc.to(device=device, dtype=dtype).eval()


def _find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        if len(files) == 1:
            return files[0]
        raise FileNotFoundError(f"{path}: expected config.json (transformers) or exactly one checkpoint file "
                                f"{CHECKPOINT_SUFFIXES}, found {len(files)}")
    raise FileNotFoundError(f"DINOv2 source not found: {path} (use a local folder/file or '{TINY_RANDOM_NAME}')")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):  # common wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


_HUB_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")


def hub_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer the architecture of a facebookresearch/dinov2 checkpoint from tensor shapes."""
    if "cls_token" not in sd or "pos_embed" not in sd:
        raise ValueError("not a DINOv2 hub checkpoint (no cls_token / pos_embed)")
    dim = sd["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := _HUB_BLOCK.match(k)))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    n_pos = sd["pos_embed"].shape[1] - 1
    side = int(round(n_pos ** 0.5))
    fc1 = next(v for k, v in sd.items() if k.endswith("mlp.fc1.weight"))
    if any(k.endswith("mlp.w12.weight") for k in sd):
        raise ValueError("SwiGLU DINOv2 checkpoints (ViT-g) are not supported")
    return dict(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=dim // HEAD_DIM,
                mlp_ratio=fc1.shape[0] // dim, patch_size=patch, image_size=side * patch,
                num_register_tokens=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
                layerscale_value=1e-5, layer_norm_eps=LAYER_NORM_EPS)


def hub_to_transformers_state_dict(sd: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename a facebookresearch/dinov2 state dict to a transformers ``Dinov2WithRegistersModel``.

    ``target_keys`` (the model's own state-dict keys) select between transformers' attention
    naming schemes (``attention.q_proj`` in 5.x vs ``attention.attention.query`` in 4.x).
    """
    new_style = any(".attention.q_proj." in k for k in target_keys)
    names = ({"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj"}
             if new_style else {"q": "attention.attention.query", "k": "attention.attention.key",
                                "v": "attention.attention.value", "o": "attention.output.dense"})
    top = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
           "register_tokens": "embeddings.register_tokens", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    block = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "attn.proj": names["o"]}
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        if key in top:
            out[top[key]] = val.reshape(1, -1) if key == "mask_token" else val
            continue
        m = _HUB_BLOCK.match(key)
        if not m:
            continue  # e.g. head.*
        i, rest = m.group(1), m.group(2)
        pre = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip("qkv", val.chunk(3, dim=0)):
                out[pre + names[name] + "." + kind] = part.clone()
        elif rest in ("ls1.gamma", "ls2.gamma"):
            out[pre + ("layer_scale1" if rest[2] == "1" else "layer_scale2") + ".lambda1"] = val
        else:
            mod, kind = rest.rsplit(".", 1)
            if mod in block:
                out[pre + block[mod] + "." + kind] = val
    return out


def _model_from_hub_state_dict(sd: dict[str, torch.Tensor]) -> nn.Module:
    cfg = hub_config_from_state_dict(sd)
    model = _new_model(cfg)
    target = model.state_dict()
    converted = hub_to_transformers_state_dict(sd, set(target))
    missing = sorted(set(target) - set(converted))
    if missing:
        raise ValueError(f"DINOv2 hub checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.load_state_dict(converted, strict=True)
    return model
