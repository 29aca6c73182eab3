"""The DINOv2-with-registers loader: tiny-random, transformers folders and torch.hub checkpoints."""
from __future__ import annotations

import re

import pytest
import torch

from ss4d.conditioning.dinov2 import (TINY_RANDOM, _new_model, hub_config_from_state_dict, load_dinov2)

GRID = 37
PREFIX = 1 + 4  # CLS + registers


@pytest.fixture(scope="module")
def tiny():
    return load_dinov2("tiny-random")


def test_tiny_random_shapes_and_determinism(tiny):
    x = torch.rand(3, 3, 96, 80)  # any input size: resized to 518^2
    tok = tiny.encode(x)
    assert tok.shape == (3, PREFIX + GRID * GRID, tiny.channels)
    assert torch.equal(load_dinov2("tiny-random").encode(x), tok)  # seeded
    # conditioning tokens are layer-normed without affine: zero mean, unit variance per token
    patches = tok[:, PREFIX:]
    torch.testing.assert_close(patches.mean(-1), torch.zeros(patches.shape[:2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(patches.var(-1, unbiased=False), torch.ones(patches.shape[:2]), atol=1e-3, rtol=0)
    raw = tiny.encode(x, layer_norm=False)
    maps = tiny.patch_features(x)
    assert maps.shape == (3, tiny.channels, GRID, GRID)
    # patch map (row r, col c) is token 5 + r * 37 + c of the raw x_prenorm
    torch.testing.assert_close(maps[:, :, 2, 7], raw[:, PREFIX + 2 * GRID + 7])


def test_prenorm_is_before_the_final_layernorm(tiny):
    x = torch.rand(1, 3, 518, 518)
    raw = tiny.prenorm_tokens(x)
    out = tiny.model(pixel_values=tiny.preprocess(x)).last_hidden_state
    torch.testing.assert_close(tiny.model.layernorm(raw), out, atol=1e-5, rtol=1e-5)


def test_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        tiny.encode(torch.rand(3, 64, 64))
    with pytest.raises(FileNotFoundError, match="DINOv2 source not found"):
        load_dinov2("/nonexistent/dinov2")


def transformers_to_hub(sd: dict) -> dict:
    """Test-side inverse of the loader's renaming: transformers keys -> facebookresearch/dinov2 keys."""
    out = {}
    top = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
           "embeddings.register_tokens": "register_tokens", "embeddings.position_embeddings": "pos_embed",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    qkv: dict = {}
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        i, rest = m.group(1), m.group(2)
        q = re.match(r"attention\.(q|k|v)_proj\.(weight|bias)$", rest)
        if q:
            qkv.setdefault((i, q.group(2)), {})[q.group(1)] = v
            continue
        rest = (rest.replace("attention.o_proj", "attn.proj").replace("layer_scale1.lambda1", "ls1.gamma")
                .replace("layer_scale2.lambda1", "ls2.gamma"))
        out[f"blocks.{i}.{rest}"] = v
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def test_torch_hub_checkpoint_loads_to_the_same_model(tmp_path):
    # heads are not stored in a checkpoint; the loader assumes DINOv2's 64-dim heads
    ref = _new_model(dict(TINY_RANDOM, hidden_size=128, num_attention_heads=2), seed=3).eval()
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    for k in sd:  # make every tensor distinctive so a wrong mapping cannot pass
        sd[k] = sd[k] + 0.01 * torch.randn_like(sd[k])
    ref.load_state_dict(sd)
    if not any(".attention.q_proj." in k for k in sd):
        pytest.skip("this transformers version uses the older attention naming")
    hub = transformers_to_hub(sd)
    assert "blocks.0.attn.qkv.weight" in hub and "pos_embed" in hub
    cfg = hub_config_from_state_dict(hub)
    assert cfg["num_register_tokens"] == 4 and cfg["image_size"] == 518 and cfg["num_hidden_layers"] == 2
    torch.save(hub, tmp_path / "dinov2_vitl14_reg4_pretrain.pth")
    enc = load_dinov2(tmp_path / "dinov2_vitl14_reg4_pretrain.pth")
    enc_dir = load_dinov2(tmp_path)  # a folder holding exactly one checkpoint
    x = torch.rand(2, 3, 518, 518)
    want = ref(pixel_values=(x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
               / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(enc.encode(x, layer_norm=False), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc_dir.encode(x, layer_norm=False), want, atol=1e-5, rtol=1e-5)


def test_transformers_folder(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path / "hf")
    enc = load_dinov2(tmp_path / "hf")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(enc.encode(x), tiny.encode(x))
